# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection: no compatibility promise outside gpuops.nvidia.
"""What a rollout keeps of a node's reading and plan: the node plan.

mig_config computes it on the node (its ``node_plan`` option), so only these few hundred bytes
travel back to the controller rather than tens of kilobytes of reading; the mig filters
(mig_node_plan, mig_expected_resources, mig_layout_summary, mig_changing_devices) are thin
wrappers over the same functions.

``gpus`` is gpu_info's (or mig_config's ``observed``) ``gpus`` list and ``plan`` the plan's
``to_dict()`` form.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig import resources

# The options of what a node must advertise: mig_config's node_plan and the filters' keywords.
# An unknown strategy or replica count is not refused by the spec: node_plan() reports it in
# ``expected.errors``, where the caller refuses it naming its own setting.
NODE_PLAN_ARGUMENT_SPEC: Dict[str, Dict[str, Any]] = {
    "strategy": {"type": "str", "default": "none"},
    "time_slicing_replicas": {"type": "raw"},
    "time_slicing_rename_by_default": {"type": "bool", "default": False},
    "node": {"type": "str"},
    "labels": {"type": "str", "default": "essential", "choices": ["essential", "all"]},
}

# GFD labels whose values follow from names and counts alone. Memory, multiprocessor and engine
# labels come from the MIG devices' own NVML readings, which drift by a few MiB between drivers
# and placements, so by default the rollout does not wait on them.
ESSENTIAL_LABEL_SUFFIXES = (".count", ".product", ".replicas", ".sharing-strategy", "mig.strategy", "mig.capable")


def desired_layout(plan: Optional[Mapping[str, Any]]) -> Dict[int, Dict[str, Any]]:
    """The layout a plan leads to, for the GPUs it targets: ``{index: {mig_enabled, devices}}``."""
    layout: Dict[int, Dict[str, Any]] = {}
    for gpu in (plan or {}).get("gpus", []):
        if not gpu.get("targeted"):
            continue
        after = gpu.get("after") or {}
        enabled = bool(after.get("mig_enabled"))
        devices = {name: slot["count"] for name, slot in (after.get("layout") or {}).items()} if enabled else {}
        layout[int(gpu["index"])] = {"mig_enabled": enabled, "devices": devices}
    return layout


def expected_resources(
    gpus: Any,
    plan: Optional[Mapping[str, Any]] = None,
    strategy: str = "none",
    time_slicing_replicas: Any = None,
    time_slicing_rename_by_default: Any = False,
    node: Optional[str] = None,
    labels: str = "essential",
) -> Dict[str, Any]:
    """What the node advertises once the plan is applied (see resources.expected_resources).

    ``labels``: ``essential`` keeps the GFD labels that follow from names and counts, ``all``
    keeps every label the model predicts. Raises ValueError for a bad option.
    """
    if labels not in ("essential", "all"):
        raise ValueError("labels must be 'essential' or 'all', got %r" % (labels,))
    expected = resources.expected_resources(
        gpus,
        desired_layout(plan),
        strategy=strategy,
        time_slicing=resources.time_slicing_config(time_slicing_replicas, bool(time_slicing_rename_by_default)),
        node=node,
    )
    if labels == "essential":
        expected["labels"] = {k: v for k, v in expected["labels"].items() if k.endswith(ESSENTIAL_LABEL_SUFFIXES)}
    return expected


def _describe(layout: Mapping[str, Any]) -> str:
    if not layout.get("mig_enabled"):
        return "MIG off"
    devices = layout.get("devices") or {}
    if not devices:
        return "MIG on, no devices"
    return "+".join("%dx%s" % (count, name) for name, count in sorted(devices.items()) if count)


def layout_summary(gpus: Any, plan: Optional[Mapping[str, Any]] = None) -> str:
    """A one-line layout of the node (after the plan when one is given), identical GPUs grouped."""
    layout = resources.current_layout(gpus)
    layout.update(desired_layout(plan))
    groups: Dict[str, List[int]] = {}
    for index in sorted(layout):
        groups.setdefault(_describe(layout[index]), []).append(index)
    if not groups:
        return "no GPUs"
    return ", ".join(
        "%s on GPU %s" % (text, ",".join(str(i) for i in indexes)) if len(groups) > 1 else "%d GPU(s): %s" % (len(indexes), text)
        for text, indexes in groups.items()
    )


def changing_devices(gpus: Any, plan: Optional[Mapping[str, Any]]) -> List[str]:
    """UUIDs of the GPUs whose MIG mode changes and of the MIG devices the plan destroys.

    Pods bound to these devices must move; pods on the GPU instances the plan keeps stay.
    """
    by_index = {int(gpu["index"]): gpu for gpu in gpus or []}
    uuids: List[str] = []
    for gpu_plan in (plan or {}).get("gpus", []):
        if not gpu_plan.get("changed"):
            continue
        gpu = by_index.get(int(gpu_plan["index"]), {})
        instances = (gpu.get("mig") or {}).get("instances") or []
        if gpu_plan.get("mode_change") or gpu_plan.get("set_mode") is not None:
            uuids.append(gpu.get("uuid") or gpu_plan.get("uuid"))
            destroyed = {instance.get("gi_id") for instance in instances}
        else:
            destroyed = {instance.get("gi_id") for instance in gpu_plan.get("destroy") or []}
        for instance in instances:
            if instance.get("gi_id") in destroyed:
                uuids.extend(device["uuid"] for device in instance.get("devices") or [] if device.get("uuid"))
    return sorted({u for u in uuids if u})


def node_plan(result: Mapping[str, Any], *options: Any, **advertising: Any) -> Dict[str, Any]:
    """The node plan of a mig_config result (its ``observed`` reading and ``plan``), or of
    ``{"observed": <gpu_info result>}`` for a node without a config.

    ``options`` and ``advertising`` are the options of NODE_PLAN_ARGUMENT_SPEC, in expected_resources'
    order or by name. A setting nothing can advertise is reported in ``expected.errors``, with the
    node's other refusals, where the caller names the setting.
    """
    observed = result.get("observed") or {}
    gpus = observed.get("gpus") or []
    plan = result.get("plan")
    try:
        expected = expected_resources(gpus, plan, *options, **advertising)
    except ValueError as exc:
        expected = {"capacity": {}, "allocatable": {}, "labels": {}, "errors": [str(exc)], "warnings": []}
    condensed = {
        "driver_version": observed.get("driver_version") or "",
        "gpu_count": len(gpus),
        "changed": bool(result.get("changed")),
        "config": result.get("config"),
        "boot_record": result.get("boot_record"),
        "before": layout_summary(gpus),
        "after": layout_summary(gpus, plan),
        "expected": expected,
        "changing_devices": changing_devices(gpus, plan),
        # Why NVML could not be opened (no driver yet), '' when the GPUs were read.
        "nvml_unavailable": result.get("nvml_unavailable") or observed.get("nvml_unavailable") or "",
    }
    # What mig_config read with the boot record: the last boot-time apply, the installed files' digests,
    # whether the service's unit is enabled.
    for key in ("boot_status", "boot_files", "boot_unit_enabled"):
        if key in result:
            condensed[key] = result[key]
    return condensed
