#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mig_config
short_description: Apply a mig-parted v1 MIG configuration to a node's NVIDIA GPUs, changing only what differs
version_added: 0.1.0
author: gpuops maintainers (@gpuops)
description:
  - Reads a mig-parted v1 config document (the format of NVIDIA's C(nvidia-mig-parted)), selects one named config,
    and makes the node's GPUs match it through NVML.
  - The document is validated exactly as mig-parted validates it. Then every targeted GPU is checked against what that
    GPU reports through NVML (the profile exists on it, the count fits, the layout can be placed) before anything is
    changed; any problem on any GPU fails the task and changes nothing.
  - Per GPU, GPU instances whose profile is wanted are kept wherever they are; only the surplus is destroyed and only the
    missing ones are created, at explicit placements chosen so that the whole layout fits. When the wanted layout
    cannot be placed around the kept instances, that GPU alone is laid out again. GPUs that already match are not
    touched, and a second run reports no change.
  - MIG mode changes are made per GPU; only a GPU whose mode is still pending after the change is reset (with
    O(reset_command)), and a mode that stays pending fails the task unless O(allow_pending=true).
  - When neither O(config) nor O(config_file) is given, the collection's default named configs
    (C(files/mig-configs/default.yaml), the 81 configs mig-parted ships) are used. That file and a O(config_file) are read
    on the controller by the action plugin, unless O(remote_src=true).
options:
  config:
    description:
      - The mig-parted v1 document itself, as a dictionary (or as YAML text).
      - Mutually exclusive with O(config_file).
      - Bounded as a config file is (see O(config_file)).
    type: raw
  config_file:
    description:
      - Path of a mig-parted v1 YAML document.
      - Read on the controller (a relative path is searched like M(ansible.builtin.copy)'s C(src), in the role's or
        playbook's C(files/) directory) unless O(remote_src=true), then on the managed node.
      - Mutually exclusive with O(config).
      - A regular file (not a FIFO, a device or a directory) of at most 1 MiB of UTF-8 text without NUL bytes. YAML
        aliases are allowed as long as the document they expand to has at most 100,000 nodes; nesting is limited to 32
        levels, integers to 20 digits. Errors never quote the file's content. See the config format's limits in the
        collection's docs.
    type: path
  remote_src:
    description:
      - Whether O(config_file) is a path on the managed node instead of the controller.
    type: bool
    default: false
  config_name:
    description:
      - The named config (a key of C(mig-configs)) to apply, for example V(all-1g.5gb) or V(all-balanced).
      - May be left out when the document holds exactly one config.
    type: str
  devices:
    description:
      - Limit the change to these GPUs, V(all) or a list of GPU indexes. Other GPUs are neither checked nor touched.
      - The config's own C(devices) and C(device-filter) still decide which entry applies to each of these GPUs.
      - An index the node does not have is an error.
    type: raw
    default: all
  unmatched_gpus:
    description:
      - What to do with a selected GPU that no entry of the config matches (for example a config whose entries filter on
        another GPU model).
      - V(leave) leaves it untouched and lists it in the C(unmatched_gpus) of RV(plan); V(fail) fails before changing anything.
    type: str
    choices: [leave, fail]
    default: leave
  in_use:
    description:
      - What to do when the plan would destroy a GPU instance, or change the MIG mode of a GPU, that processes use.
      - V(fail) refuses the plan and changes nothing.
      - V(ignore) plans as if the processes were gone, with a warning. Use it to plan before the processes are moved
        (the P(gpuops.nvidia.mig_reconfigure#role) role plans this way, then evicts the pods on the devices the plan
        changes); NVML still refuses to destroy an instance that is in use when the plan is applied.
    type: str
    choices: [fail, ignore]
    default: fail
  allow_pending:
    description:
      - Succeed even when a MIG mode change stays pending (the GPU could not be reset). RV(reset_required) or
        RV(reboot_required) tell the play what is owed; the instances of those GPUs are created by the next run after
        the reset or reboot.
    type: bool
    default: false
  reset:
    description:
      - Reset a GPU whose new MIG mode is still pending after it was set, with O(reset_command).
    type: bool
    default: true
  reset_command:
    description:
      - The command that resets one GPU, as a list of arguments (run without a shell).
      - C({index}), C({uuid}) and C({pci_bus_id}) are replaced by the GPU's values.
    type: list
    elements: str
    default: [nvidia-smi, --gpu-reset, -i, "{index}"]
  reset_blocking_services:
    description:
      - Host services that hold GPUs open and make a reset fail. Before the first reset of the task, those that are
        active (C(systemctl is-active)) are stopped; after the resets, on success or failure, exactly those are
        started again. RV(reset_blockers) reports what was found, stopped and restarted.
      - Nothing is stopped when no reset is needed.
    type: list
    elements: str
    default: [nvidia-persistenced, nvidia-dcgm, dcgm, nvsm, dcgm-exporter]
  reset_blocking_kernel_modules:
    description:
      - Kernel modules that hold the GPUs while loaded (C(nvidia_drm)) and cannot be unloaded safely on a live node.
        When one is loaded (C(lsmod), else C(/proc/modules)) no reset is tried; the mode change stays pending, which
        fails the task naming the module unless O(allow_pending=true) (the
        P(gpuops.nvidia.mig_reconfigure#role) role then reboots the node when rebooting is allowed).
    type: list
    elements: str
    default: [nvidia_drm]
  boot_record:
    description:
      - Path on the node of the config recorded for the boot-time service (the P(gpuops.nvidia.mig#role) role writes
        it, in C(/etc/gpuops/mig/config.json) under its root). The module reads it and returns it as RV(boot_record).
        It writes it only with O(boot_record_content).
      - When the record names the boot-time applier's installed files (C(files)) and its status file (C(status_file)),
        as the role's record does, the module also returns their digests as RV(boot_files) and the status as
        RV(boot_status). When it names the service's unit file (C(unit)), it returns whether the unit is enabled as
        RV(boot_unit_enabled).
      - Lets a play read the GPUs, plan, and check that record in one module run. Without it, the play needs a
        second module run on every node.
    type: path
  boot_record_content:
    description:
      - The record to write at O(boot_record) after a successful apply (a mode change left pending with
        O(allow_pending=true) included, since the boot-time service applies the record at the next boot), so that the
        play needs no module run of its own to write it.
      - The module adds C(config_name) and C(document), the named config applied and RV(config); the content must not
        hold them. C(files) (the installed files the boot-time service runs) is a list of paths, C(status_file) and
        C(unit) (its unit file) are paths.
      - Written only when it differs from the record read, through a temporary file in the same directory and a
        rename, with mode C(0644). Not written when the apply fails, when NVML cannot be opened, or when a file the
        content names in C(files) is missing (a warning says which), since a record names only files that are installed.
      - RV(boot_record_written) says whether it was written (in check mode, whether it would be); RV(boot_record) is
        then the new record. With diff, the record's before and after are shown.
      - Requires O(boot_record).
    type: dict
  driver_missing:
    description:
      - What to do when NVML cannot be opened because the node has no NVIDIA driver loaded or no C(libnvidia-ml)
        (NVML's C(Driver Not Loaded) or C(Library Not Found)), as on a node the driver is not installed on yet.
      - V(fail) fails the task.
      - V(report) validates the document and O(config_name), changes nothing, and succeeds with RV(nvml_unavailable)
        saying why (and, with O(node_plan), a node plan without GPUs). The
        P(gpuops.nvidia.mig_reconfigure#role) role plans such a node this way before the driver play, and plans it
        again once the driver is in place.
      - A missing C(pynvml) library is reported the same way (a node whose libraries are not installed yet, in a
        rehearsal of a first install). Any other NVML failure fails the task either way.
    type: str
    choices: [fail, report]
    default: fail
    version_added: 0.2.0
  node_plan:
    description:
      - Return the reading and the plan condensed, as RV(node_plan), instead of in full. The module condenses them
        on the node, as the P(gpuops.nvidia.mig_node_plan#filter) filter would with these options, and leaves
        RV(observed), RV(plan), RV(mig_devices) and RV(config) out of the result.
      - For plays over many nodes that keep what they read. The full result is tens of kilobytes per node, which
        the controller receives, parses and holds for every host for the rest of the play; the memory it holds makes
        each later task of every host slower to start.
      - The options are those of P(gpuops.nvidia.mig_expected_resources#filter). An unknown strategy or replica count
        is not refused here; it is reported in C(errors) of RV(node_plan.expected).
      - A failed task is returned in full.
    type: dict
    suboptions:
      strategy:
        description: The MIG strategy of the device plugin (V(none), V(single), V(mixed)).
        type: str
        default: none
      time_slicing_replicas:
        description: Time-slicing replicas per device, or null for none.
        type: raw
      time_slicing_rename_by_default:
        description: Whether time-sliced resources are renamed with a C(.shared) suffix.
        type: bool
        default: false
      node:
        description: The node name, for messages.
        type: str
      labels:
        description: V(essential) keeps the GFD labels that follow from names and counts; V(all) every label predicted.
        type: str
        default: essential
        choices: [essential, all]
requirements:
  - nvidia-ml-py (module C(pynvml)) and PyYAML on the managed node
  - root privileges (NVML refuses MIG changes otherwise)
extends_documentation_fragment:
  - gpuops.nvidia.attributes
notes:
  - Only GPU instance profiles (V(<G>g.<GB>gb) with an optional V(+me), V(+me.all), V(+gfx) or V(-me) suffix) are
    supported; compute-instance profiles such as V(1c.3g.20gb) are refused. Each GPU instance gets one full-width compute
    instance, as C(nvidia-smi mig -cgi ... -C) makes.
  - Profile names are resolved on each GPU from what it reports. A name that differs only by memory from one the GPU
    offers (V(7g.79gb) on a driver that names it V(7g.80gb)) is accepted with a warning.
  - Entries apply in file order; a GPU matched by several entries gets the last one.
seealso:
  - module: gpuops.nvidia.mig_mode
  - module: gpuops.nvidia.gpu_info
  - name: mig-parted config format
    description: NVIDIA's MIG partition editor, whose v1 config format this module reads.
    link: https://github.com/NVIDIA/mig-parted
"""

EXAMPLES = r"""
---
- name: Apply a shipped named config
  gpuops.nvidia.mig_config:
    config_name: all-balanced

- name: Rehearse an inline config; show the plan and the per-GPU diff
  gpuops.nvidia.mig_config:
    config_name: mixed
    config:
      version: v1
      mig-configs:
        mixed:
          - devices: [0, 1]
            mig-enabled: true
            mig-devices: {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}
          - devices: [2, 3]
            mig-enabled: false
  check_mode: true
  diff: true
  register: rehearsal

- name: Apply a config file that lives on the GPU node, accepting a pending mode change
  gpuops.nvidia.mig_config:
    config_file: /etc/nvidia-mig-manager/config.yaml
    remote_src: true
    config_name: all-1g.10gb
    allow_pending: true
  register: mig

- name: Reboot when a reset could not apply the mode
  ansible.builtin.reboot:
  when: mig.reboot_required

- name: On a fleet, plan and keep only what the node must do and advertise
  gpuops.nvidia.mig_config:
    config_name: all-1g.10gb
    node_plan:
      strategy: mixed
      node: "{{ inventory_hostname }}"
  check_mode: true
  register: planned

- name: Show the change
  ansible.builtin.debug:
    msg: "{{ planned.node_plan.before }} -> {{ planned.node_plan.after }}"
"""

RETURN = r"""
config_name:
  description: The named config applied.
  returned: success
  type: str
  sample: all-balanced
config:
  description:
    - The named config that was selected, alone in a mig-parted v1 document, as validated.
    - The P(gpuops.nvidia.mig#role) role records it for the boot-time service.
  returned: success, unless O(node_plan) is set
  type: dict
  sample:
    version: v1
    mig-configs:
      all-1g.5gb:
        - devices: all
          mig-enabled: true
          mig-devices: {"1g.5gb": 7}
config_source:
  description: Where the document came from (set by the action plugin).
  returned: when read on the controller
  type: str
  sample: /home/me/collections/ansible_collections/gpuops/nvidia/files/mig-configs/default.yaml
plan:
  description:
    - What was (or in check mode would be) done, per GPU, as data.
    - Each GPU has C(targeted), C(entry) (the index of the deciding entry), C(mig_enabled), C(mig_devices) (wanted
      profile counts, as this GPU names them), C(set_mode), C(mode_change), C(keep), C(destroy), C(create) (with
      placements), C(add_compute_instance), C(relayout), C(warnings), and C(before) / C(after) layouts.
  returned: always, unless O(node_plan) is set on success
  type: dict
  sample:
    config: all-balanced
    changed: true
    unmatched_gpus: []
    gpus:
      - index: 0
        targeted: true
        changed: true
        keep: []
        destroy: [{gi_id: 0, profile: 7g.40gb, profile_id: 0, placement: {start: 0, size: 8}}]
        create: [{profile: 3g.20gb, profile_id: 9, placement: {start: 4, size: 4}}]
changed_gpus:
  description: The GPUs that were changed.
  returned: always
  type: list
  elements: dict
  sample: [{index: 0, uuid: GPU-52fe4e59-f210-9afd-bbe8-90a37b31eb1c}]
mig_devices:
  description: The MIG devices of every GPU afterwards (the current ones in check mode).
  returned: success, unless O(node_plan) is set
  type: list
  elements: dict
  sample:
    - index: 0
      uuid: GPU-52fe4e59-f210-9afd-bbe8-90a37b31eb1c
      mig_enabled: true
      devices: [{uuid: MIG-0d5b3a4e-5c3f-5d7e-9f1a-2b3c4d5e6f70, profile: 1g.5gb, gi_id: 7, ci_id: 0, placement_start: 6}]
observed:
  description:
    - The node as NVML reported it when the plan was made, before any change, with the keys
      M(gpuops.nvidia.gpu_info) returns (C(driver_version), C(cuda_version), C(nvml_version), C(gpus)).
    - A caller that needs both the GPUs and the plan reads them here from one snapshot, in one module run.
  returned: success, unless O(node_plan) is set
  type: dict
  sample:
    driver_version: 550.54.15
    cuda_version: "12.4"
    nvml_version: 12.550.54.15
    gpus: [{index: 0, uuid: GPU-52fe4e59-f210-9afd-bbe8-90a37b31eb1c, name: NVIDIA A100-SXM4-40GB}]
node_plan:
  description:
    - The reading and the plan condensed, as the P(gpuops.nvidia.mig_node_plan#filter) filter returns them with the
      options of O(node_plan) (a few hundred bytes).
    - C(driver_version), C(gpu_count), C(changed), C(config), C(boot_record), C(before) and C(after) (one-line
      layouts), C(boot_status), C(boot_files) and C(boot_unit_enabled) (when the record names them), C(expected) (what the node must
      advertise afterwards, with C(errors) and C(warnings)), C(changing_devices) (the UUIDs of the GPUs and MIG
      devices whose pods must move), and C(nvml_unavailable) (see RV(nvml_unavailable)).
  returned: success, when O(node_plan) is set
  type: dict
  contains:
    expected:
      description: What the node must advertise afterwards (C(capacity), C(allocatable), C(labels), C(errors), C(warnings)).
      type: dict
      returned: success
  sample:
    driver_version: 550.54.15
    gpu_count: 8
    changed: true
    before: "8 GPU(s): MIG off"
    after: "8 GPU(s): 4x1g.10gb"
    changing_devices: [GPU-52fe4e59-f210-9afd-bbe8-90a37b31eb1c]
    expected: {allocatable: {nvidia.com/mig-1g.10gb: 32}, errors: [], warnings: []}
modes:
  description: Per GPU whose mode was set, the activation status NVML returned, whether a reset ran, and the mode read back.
  returned: always
  type: list
  elements: dict
reset_required:
  description: A GPU's MIG mode change is still pending; a GPU reset is owed.
  returned: always
  type: bool
reboot_required:
  description: A reset was tried and the mode change is still pending; reboot the node (or free the GPU) and run again.
  returned: always
  type: bool
reset_blockers:
  description:
    - The reset blockers on the node, when a MIG mode change may need a reset (read-only in check mode).
    - C(kernel_modules_loaded) and C(services_active) as found; C(services_stopped) and C(services_restarted) by this
      task; C(problems) lists a stop or start that failed.
  returned: when a GPU's MIG mode changes
  type: dict
  sample:
    kernel_modules_loaded: []
    services_active: [nvidia-persistenced]
    services_stopped: [nvidia-persistenced]
    services_restarted: [nvidia-persistenced]
    problems: []
boot_record:
  description:
    - The content of O(boot_record), as JSON; after a write of O(boot_record_content), the record written.
    - V({}) when the file is absent, unreadable or not a JSON object. A warning says which; a new record overwrites it.
  returned: when O(boot_record) is set
  type: dict
  sample:
    config_name: all-1g.5gb
    status_file: /var/lib/gpuops/mig/boot-status.json
    files: [/usr/local/sbin/gpuops-mig-apply]
boot_status:
  description:
    - The content of the status file the boot-time applier leaves on every boot (C(status_file) of the record), as
      JSON. V({}) when the file is absent or cannot be used (with a warning).
    - C(result) is V(applied) or V(failed); C(reason), C(exit_code), C(config_name), C(boot_id) and C(time) say more.
  returned: when O(boot_record) is set and the record names a status file
  type: dict
  sample: {result: failed, exit_code: 1, reason: "GPU 0: create GPU instance 3g.20gb: Insufficient Resources", config_name: all-balanced}
boot_files:
  description:
    - The SHA-256 digest (hex) of each file the record names (C(files)), in order; null for a file that cannot be read.
    - Lets a play compare what is installed with the collection's own files in the run that plans.
  returned: when O(boot_record) is set and the record names files
  type: list
  elements: str
  sample: [5e1c0f00d7c2b1a7e3b4c9f5a1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0]
boot_unit_enabled:
  description:
    - Whether the boot-time service's unit (C(unit) of the record) is enabled, as C(systemctl is-enabled) decides it
      from the disk (a link to it in a C(*.wants/) or C(*.requires/) directory next to the unit file).
  returned: when O(boot_record) is set and the record names a unit
  type: bool
  sample: true
boot_record_written:
  description:
    - Whether the record of O(boot_record_content) was written (in check mode, whether it would be).
  returned: when O(boot_record_content) is set
  type: bool
  sample: true
nvml_unavailable:
  description:
    - Why NVML could not be opened (no driver loaded, or no C(libnvidia-ml)), with O(driver_missing=report); nothing was
      read or changed. The empty string when the GPUs were read.
  returned: success
  type: str
  sample: "NVML is not available: Driver Not Loaded"
failed_gpu:
  description: On a failure during the apply, the GPU index, the step that failed, and that GPU's state read back from NVML.
  returned: failure during apply
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.apply import DEFAULT_RESET_COMMAND, format_reset_command
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.boot import (
    file_digests, read_json_object, unit_enabled, write_json_atomic,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.node_plan import NODE_PLAN_ARGUMENT_SPEC, node_plan
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.plan import PlanError
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.reconcile import apply_reading, read_and_plan, reset_blockers
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.reset_blockers import (
    DEFAULT_BLOCKING_KERNEL_MODULES, DEFAULT_BLOCKING_SERVICES,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import (
    SpecError, excerpt, load_spec_text, parse_devices_option, parse_spec, read_config_file,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.nvml import (
    HAS_PYNVML, PYNVML_IMPORT_ERROR, PYNVML_MISSING, NvmlCallError, NvmlUnavailable, open_nvml,
)


def load_document(params):
    """The validated spec, from O(config) or a node-side O(config_file)."""
    if params["config"] is not None:
        if isinstance(params["config"], str):
            return load_spec_text(params["config"], "config")
        return parse_spec(params["config"])
    if params["config_file"]:
        # A regular file, read with a bound; no message quotes what it holds.
        text = read_config_file(params["config_file"])
        return load_spec_text(text, "config_file %s" % excerpt(params["config_file"]))
    raise SpecError("config or config_file is required (the action plugin supplies the default named configs)")


def mig_devices(gpus):
    return [
        {
            "index": gpu.index,
            "uuid": gpu.uuid,
            "mig_enabled": gpu.mig_current,
            "devices": [
                {"uuid": d.uuid, "profile": d.profile, "gi_id": gi.gi_id, "ci_id": d.ci_id, "placement_start": gi.placement.start}
                for gi in gpu.instances for d in gi.devices
            ],
        }
        for gpu in gpus
    ]


def read_boot(module, path):
    """The node's boot-time record as ``boot_record`` ({} with a warning when it cannot be used),
    with what it names (see boot_details)."""
    record, problem = read_json_object(path)
    if problem:
        module.warn("boot_record: %s" % problem)
    return boot_details(module, record)


def boot_details(module, record):
    """The record as ``boot_record``, with the status file it names as ``boot_status``, the digests
    of the files it names as ``boot_files``, and whether the unit it names is enabled as
    ``boot_unit_enabled``."""
    found = {"boot_record": record}
    status_file = record.get("status_file")
    if isinstance(status_file, str) and status_file:
        found["boot_status"], problem = read_json_object(status_file)
        if problem:
            module.warn("boot_record: status file: %s" % problem)
    files = record.get("files")
    if isinstance(files, list) and all(isinstance(name, str) for name in files):
        found["boot_files"] = file_digests(files)
    unit = record.get("unit")
    if isinstance(unit, str) and unit:
        found["boot_unit_enabled"] = unit_enabled(unit)
    return found


# The record's keys the module fills from the run, and the others it checks the types of.
BOOT_RECORD_OWN_KEYS = ("config_name", "document")
BOOT_RECORD_PATH_KEYS = ("status_file", "unit")


def check_boot_record_content(content):
    """Fail-fast check of O(boot_record_content), before anything is read or changed: an error
    naming the field, or None."""
    own = [key for key in BOOT_RECORD_OWN_KEYS if key in content]
    if own:
        return ("boot_record_content: %s is filled by the module (the config applied); leave it out"
                % " and ".join(own))
    files = content.get("files")
    if "files" in content and not (isinstance(files, list) and all(isinstance(name, str) and name for name in files)):
        return "boot_record_content: files must be a list of paths, got %s" % excerpt(repr(files))
    for key in BOOT_RECORD_PATH_KEYS:
        if key in content and not (isinstance(content[key], str) and content[key]):
            return "boot_record_content: %s must be a path, got %s" % (key, excerpt(repr(content[key])))
    return None


def write_boot_record(module, result):
    """After a successful apply: write O(boot_record_content), with the config applied, where it
    differs from the record read; the result then holds the new record and what it names."""
    content = module.params["boot_record_content"]
    if content is None:
        return
    record = dict(content, config_name=result["config_name"], document=result["config"])
    before = result.get("boot_record", {})
    missing = [name for name in record.get("files", []) if not os.path.exists(name)]
    if missing:
        module.warn("boot_record_content: not written, it names files that are not installed: %s" % ", ".join(missing))
        result["boot_record_written"] = False
        return
    if record == before:
        result["boot_record_written"] = False
        return
    path = module.params["boot_record"]
    if not module.check_mode:
        try:
            write_json_atomic(path, record, indent=4)
        except (IOError, OSError) as exc:
            module.fail_json(msg="the change was applied, but writing the boot record %s failed: %s" % (path, exc),
                             **dict(result, boot_record_written=False))
    result["changed"] = True
    result["boot_record_written"] = True
    if module._diff:
        record_diff = {"before": before, "after": record,
                       "before_header": "%s (boot record)" % path, "after_header": "%s (boot record)" % path}
        result["diff"] = [diff for diff in (result.get("diff"), record_diff) if diff]
    result.update(boot_details(module, record))


# What node_plan replaces in a successful result (the MIG devices are then not read at all).
CONDENSED_KEYS = ("observed", "plan", "config")


def exit_with(module, result, read_devices):
    """Exit with the result and the MIG devices ``read_devices()`` returns; with node_plan, with the
    node plan in place of the reading, the plan and the config, and without reading the devices."""
    if module.params["node_plan"] is None:
        result["mig_devices"] = read_devices()
    else:
        result["node_plan"] = node_plan(result, **module.params["node_plan"])
        for key in CONDENSED_KEYS:
            result.pop(key, None)
    module.exit_json(**result)


def exit_unavailable(module, spec, reason):
    """O(driver_missing=report) on a node whose NVML cannot be opened: the document and the config name are
    checked, nothing is read or changed, and the result says why."""
    params = module.params
    try:
        name, entries = spec.select(params["config_name"])
        parse_devices_option(params["devices"])
    except SpecError as exc:
        module.fail_json(msg=str(exc))
    result = {
        "changed": False, "config_name": name, "nvml_unavailable": reason,
        "msg": "NVML cannot be opened yet (%s); nothing was read or changed" % reason,
        "plan": {"config": name, "changed": False, "unmatched_gpus": [], "gpus": []},
        "changed_gpus": [], "modes": [], "reset_required": False, "reboot_required": False,
        "config": {"version": "v1", "mig-configs": {name: [entry.to_dict() for entry in entries]}},
        "observed": {"driver_version": "", "cuda_version": "", "nvml_version": "", "gpus": []},
    }
    if params["boot_record"]:
        result.update(read_boot(module, params["boot_record"]))
    if params["boot_record_content"] is not None:
        # Nothing was applied: the record is left as it is.
        result["boot_record_written"] = False
    exit_with(module, result, lambda: [])


def run(module, nvml, spec):
    params = module.params
    try:
        name, entries = spec.select(params["config_name"])
        devices = parse_devices_option(params["devices"])
    except SpecError as exc:
        module.fail_json(msg=str(exc))
    try:
        reading = read_and_plan(nvml, name, entries, devices=devices, unmatched_gpus=params["unmatched_gpus"],
                                in_use=params["in_use"])
    except PlanError as exc:
        module.fail_json(msg="config %r cannot be applied; nothing was changed: %s" % (name, exc), problems=exc.problems)
    gpus, plan = reading.gpus, reading.plan
    if gpus:
        try:
            format_reset_command(params["reset_command"], gpus[0])
        except ValueError as exc:
            module.fail_json(msg=str(exc))
    for warning in plan.warnings:
        module.warn(warning)
    result = {"changed": plan.changed, "config_name": name, "plan": plan.to_dict(), "changed_gpus": [], "modes": [],
              "reset_required": False, "reboot_required": False,
              "config": {"version": "v1", "mig-configs": {name: [entry.to_dict() for entry in entries]}},
              "observed": reading.node.to_dict(), "nvml_unavailable": ""}
    if params["boot_record"]:
        result.update(read_boot(module, params["boot_record"]))
    if module._diff:
        result["diff"] = plan.diff()
    blockers = None
    if params["reset"]:
        blockers = reset_blockers(module.run_command, plan, params["reset_blocking_services"],
                                  params["reset_blocking_kernel_modules"], module.get_bin_path("lsmod"))
    if module.check_mode or not plan.changed:
        result["changed_gpus"] = [{"index": g.index, "uuid": g.uuid} for g in plan.gpus if g.changed]
        if blockers is not None:
            blockers.observe()
            result["reset_blockers"] = blockers.report()
        write_boot_record(module, result)
        exit_with(module, result, lambda: mig_devices(gpus))

    outcome = apply_reading(nvml, reading, entries, module.run_command,
                            params["reset_command"] if params["reset"] else None, blockers,
                            params["allow_pending"], devices=devices)
    failure, applied = outcome.failure, outcome.applied
    blocker_report = {"reset_blockers": outcome.blockers} if outcome.blockers is not None else {}
    if failure is not None:
        partial = failure.result
        module.fail_json(
            msg=str(failure),
            failed_gpu={"index": failure.index, "step": failure.step, "state": failure.state},
            changed=bool(partial and partial.changed_gpus),
            changed_gpus=partial.changed_gpus if partial else [],
            modes=[m.to_dict() for m in partial.modes] if partial else [],
            plan=result["plan"],
            **blocker_report
        )
    result.update(blocker_report)
    for message in applied.messages:
        module.warn(message)
    result.update(
        changed=applied.changed,
        changed_gpus=applied.changed_gpus,
        modes=[m.to_dict() for m in applied.modes],
        reset_required=applied.reset_required,
        reboot_required=applied.reboot_required,
    )
    write_boot_record(module, result)

    def read_devices():
        # Read again: the devices the change left. The change is done: a failed read says so.
        try:
            return mig_devices(nvml.read_node().gpus)
        except NvmlCallError as exc:
            module.fail_json(msg="the change was applied, but reading the GPUs back through NVML failed: %s" % exc,
                             **dict(result, mig_devices=[]))

    exit_with(module, result, read_devices)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "config": {"type": "raw"},
            "config_file": {"type": "path"},
            "remote_src": {"type": "bool", "default": False},
            "config_name": {"type": "str"},
            "devices": {"type": "raw", "default": "all"},
            "unmatched_gpus": {"type": "str", "default": "leave", "choices": ["leave", "fail"]},
            "in_use": {"type": "str", "default": "fail", "choices": ["fail", "ignore"]},
            "allow_pending": {"type": "bool", "default": False},
            "reset": {"type": "bool", "default": True},
            "reset_command": {"type": "list", "elements": "str", "default": list(DEFAULT_RESET_COMMAND)},
            "reset_blocking_services": {"type": "list", "elements": "str", "default": list(DEFAULT_BLOCKING_SERVICES)},
            "reset_blocking_kernel_modules": {"type": "list", "elements": "str", "default": list(DEFAULT_BLOCKING_KERNEL_MODULES)},
            "boot_record": {"type": "path"},
            "boot_record_content": {"type": "dict"},
            "node_plan": {"type": "dict", "options": NODE_PLAN_ARGUMENT_SPEC},
            "driver_missing": {"type": "str", "default": "fail", "choices": ["fail", "report"]},
        },
        mutually_exclusive=[("config", "config_file")],
        required_by={"boot_record_content": "boot_record"},
        supports_check_mode=True,
    )
    if module.params["boot_record_content"] is not None:
        problem = check_boot_record_content(module.params["boot_record_content"])
        if problem:
            module.fail_json(msg=problem)
    try:
        spec = load_document(module.params)
    except SpecError as exc:
        module.fail_json(msg=str(exc))
    if not HAS_PYNVML:
        if module.params["driver_missing"] == "report":
            exit_unavailable(module, spec, PYNVML_MISSING)
        module.fail_json(msg=missing_required_lib("nvidia-ml-py"), exception=str(PYNVML_IMPORT_ERROR))
    try:
        nvml = open_nvml()
    except NvmlUnavailable as exc:
        if module.params["driver_missing"] == "report":
            exit_unavailable(module, spec, str(exc))
        module.fail_json(msg="cannot open NVML (is the NVIDIA driver installed and loaded?): %s" % exc, nvml_unavailable=str(exc))
    except NvmlCallError as exc:
        module.fail_json(msg="cannot open NVML: %s" % exc)
    try:
        run(module, nvml, spec)
    except NvmlCallError as exc:
        module.fail_json(msg="reading the GPUs through NVML failed: %s" % exc, changed=False, changed_gpus=[])
    finally:
        nvml.close()


if __name__ == "__main__":
    main()
