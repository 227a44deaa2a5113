#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_info
short_description: Report a node's NVIDIA GPUs, their MIG mode, profiles, instances and processes
version_added: 0.1.0
author: gpuops maintainers (@gpuops)
description:
  - Reads every NVIDIA GPU of the node through NVML (the C(pynvml) Python bindings) and reports its identity, MIG
    mode (current and pending), the GPU instance profiles it offers with their legal placements, the GPU and compute
    instances that exist with their MIG device UUIDs, and the processes that use it.
  - Profile names follow mig-parted (for example V(1g.5gb), V(1g.10gb+me)) and are computed from what each GPU
    reports, so they follow the installed driver's memory accounting.
  - On a node without an NVIDIA driver or GPU it returns an empty RV(gpus) list and a RV(note); it does not fail.
  - When the environment variable E(GPUOPS_NVML_SIMULATOR) names a simulator state file, the simulated NVML of
    C(gpuops_sim) is read instead of C(libnvidia-ml.so.1).
options: {}
requirements:
  - nvidia-ml-py (module C(pynvml)) on the managed node
extends_documentation_fragment:
  - gpuops.nvidia.attributes.INFO_MODULE
seealso:
  - module: gpuops.nvidia.mig_mode
  - module: gpuops.nvidia.mig_config
"""

EXAMPLES = r"""
---
- name: Read the GPUs of the node
  gpuops.nvidia.gpu_info:
  register: gpu

- name: Show the MIG devices of GPU 0
  ansible.builtin.debug:
    msg: "{{ gpu.gpus[0].mig.instances | map(attribute='devices') | flatten | map(attribute='uuid') }}"
"""

RETURN = r"""
driver_version:
  description: NVIDIA driver version; empty when no driver is loaded.
  returned: always
  type: str
  sample: "550.54.15"
cuda_version:
  description: Highest CUDA version the driver supports, as C(major.minor).
  returned: always
  type: str
  sample: "12.4"
nvml_version:
  description: NVML library version.
  returned: always
  type: str
  sample: "12.550.54.15"
note:
  description: Why RV(gpus) is empty (no driver, no NVML library, no GPU).
  returned: when no GPU is reported
  type: str
  sample: "NVML is not available: NVML Shared Library Not Found"
nvml_unavailable:
  description: Why NVML could not be opened (no NVIDIA driver loaded, or no C(libnvidia-ml)); a node plan keeps it.
  returned: when NVML cannot be opened
  type: str
  sample: "NVML is not available: Driver Not Loaded"
  version_added: 0.2.0
gpus:
  description: The GPUs in NVML index order.
  returned: always
  type: list
  elements: dict
  contains:
    index:
      description: NVML index.
      type: int
      sample: 0
    uuid:
      description: GPU UUID.
      type: str
      sample: GPU-52fe4e59-f210-9afd-bbe8-90a37b31eb1c
    name:
      description: Product name as NVML reports it.
      type: str
      sample: NVIDIA A100-SXM4-40GB
    pci_device_id:
      description: PCI device and vendor ID as mig-parted's C(device-filter) spells it, C(0xDDDDVVVV).
      type: str
      sample: "0x20B010DE"
    pci_subsystem_id:
      description: PCI subsystem device and vendor ID, C(0xSSSSVVVV).
      type: str
      sample: "0x134F10DE"
    pci_bus_id:
      description: PCI bus ID.
      type: str
      sample: "00000000:07:00.0"
    memory_total_mib:
      description: Total memory in MiB.
      type: int
      sample: 40960
    mig:
      description: MIG state of the GPU.
      type: dict
      contains:
        capable:
          description: Whether the GPU supports MIG.
          type: bool
        current:
          description: Whether MIG is enabled now.
          type: bool
        pending:
          description: Whether MIG is enabled after the next GPU reset; differs from RV(gpus[].mig.current) while a reset or reboot is owed.
          type: bool
        instances:
          description: GPU instances with C(profile), C(profile_id), C(gi_id), C(placement_start), C(placement_size) and C(devices)
            (compute instances with C(uuid), C(ci_id), C(profile)).
          type: list
          elements: dict
        profiles:
          description: Every GPU instance profile the GPU offers, with C(name), C(id), C(slices), C(memory_mib), engine counts,
            C(instance_count), C(free) (remaining capacity now) and C(placements) (legal C(start) and C(size)).
          type: list
          elements: dict
    processes:
      description: Compute processes on the GPU or its MIG devices, with C(pid), C(used_memory_mib), C(gi_id) and C(ci_id).
      type: list
      elements: dict
  sample:
    - index: 0
      uuid: GPU-52fe4e59-f210-9afd-bbe8-90a37b31eb1c
      name: NVIDIA A100-SXM4-40GB
      pci_device_id: "0x20B010DE"
      pci_subsystem_id: "0x134F10DE"
      pci_bus_id: "00000000:07:00.0"
      memory_total_mib: 40960
      mig:
        capable: true
        current: true
        pending: true
        instances:
          - {profile: 1g.5gb, profile_id: 19, gi_id: 7, placement_start: 6, placement_size: 1,
             devices: [{uuid: MIG-0d5b3a4e-5c3f-5d7e-9f1a-2b3c4d5e6f70, ci_id: 0, profile: 1g.5gb}]}
        profiles:
          - {name: 1g.5gb, id: 19, slices: 1, memory_mib: 4864, multiprocessors: 14, copy_engines: 1, decoders: 0,
             encoders: 0, jpegs: 0, ofas: 0, instance_count: 7, free: 6, placements: [{start: 0, size: 1}]}
      processes: [{pid: 1234, used_memory_mib: 1024, gi_id: 7, ci_id: 0}]
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.gpuops.nvidia.plugins.module_utils.nvml import (
    HAS_PYNVML, PYNVML_IMPORT_ERROR, NvmlCallError, NvmlUnavailable, open_nvml,
)


def main() -> None:
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    if not HAS_PYNVML:
        module.fail_json(msg=missing_required_lib("nvidia-ml-py"), exception=str(PYNVML_IMPORT_ERROR))
    try:
        nvml = open_nvml()
    except NvmlUnavailable as exc:
        module.exit_json(changed=False, driver_version="", cuda_version="", nvml_version="", gpus=[], note=str(exc),
                         nvml_unavailable=str(exc))
    except NvmlCallError as exc:
        module.fail_json(msg=str(exc))
    try:
        node = nvml.read_node()
    except NvmlCallError as exc:
        module.fail_json(msg=str(exc))
    finally:
        nvml.close()
    result = node.to_dict()
    if not node.gpus:
        result["note"] = "NVML reports no NVIDIA GPU on this node"
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
