#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_pod_devices
short_description: Which GPU and MIG devices each pod of a node holds, from the kubelet's PodResources API
version_added: 0.1.0
author: gpuops maintainers (@gpuops)
description:
  - Runs on a Kubernetes GPU node. Asks the kubelet's PodResources v1 gRPC service (C(List), and
    C(GetAllocatableResources) where the kubelet serves it) over its unix socket which devices each pod's containers
    were given, keeps the C(nvidia.com/*) resources, and resolves every device ID through NVML to the GPU or MIG
    device behind it.
  - Device IDs are resolved as NVIDIA's device plugin registers them with the kubelet, C(GPU-<uuid>) and
    C(MIG-<uuid>) (and C(MIG-GPU-<uuid>/<gi>/<ci>), the MIG UUIDs of drivers before R470), and as index-based plugins do,
    C(<gpu index>) and C(<gpu index>:<mig index>); a time-slicing or MPS replica C(<id>::<n>) resolves to its device.
  - The result feeds O(gpuops.nvidia.k8s_node_evacuate#module:pod_devices), so that only the pods on the GPUs and MIG
    devices that change are evicted.
  - The module never fails because the map cannot be read. When the socket is missing or refuses the connection, the
    kubelet does not implement the API, does not answer within O(timeout), or answers with an ID that names no device
    of the node, it returns RV(available=false) and RV(reason) saying exactly what happened, so that the caller falls
    back to evicting every GPU pod of the node and says so.
  - Read-only. Reading the socket needs root on the node (C(become=true)).
options:
  socket:
    description:
      - Path of the kubelet's PodResources socket on the node. It lies under the kubelet's root directory, which some
        distributions move (k3s and RKE2 use C(/var/lib/kubelet) unless their C(kubelet-arg) C(root-dir) says
        otherwise; check where C(pod-resources/kubelet.sock) is on your nodes).
      - The rolling reconfigure sets it from the variable C(kubelet_pod_resources_socket).
    type: path
    default: /var/lib/kubelet/pod-resources/kubelet.sock
  timeout:
    description:
      - Seconds to wait for the connection and for each answer of the kubelet.
    type: float
    default: 10
requirements:
  - grpcio and protobuf on the node (see the collection's requirements.txt); without them the module returns
    RV(available=false) naming the import error.
  - nvidia-ml-py on the node, to resolve device IDs.
extends_documentation_fragment:
  - gpuops.nvidia.attributes.INFO_MODULE
notes:
  - The PodResources API names pods by namespace and name; it has no pod uid.
seealso:
  - module: gpuops.nvidia.k8s_node_evacuate
  - module: gpuops.nvidia.gpu_info
"""

EXAMPLES = r"""
---
- name: Read which pods hold which GPUs on the node
  gpuops.nvidia.gpu_pod_devices:
  become: true
  register: pod_devices

- name: Evict only the pods on GPU 0's MIG devices, from the API host
  gpuops.nvidia.k8s_node_evacuate:
    name: "{{ inventory_hostname }}"
    scope: devices
    device_uuids: ["GPU-5b3c1e9a-2d4f-4a6b-8c7d-9e0f1a2b3c4d"]
    pod_devices: "{{ pod_devices }}"
  delegate_to: localhost

- name: A k3s node whose kubelet root directory was moved
  gpuops.nvidia.gpu_pod_devices:
    socket: /data/kubelet/pod-resources/kubelet.sock
  become: true
"""

RETURN = r"""
available:
  description: Whether the map could be read. When V(false), RV(pods) is empty and RV(reason) says why.
  returned: always
  type: bool
  sample: true
error:
  description:
    - Why the map is unavailable, as a short key; null when it is available.
    - V(socket_missing), V(not_a_socket), V(permission_denied), V(connect_failed), V(timeout), V(unimplemented),
      V(grpc_<code>) (another gRPC status, for example V(grpc_unavailable)), V(unresolved_device), V(nvml),
      V(library_missing).
  returned: always
  type: str
  sample: socket_missing
reason:
  description: What happened, with the socket's path, the OS error or the gRPC status code; null when available.
  returned: always
  type: str
  sample: the kubelet's PodResources socket /var/lib/kubelet/pod-resources/kubelet.sock does not exist (...)
socket:
  description: The socket read.
  returned: always
  type: str
  sample: /var/lib/kubelet/pod-resources/kubelet.sock
pods:
  description:
    - Each pod that holds C(nvidia.com/*) devices, sorted by namespace and name.
    - C(resources) maps each resource to the device IDs the kubelet lists; C(devices) are the GPU and MIG device UUIDs
      those IDs resolve to (a replica resolves to its device); C(gpus) the UUIDs of the GPUs they are on; C(parents)
      maps each of its MIG devices to its GPU.
  returned: always
  type: list
  elements: dict
  sample:
    - namespace: ml
      name: train-0
      resources: {"nvidia.com/mig-1g.10gb": ["MIG-8f6e1b5a-0c1d-5e2f-9a3b-4c5d6e7f8a9b"], "nvidia.com/gpu": ["GPU-5b3c1e9a-2d4f-4a6b-8c7d-9e0f1a2b3c4d::3"]}
      devices: ["MIG-8f6e1b5a-0c1d-5e2f-9a3b-4c5d6e7f8a9b", "GPU-5b3c1e9a-2d4f-4a6b-8c7d-9e0f1a2b3c4d"]
      gpus: ["GPU-0d1e2f3a-4b5c-4d6e-8f7a-9b0c1d2e3f4a", "GPU-5b3c1e9a-2d4f-4a6b-8c7d-9e0f1a2b3c4d"]
      parents: {"MIG-8f6e1b5a-0c1d-5e2f-9a3b-4c5d6e7f8a9b": "GPU-0d1e2f3a-4b5c-4d6e-8f7a-9b0c1d2e3f4a"}
allocatable:
  description: The C(nvidia.com/*) device IDs the kubelet can allocate, by resource; empty when the kubelet does not serve
    C(GetAllocatableResources).
  returned: always
  type: dict
  sample: {"nvidia.com/mig-1g.10gb": ["MIG-8f6e1b5a-0c1d-5e2f-9a3b-4c5d6e7f8a9b"]}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.gpuops.nvidia.plugins.module_utils.nvml import (
    HAS_PYNVML, PYNVML_IMPORT_ERROR, NvmlCallError, NvmlUnavailable, open_nvml,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.podresources.client import (
    DEFAULT_SOCKET, HAS_GRPC, DeviceTableUnavailable, device_map,
)


def read_device_table() -> list:
    if not HAS_PYNVML:
        raise DeviceTableUnavailable(missing_required_lib("nvidia-ml-py") + " ({0})".format(PYNVML_IMPORT_ERROR))
    try:
        nvml = open_nvml()
    except (NvmlUnavailable, NvmlCallError) as exc:
        raise DeviceTableUnavailable(str(exc))
    try:
        return nvml.device_table()
    except NvmlCallError as exc:
        raise DeviceTableUnavailable(str(exc))
    finally:
        nvml.close()


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "default": DEFAULT_SOCKET},
            "timeout": {"type": "float", "default": 10},
        },
        supports_check_mode=True,
    )
    if module.params["timeout"] <= 0:
        module.fail_json(msg="timeout: must be more than 0 seconds, got {0}".format(module.params["timeout"]))
    result = device_map(module.params["socket"], module.params["timeout"], read_device_table)
    if not result["available"]:
        if not HAS_GRPC:
            result["reason"] = missing_required_lib("grpcio and protobuf") + " " + result["reason"]
        module.warn("the pod -> device map is unavailable, so every GPU pod of this node counts as using every "
                    "device: " + result["reason"])
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
