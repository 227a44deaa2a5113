#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_node_software_info
short_description: Find the NVIDIA software a GPU node runs outside Kubernetes
version_added: 0.1.0
author: gpuops maintainers (@gpuops)
description:
  - Reports a MIG manager systemd service (mig-parted's C(nvidia-mig-manager.service), as NVIDIA DeepOps installs it,
    or C(nvidia-mig-parted.service), C(mig-parted.service)) with whether it is enabled and active and the named config
    and config file it applies at boot (C(MIG_PARTED_SELECTED_CONFIG) and C(MIG_PARTED_CONFIG_FILE) of the unit and its
    drop-ins, or its C(-c) and C(-f) options).
  - Reports a driver installed with NVIDIA's runfile installer (C(/usr/bin/nvidia-uninstall),
    C(/var/log/nvidia-installer.log)).
  - Reports the runtimes, the default runtime and the registry mirrors of the containerd configuration, and which
    runtimes run NVIDIA's container runtime.
  - Reads files only; a file it cannot read or parse counts as absent and is named in the warnings.
options:
  root:
    description:
      - The directory the node's files are read under (V(/) on a node; another directory for an image or a chroot).
    type: path
    default: /
  containerd_config:
    description:
      - Path of containerd's configuration, under O(root).
    type: path
    default: /etc/containerd/config.toml
extends_documentation_fragment:
  - gpuops.nvidia.attributes.INFO_MODULE
seealso:
  - module: gpuops.nvidia.k8s_gpu_software_info
"""

EXAMPLES = r"""
---
- name: Find the NVIDIA software on the node
  gpuops.nvidia.gpu_node_software_info:
  register: node_software

- name: Show the mig-parted services
  ansible.builtin.debug:
    msg: "{{ node_software.mig_manager_services }}"
"""

RETURN = r"""
mig_manager_services:
  description: The MIG manager services installed on the node.
  returned: success
  type: list
  elements: dict
  sample:
    - name: nvidia-mig-manager.service
      path: /etc/systemd/system/nvidia-mig-manager.service
      enabled: true
      active: active
      selected_config: all-1g.5gb
      config_file: /etc/nvidia-mig-manager/config.yaml
driver_runfile:
  description: The files of NVIDIA's runfile installer found (empty when the driver did not come from the runfile).
  returned: success
  type: list
  elements: str
  sample: [/usr/bin/nvidia-uninstall]
containerd:
  description:
    - C(path), C(present); where present, C(runtimes) (name to C(BinaryName)), C(default_runtime),
      C(nvidia_runtimes), C(registry_mirrors) and C(registry_config_path).
  returned: success
  type: dict
  sample:
    path: /etc/containerd/config.toml
    present: true
    runtimes: {runc: "", kata: "", nvidia: /usr/bin/nvidia-container-runtime}
    default_runtime: runc
    nvidia_runtimes: [nvidia]
    registry_mirrors: [docker.io]
    registry_config_path: ""
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpuops.nvidia.plugins.module_utils.node_software import parse_systemctl_show, read_node


def main() -> None:
    module = AnsibleModule(
        argument_spec={"root": {"type": "path", "default": "/"},
                       "containerd_config": {"type": "path", "default": "/etc/containerd/config.toml"}},
        supports_check_mode=True,
    )
    systemctl = module.get_bin_path("systemctl")

    def systemctl_show(unit):
        if not systemctl:
            return None
        rc, out, _err = module.run_command([systemctl, "show", "--property=ActiveState,UnitFileState", unit])
        return parse_systemctl_show(out) if rc == 0 else None

    found = read_node(module.params["root"], module.params["containerd_config"], systemctl_show)
    for warning in found.pop("warnings"):
        module.warn(warning)
    module.exit_json(changed=False, **found)


if __name__ == "__main__":
    main()
