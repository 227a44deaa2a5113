#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mig_mode
short_description: Enable or disable MIG mode on a node's NVIDIA GPUs, resetting only the GPUs that change
version_added: 0.1.0
author: gpuops maintainers (@gpuops)
description:
  - Sets the MIG mode of the selected GPUs through NVML and reports, per GPU, the current and the pending mode read back
    from NVML afterwards.
  - NVML's C(nvmlDeviceSetMigMode) returns an activation status instead of failing when the GPU is busy; this module
    records it and always re-reads the mode. A GPU whose new mode is still pending is reset with O(reset_command), only
    that GPU and only when nothing runs on it (unless O(force)); if the mode is still pending after that, the module
    reports RV(reboot_required).
  - Before disabling MIG on a GPU whose mode changes, its compute and GPU instances are destroyed (as mig-parted does).
    GPUs whose mode is already right are not touched.
  - Use M(gpuops.nvidia.mig_config) to declare the whole MIG layout; this module only changes the mode.
options:
  state:
    description:
      - V(enabled) turns MIG mode on, V(disabled) turns it off.
    type: str
    choices: [enabled, disabled]
    required: true
  devices:
    description:
      - V(all), or a list of GPU indexes. With V(all), GPUs that are not MIG-capable are skipped.
      - An index the node does not have is an error, and nothing is changed.
    type: raw
    default: all
  reset:
    description:
      - Reset a GPU whose new mode is still pending after it was set, with O(reset_command).
      - When V(false), such GPUs are reported with RV(reset_required).
    type: bool
    default: true
  force:
    description:
      - Reset a GPU even while processes run on it (they are killed by the reset).
    type: bool
    default: false
  reset_command:
    description:
      - The command that resets one GPU, as a list of arguments (run without a shell).
      - C({index}), C({uuid}) and C({pci_bus_id}) are replaced by the GPU's values.
    type: list
    elements: str
    default: [nvidia-smi, --gpu-reset, -i, "{index}"]
requirements:
  - nvidia-ml-py (module C(pynvml)) on the managed node
  - root privileges (NVML refuses mode changes otherwise)
extends_documentation_fragment:
  - gpuops.nvidia.attributes
notes:
  - On Ampere GPUs (A100, A30) a mode change needs a GPU reset; Hopper and later apply it at once. The module decides
    from the mode NVML reports, not from the GPU model.
  - In VM passthrough a GPU reset is often impossible; RV(reboot_required) then tells the play to reboot the node.
seealso:
  - module: gpuops.nvidia.mig_config
  - module: gpuops.nvidia.gpu_info
"""

EXAMPLES = r"""
---
- name: Enable MIG on every MIG-capable GPU
  gpuops.nvidia.mig_mode:
    state: enabled
  register: mig

- name: Reboot when a reset could not apply the mode
  ansible.builtin.reboot:
  when: mig.reboot_required

- name: Disable MIG on GPUs 2 and 3 only, resetting by PCI bus ID
  gpuops.nvidia.mig_mode:
    state: disabled
    devices: [2, 3]
    reset_command: [nvidia-smi, -r, -i, "{pci_bus_id}"]
"""

RETURN = r"""
gpus:
  description: One entry per selected GPU, read back from NVML after the change.
  returned: always
  type: list
  elements: dict
  contains:
    index:
      description: NVML index.
      type: int
    uuid:
      description: GPU UUID.
      type: str
    current:
      description: Whether MIG is enabled now.
      type: bool
    pending:
      description: Whether MIG is enabled after the next reset.
      type: bool
    changed:
      description: Whether this GPU was (or in check mode would be) changed.
      type: bool
    activation:
      description: The activation status C(nvmlDeviceSetMigMode) returned, when it was called.
      type: str
    reset_attempted:
      description: Whether the reset command ran for this GPU.
      type: bool
    reset_output:
      description: Exit code and output of the reset command.
      type: str
  sample:
    - {index: 0, uuid: GPU-52fe4e59-f210-9afd-bbe8-90a37b31eb1c, current: true, pending: true, changed: true,
       activation: success, reset_attempted: false, reset_output: ""}
reset_required:
  description: A selected GPU's mode is still pending; a GPU reset (or reboot) is owed. Not predicted in check mode.
  returned: always
  type: bool
reboot_required:
  description: A reset was tried and the mode is still pending; reboot the node (or free the GPU and run again).
  returned: always
  type: bool
skipped_gpus:
  description: Indexes of GPUs skipped because they are not MIG-capable (with O(devices=all)).
  returned: always
  type: list
  elements: int
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.apply import (
    DEFAULT_RESET_COMMAND, change_mode, command_reset_runner, format_reset_command,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import SpecError, parse_devices_option
from ansible_collections.gpuops.nvidia.plugins.module_utils.nvml import (
    HAS_PYNVML, PYNVML_IMPORT_ERROR, NvmlCallError, NvmlUnavailable, open_nvml,
)


def _entry(gpu, changed):
    return {"index": gpu.index, "uuid": gpu.uuid, "current": gpu.mig_current, "pending": gpu.mig_pending, "changed": changed,
            "activation": None, "reset_attempted": False, "reset_output": ""}


def run(module, nvml):
    params = module.params
    wanted = params["state"] == "enabled"
    try:
        selected = parse_devices_option(params["devices"])
    except SpecError as exc:
        module.fail_json(msg=str(exc))
    gpus = nvml.read_node().gpus
    indexes = [g.index for g in gpus]
    if selected is not None:
        outside = sorted(set(selected) - set(indexes))
        if outside:
            module.fail_json(msg="devices: GPU index %s out of range (this node has GPUs %s)"
                             % (", ".join(map(str, outside)), ", ".join(map(str, indexes)) or "none"))
    try:
        format_reset_command(params["reset_command"], gpus[0]) if gpus else None
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    targets, skipped = [], []
    for gpu in gpus:
        if selected is not None and gpu.index not in selected:
            continue
        if not gpu.mig_capable:
            if selected is not None and wanted:
                module.fail_json(msg="GPU %d (%s) is not MIG-capable" % (gpu.index, gpu.name))
            skipped.append(gpu.index)
            continue
        targets.append(gpu)

    to_change = [g for g in targets if g.mig_current != wanted or g.mig_pending != wanted]
    if not wanted:
        busy = ["GPU %d instance %s: processes %s" % (g.index, gi.gi_id, ", ".join(str(p.pid) for p in g.processes_on(gi.gi_id)))
                for g in to_change if g.mig_current for gi in g.instances if g.processes_on(gi.gi_id)]
        if busy:
            module.fail_json(msg="cannot disable MIG: its instances are in use (%s)" % "; ".join(busy))

    before = {str(g.index): {"current": g.mig_current, "pending": g.mig_pending} for g in targets}
    results = {g.index: _entry(g, g in to_change) for g in targets}
    if module.check_mode:
        for gpu in to_change:
            results[gpu.index].update(pending=wanted)
        return finish(module, targets, results, skipped, before, bool(to_change), check=True, wanted=wanted)

    reset_runner = command_reset_runner(module.run_command, params["reset_command"]) if params["reset"] else None
    for gpu in to_change:
        if not wanted and gpu.mig_current:
            for gi in gpu.instances:
                nvml.destroy_gpu_instance(gpu.index, gi.gi_id)
        runner = reset_runner
        holders = sorted({p.pid for p in gpu.processes})
        if runner is not None and holders and not params["force"]:
            runner = None
            module.warn("GPU %d: not reset because processes %s run on it (force=true resets anyway)"
                        % (gpu.index, ", ".join(map(str, holders))))
        outcome = change_mode(nvml, gpu.index, wanted, runner, (gpu.mig_current, gpu.mig_pending))
        entry = results[gpu.index]
        entry.update(current=outcome.current, pending=outcome.pending, reset_attempted=outcome.reset_attempted,
                     reset_output=outcome.reset_output, reset_required=outcome.reset_required, reboot_required=outcome.reboot_required)
        if outcome.activation_status is not None:
            entry["activation"] = outcome.to_dict()["activation"]
    return finish(module, targets, results, skipped, before, bool(to_change), check=False, wanted=wanted)


def finish(module, targets, results, skipped, before, changed, check, wanted):
    entries = [results[g.index] for g in targets]
    reset_required = any(e["current"] != wanted for e in entries) if not check else False
    reboot_required = any(e.get("reboot_required") for e in entries)
    after = {str(e["index"]): {"current": e["current"], "pending": e["pending"]} for e in entries}
    result = {"changed": changed, "gpus": entries, "reset_required": reset_required, "reboot_required": reboot_required,
              "skipped_gpus": skipped}
    if module._diff:
        result["diff"] = {"before": before, "after": after}
    module.exit_json(**result)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "required": True, "choices": ["enabled", "disabled"]},
            "devices": {"type": "raw", "default": "all"},
            "reset": {"type": "bool", "default": True},
            "force": {"type": "bool", "default": False},
            "reset_command": {"type": "list", "elements": "str", "default": list(DEFAULT_RESET_COMMAND)},
        },
        supports_check_mode=True,
    )
    if not HAS_PYNVML:
        module.fail_json(msg=missing_required_lib("nvidia-ml-py"), exception=str(PYNVML_IMPORT_ERROR))
    try:
        nvml = open_nvml()
    except (NvmlUnavailable, NvmlCallError) as exc:
        module.fail_json(msg="cannot open NVML: %s" % exc)
    try:
        run(module, nvml)
    except NvmlCallError as exc:
        state = []
        try:
            state = [{"index": g.index, "current": g.mig_current, "pending": g.mig_pending} for g in nvml.read_node().gpus]
        except NvmlCallError:
            pass
        module.fail_json(msg=str(exc), gpus=state)
    finally:
        nvml.close()


if __name__ == "__main__":
    main()
