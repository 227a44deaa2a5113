# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters that join a node's MIG plan (from gpuops.nvidia.mig_config) with its Kubernetes state.

They keep the rollout role declarative: each is a small pure function over gpu_info's ``gpus``,
the plan's ``to_dict()`` form and the Node object, documented in docs/rolling-reconfigure.md.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from ansible.errors import AnsibleFilterError

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig import resources

DEPLOY_LABEL_PREFIX = "nvidia.com/gpu.deploy."
# GFD labels whose values follow from names and counts alone. Memory, multiprocessor and engine
# labels come from the MIG devices' own NVML readings, which drift by a few MiB between drivers
# and placements, so by default the rollout does not wait on them.
ESSENTIAL_LABEL_SUFFIXES = (".count", ".product", ".replicas", ".sharing-strategy", "mig.strategy", "mig.capable")
PAUSED = "paused-for-mig-change"


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


def mig_expected_resources(
    gpus: Any,
    plan: Optional[Mapping[str, Any]] = None,
    strategy: str = "none",
    time_slicing_replicas: Any = None,
    time_slicing_rename_by_default: Any = False,
    node: Optional[str] = None,
    labels: str = "essential",
) -> Dict[str, Any]:
    """What the node advertises once the plan is applied (see module_utils/mig/resources.py).

    ``labels``: ``essential`` keeps the GFD labels that follow from names and counts, ``all``
    keeps every label the model predicts.
    """
    if labels not in ("essential", "all"):
        raise AnsibleFilterError("labels must be 'essential' or 'all', got %r" % (labels,))
    try:
        expected = resources.expected_resources(
            gpus,
            desired_layout(plan),
            strategy=strategy,
            time_slicing=resources.time_slicing_config(time_slicing_replicas, bool(time_slicing_rename_by_default)),
            node=node,
        )
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc
    if labels == "essential":
        expected["labels"] = {k: v for k, v in expected["labels"].items() if k.endswith(ESSENTIAL_LABEL_SUFFIXES)}
    return expected


def mig_advertised_diff(node: Mapping[str, Any], expected: Mapping[str, Any]) -> List[str]:
    """How the node's nvidia.com/* allocatable and GFD labels differ from the expected ones."""
    status = node.get("status") or {}
    allocatable = status.get("allocatable") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    problems = []
    wanted = {name: str(value) for name, value in (expected.get("allocatable") or {}).items()}
    for name in sorted(set(wanted) | {n for n in allocatable if n.startswith(resources.RESOURCE_PREFIX)}):
        have = str(allocatable.get(name, "0"))
        want = wanted.get(name, "0")
        if have != want:
            problems.append("allocatable %s is %s, expected %s" % (name, have, want))
    for key, value in sorted((expected.get("labels") or {}).items()):
        if labels.get(key) != str(value):
            problems.append("label %s is %r, expected %r" % (key, labels.get(key), str(value)))
    return problems


def _describe(layout: Mapping[str, Any]) -> str:
    if not layout.get("mig_enabled"):
        return "MIG off"
    devices = layout.get("devices") or {}
    if not devices:
        return "MIG on, no devices"
    return "+".join("%dx%s" % (count, name) for name, count in sorted(devices.items()) if count)


def mig_layout_summary(gpus: Any, plan: Optional[Mapping[str, Any]] = None) -> str:
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


def mig_changing_devices(gpus: Any, plan: Optional[Mapping[str, Any]]) -> List[str]:
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


def mig_node_plan(result: Mapping[str, Any], **advertising: Any) -> Dict[str, Any]:
    """What a rollout keeps of a node's reading and plan: a few hundred bytes instead of the whole result.

    ``result`` is a mig_config result (its ``observed`` reading and ``plan``), or ``{"observed":
    <gpu_info result>}`` for a node without a config; ``advertising`` are mig_expected_resources'
    options (strategy, time-slicing, node, labels). Every fact a playbook keeps per host is
    handled by the controller on each later task of that host, so a fleet keeps this, not the
    per-GPU profile tables of the reading.
    """
    observed = result.get("observed") or {}
    gpus = observed.get("gpus") or []
    plan = result.get("plan")
    try:
        expected = mig_expected_resources(gpus, plan, **advertising)
    except AnsibleFilterError as exc:
        # A setting nothing can advertise is reported with the node's other refusals, where the
        # caller names the setting, rather than as a failure to template.
        expected = {"capacity": {}, "allocatable": {}, "labels": {}, "errors": [str(exc)], "warnings": []}
    return {
        "driver_version": observed.get("driver_version") or "",
        "gpu_count": len(gpus),
        "changed": bool(result.get("changed")),
        "config": result.get("config"),
        "boot_record": result.get("boot_record"),
        "before": mig_layout_summary(gpus),
        "after": mig_layout_summary(gpus, plan),
        "expected": expected,
        "changing_devices": mig_changing_devices(gpus, plan),
    }


def gpu_clients_running(node: Mapping[str, Any], clients: Iterable[str]) -> Dict[str, str]:
    """The ``nvidia.com/gpu.deploy.<client>`` labels of the node whose value is "true"."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    keys = [DEPLOY_LABEL_PREFIX + client for client in clients]
    return {key: labels[key] for key in keys if labels.get(key) == "true"}


def gpu_clients_paused(running: Mapping[str, str]) -> Dict[str, str]:
    """The labels that pause the given clients."""
    return {key: PAUSED for key in running}


def gpu_clients_to_resume(node: Mapping[str, Any], paused: Mapping[str, str], enable: Iterable[str]) -> Dict[str, str]:
    """Labels that restore the paused clients and switch on the ``enable`` clients a node lacks.

    A client labelled "false" by its owner stays off; a client paused by an earlier, interrupted
    run (still "paused-for-mig-change") is resumed too.
    """
    labels = (node.get("metadata") or {}).get("labels") or {}
    wanted = {key: "true" for key in paused}
    for client in enable:
        key = DEPLOY_LABEL_PREFIX + client
        if labels.get(key) in (None, PAUSED):
            wanted[key] = "true"
    for key, value in labels.items():
        if key.startswith(DEPLOY_LABEL_PREFIX) and value == PAUSED:
            wanted[key] = "true"
    return wanted


def batch_failures(steps: Iterable[Sequence[Any]], nodes: Iterable[str]) -> Dict[str, str]:
    """The first failure of each node in a batch's steps, as ``{node: "step: reason"}``.

    ``steps`` are ``[name, result]`` pairs in the order the steps ran, each result registered from
    a Kubernetes module run for the batch (``nodes``). A node failed a step when the step's
    per-node result says so, or when the step failed as a whole (no per-node results) while the
    node was still going. Skipped steps, and nodes a step left alone, did not fail.
    """
    failures: Dict[str, str] = {}
    nodes = list(nodes)
    for name, result in steps:
        if not result or result.get("skipped"):
            continue
        per_node = result.get("nodes")
        if per_node is None:
            # A run that returned no per-node results failed before it got to any node. The
            # registered result may say failed=false: the playbook's failed_when leaves failing to
            # the per-host check.
            for node in nodes:
                failures.setdefault(node, "{0}: {1}".format(name, result.get("msg") or "failed"))
            continue
        for node, outcome in per_node.items():
            if (outcome or {}).get("failed"):
                failures.setdefault(node, "{0}: {1}".format(name, outcome.get("msg") or "failed"))
    return failures


class FilterModule:
    """Filters of the rolling MIG reconfiguration."""

    def filters(self):
        return {
            "mig_expected_resources": mig_expected_resources,
            "mig_advertised_diff": mig_advertised_diff,
            "mig_layout_summary": mig_layout_summary,
            "mig_changing_devices": mig_changing_devices,
            "mig_node_plan": mig_node_plan,
            "gpu_clients_running": gpu_clients_running,
            "gpu_clients_paused": gpu_clients_paused,
            "gpu_clients_to_resume": gpu_clients_to_resume,
            "batch_failures": batch_failures,
        }
