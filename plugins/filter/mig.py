# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters that join a node's MIG plan (from gpuops.nvidia.mig_config) with its Kubernetes state.

They keep the rollout role declarative: each is a small pure function over gpu_info's ``gpus``,
the plan's ``to_dict()`` form and the Node object, documented in docs/rolling-reconfigure.md.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ansible.errors import AnsibleFilterError

from ansible_collections.gpuops.nvidia.plugins.module_utils import driver_upgrade as drivers
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig import node_plan as node_plans
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig import resources

DEPLOY_LABEL_PREFIX = "nvidia.com/gpu.deploy."
CONFIG_LABEL = "nvidia.com/mig.config"
STATE_LABEL = "nvidia.com/mig.config.state"
#: A node labelled with it (value "true") is kept out of every rollout: never fenced, drained or changed.
SKIP_LABEL = "gpuops.io/mig-reconfigure.skip"
#: Whether the node was cordoned before the rollout cordoned it (module_utils/k8s/rollout.py CORDON_RECORD).
CORDON_RECORD = "gpuops.io/mig-reconfigure.cordoned-before"


def mig_expected_resources(gpus: Any, plan: Optional[Mapping[str, Any]] = None, *options: Any, **named: Any) -> Dict[str, Any]:
    """What the node advertises once the plan is applied (see module_utils/mig/resources.py).

    The options, by position or name, are those of module_utils/mig/node_plan.py's
    expected_resources: strategy, time-slicing, node, and ``labels`` (``essential`` keeps the GFD
    labels that follow from names and counts, ``all`` keeps every label the model predicts).
    """
    try:
        return node_plans.expected_resources(gpus, plan, *options, **named)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(str(exc)) from exc


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


# The settings a rollout pass refuses, by the names users set, with what each accepts.
SETTING_RULES = (
    ("k8s_gpu_mig_strategy", "none, single or mixed", lambda value: value in ("none", "single", "mixed")),
    ("device_plugin_time_slicing_replicas", "null or an integer of 1 or more",
     lambda value: value is None or str(value) in ("", "None") or (str(value).isdigit() and int(value) >= 1)),
    ("gpu_stack", "standalone or operator", lambda value: value in ("standalone", "operator")),
    ("mig_reconfigure_evacuate_scope", "changed, gpu or all", lambda value: value in ("changed", "gpu", "all")),
)


def settings_refusal(settings: Mapping[str, Any]) -> str:
    """'' when the settings are valid, else a message naming each bad one with its value."""
    bad = ["%s=%s (%s)" % (name, settings[name], accepted) for name, accepted, valid in SETTING_RULES
           if name in settings and not valid(settings[name])]
    return "Invalid settings: %s." % ", ".join(bad) if bad else ""


def _enabled(value: Any) -> bool:
    """A boolean setting as users write it (true, "yes", "1", ...)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "on", "1", "y", "t")
    return bool(value)


def driver_refusal(settings: Mapping[str, Any], node_name: str, reason: str) -> str:
    """Why a node whose NVML cannot be opened (``reason``) must not go on, '' when the run installs its driver.

    With gpu_stack=standalone the nvidia_driver role installs it (unless nvidia_driver_install is false);
    with gpu_stack=operator the GPU Operator does when gpu_operator_driver_enabled is true. Nothing else
    installs a driver, and a run without one would wait for resources that never come.
    """
    stack = settings.get("gpu_stack", "standalone")
    if stack == "operator" and not _enabled(settings.get("gpu_operator_driver_enabled", False)):
        return ("Node %s has no usable NVIDIA driver (%s) and gpu_stack=operator with gpu_operator_driver_enabled=false "
                "installs none: set gpu_operator_driver_enabled=true to have the GPU Operator install it, or install "
                "the driver on the node first." % (node_name, reason))
    if stack == "standalone" and not _enabled(settings.get("nvidia_driver_install", True)):
        return ("Node %s has no usable NVIDIA driver (%s) and nvidia_driver_install=false installs none: set "
                "nvidia_driver_install=true, or install the driver on the node first." % (node_name, reason))
    return ""


def library_refusal(node_name: str, reason: str, rehearsal: bool) -> str:
    """Why a node whose Python lacks pynvml must not go on, '' in a rehearsal (which installs nothing)."""
    # Imported here, not at the top: the nvml module imports pynvml, which every templating worker
    # would load for each task that uses a filter of this file, though only a node without NVML needs it.
    from ansible_collections.gpuops.nvidia.plugins.module_utils.nvml import PYNVML_MISSING  # pylint: disable=import-outside-toplevel

    if rehearsal or not reason.startswith(PYNVML_MISSING):
        return ""
    return ("Node %s: %s in the Python Ansible uses on it (ansible_python_interpreter). The node_prepare role, the "
            "first play, installs the node's libraries (gpuops_node_prepare: true), or install requirements-node.txt "
            "into that Python." % (node_name, reason))


def mig_node_decision(node: Optional[Mapping[str, Any]], plan: Mapping[str, Any], config_name: Optional[str] = None,
                      taint_key: str = "gpuops.io/mig-reconfigure", node_name: Optional[str] = None,
                      host: Optional[str] = None, settings: Optional[Mapping[str, Any]] = None,
                      reboot_pending: bool = False, rehearsal: bool = False,
                      driver_target: Optional[Mapping[str, Any]] = None, include_unavailable: bool = False,
                      reboot_allowed: bool = False) -> Dict[str, Any]:
    """What a rollout pass decides about a node, from its Node object and its node plan (mig_node_plan).

    ``node``: None when the cluster has no such node. ``config_name``: the config the node must
    record in its labels, None when none is set. ``refusal`` says why the node must not be changed
    ('' when nothing stands in the way): bad ``settings`` (see SETTING_RULES), a node missing from
    the cluster, a layout the MIG strategy cannot advertise, or a node without a driver that the run
    would not install (see driver_refusal), or, but in a ``rehearsal`` (check mode), a node whose Python lacks
    pynvml (see library_refusal). ``reboot_pending``: the node waits for a reboot the rollout
    is to do (a driver installed in this run); the change then reboots it. ``plan_after_driver``: the
    node's NVML could not be opened (no driver yet), so it is planned again once the driver is in place.
    ``skipped``: the node is labelled SKIP_LABEL=true and is left alone (see skipped_decision).

    ``driver_target``: the driver the collection installs (module_utils/driver_upgrade.py). A node
    whose loaded driver is another gets ``driver_upgrade`` ``{from, to}``: the change drains it whole,
    installs, reboots (refused unless ``reboot_allowed``) and checks the loaded driver. Such a node
    cordoned by someone else or NotReady is skipped (unless ``include_unavailable``), saying why.
    ``driver_by_rollout``: the loaded driver is not the wanted one, so the driver play leaves the
    node's packages alone (the rollout changes them, or nothing does, for a skipped node).
    """
    settings = settings or {}
    node_name = node_name or ((node or {}).get("metadata") or {}).get("name") or ""
    refusal = settings_refusal(settings)
    if not refusal and node is None:
        refusal = "Node %s (host %s) was not found in the cluster." % (node_name, host or node_name)
    if not refusal and (plan.get("expected") or {}).get("errors"):
        strategy = settings.get("k8s_gpu_mig_strategy")
        refusal = "Node %s: config %s cannot be advertised%s: %s" % (
            node_name, config_name, "" if strategy is None else " with k8s_gpu_mig_strategy=%s" % strategy,
            "; ".join(plan["expected"]["errors"]))
    missing = plan.get("nvml_unavailable") or ""
    if not refusal and missing:
        refusal = library_refusal(node_name, missing, rehearsal) or driver_refusal(settings, node_name, missing)
    upgrade = None if missing else drivers.driver_upgrade(plan.get("driver_version"), driver_target)
    if not refusal and upgrade and not reboot_allowed and node is not None:
        refusal = ("Node %s: driver %s is loaded and %s is wanted; the upgrade reboots the node (drained), which "
                   "mig_allow_reboot=false does not allow. Set mig_allow_reboot=true, or keep the driver "
                   "(nvidia_driver_version/nvidia_driver_branch)." % (node_name, upgrade["from"], upgrade["to"]))
    node = node or {}
    metadata = node.get("metadata") or {}
    labels = metadata.get("labels") or {}
    if labels.get(SKIP_LABEL) == "true":
        return dict(skipped_decision(settings_refusal(settings), node_name), driver_by_rollout=bool(upgrade))
    held = drivers.held_back(node, taint_key, CORDON_RECORD, include_unavailable) if upgrade else ""
    if held:
        return dict(skipped_decision(settings_refusal(settings), node_name), driver_by_rollout=True, message=held)
    advertised_diff = mig_advertised_diff(node, plan.get("expected") or {})
    advertised_current = labels.get(DEPLOY_LABEL_PREFIX + "device-plugin") == "true" and not advertised_diff
    tainted = any((taint or {}).get("key") == taint_key for taint in (node.get("spec") or {}).get("taints") or [])
    layout_changes = bool(plan.get("changed"))
    return {
        "layout_changes": layout_changes,
        "advertised_diff": advertised_diff,
        "advertised_current": advertised_current,
        "tainted": tainted,
        "labels_current": config_name is None
        or (labels.get(CONFIG_LABEL) == config_name and labels.get(STATE_LABEL) == "success"),
        "reboot": bool(reboot_pending) or bool(upgrade),
        "disruptive": layout_changes or not advertised_current or tainted or bool(reboot_pending) or bool(missing) or bool(upgrade),
        "plan_after_driver": bool(missing),
        "driver_upgrade": upgrade,
        "driver_by_rollout": bool(upgrade),
        "refusal": refusal,
        "skipped": False,
    }


def skipped_decision(refusal: str = "", node_name: str = "") -> Dict[str, Any]:
    """The decision for a node labelled SKIP_LABEL=true: nothing about it changes, whatever it runs.

    Only bad settings refuse it (they refuse the whole run); what the node itself runs or lacks is
    not looked at, since nothing is done to it. ``message`` says why, for the rollout's summary.
    """
    return {
        "layout_changes": False,
        "advertised_diff": [],
        "advertised_current": True,
        "tainted": False,
        "labels_current": True,
        "reboot": False,
        "disruptive": False,
        "plan_after_driver": False,
        "driver_upgrade": None,
        "driver_by_rollout": False,
        "refusal": refusal,
        "skipped": True,
        "node": node_name,
        "message": "node %s is labelled %s=true: left out of the rollout" % (node_name, SKIP_LABEL),
    }


def driver_upgrade(loaded: Optional[str], target: Optional[Mapping[str, Any]]) -> Optional[Dict[str, str]]:
    """``{from, to}`` when the ``loaded`` driver is not the wanted one (``target``), else None (see
    module_utils/driver_upgrade.py); after the upgrade's reboot, None says the wanted driver loaded."""
    return drivers.driver_upgrade(loaded, target)


def mig_layout_summary(gpus: Any, plan: Optional[Mapping[str, Any]] = None) -> str:
    """A one-line layout of the node (after the plan when one is given), identical GPUs grouped."""
    return node_plans.layout_summary(gpus, plan)


def mig_changing_devices(gpus: Any, plan: Optional[Mapping[str, Any]]) -> List[str]:
    """UUIDs of the GPUs whose MIG mode changes and of the MIG devices the plan destroys.

    Pods bound to these devices must move; pods on the GPU instances the plan keeps stay.
    """
    return node_plans.changing_devices(gpus, plan)


def mig_node_plan(result: Mapping[str, Any], *options: Any, **advertising: Any) -> Dict[str, Any]:
    """What a rollout keeps of a node's reading and plan: a few hundred bytes instead of the whole result.

    ``result`` is a mig_config result (its ``observed`` reading and ``plan``), or ``{"observed":
    <gpu_info result>}`` for a node without a config; ``advertising`` are mig_expected_resources'
    options (strategy, time-slicing, node, labels). mig_config's ``node_plan`` option returns the
    same, computed on the node.
    """
    try:
        return node_plans.node_plan(result, *options, **advertising)
    except TypeError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    """Filters of the rolling MIG reconfiguration."""

    def filters(self):
        return {
            "mig_expected_resources": mig_expected_resources,
            "mig_advertised_diff": mig_advertised_diff,
            "mig_layout_summary": mig_layout_summary,
            "mig_changing_devices": mig_changing_devices,
            "mig_node_plan": mig_node_plan,
            "mig_node_decision": mig_node_decision,
            "driver_upgrade": driver_upgrade,
        }
