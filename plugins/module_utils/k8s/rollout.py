# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""The Kubernetes side of a rolling GPU change, for a batch of nodes (gpuops.nvidia.k8s_node_rollout).

Each node of a batch goes through the steps of a phase on its own: a node that fails a step stops
there, with the step and the reason in its result, and the other nodes of the batch go on.

- ``fence``: begin (state ``pending``, the rollout's taint and, optionally, a cordon recorded on the
  node, in one write) → wait for jobs (optional: the pods a label selector picks end on their own,
  up to a timeout) → evacuate (the pods that use the changing devices, through the Eviction API)
  → pause the GPU clients (and wait until their pods have left).
- ``release``: resume the GPU clients (with the device plugin's per-node config) → wait until the
  node advertises what the plan says → validate (optional: a pod on the node that asks for each
  advertised resource must succeed) → finish (state ``success``, taint removed, the rollout's own
  cordon undone, in one write).
- ``fail``: the GPU clients paused by the rollout are resumed, state ``failed`` and the reason
  written, in one write; the taint (and cordon) stay. A driver upgrade under way is ``upgrade-failed``.

A node whose decision upgrades its driver (``driver_upgrade``) carries the driver upgrade's state
label (module_utils/driver_upgrade.py): ``draining`` from its fence, ``upgrade-done`` at its finish.

What each step writes is worked out by the pure functions of the first half from the node's plan
and decision (the mig_config node plan and the mig_node_decision filter's result) and the node as
read when the step runs. In check mode nothing is written and nothing is waited for: each step
reports what it would do, assuming the steps before it succeeded, and fails only where the real
run would (a pod that no controller re-creates, a PodDisruptionBudget that allows no disruption).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Mapping

from ansible_collections.gpuops.nvidia.plugins.module_utils import driver_upgrade as drivers
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.budget import Admission, admit, max_unavailable_count
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError, KubeClient
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.conditions import NodeConditions
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.evict import EvacuationRequest, evacuate
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.jobs import check_selector, jobs_deadline_seconds, jobs_message, wait_for_jobs
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.node import (
    apply_patch_locally,
    change_node,
    combine_patches,
    cordon_with_record,
    label_patch,
    label_view,
    normalize_metadata_changes,
    normalize_taints,
    taint_patch,
    taint_view,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.validation import (
    DEFAULT_COMMAND,
    DEFAULT_IMAGE,
    ValidationSettings,
    validate_nodes,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.wait import ListWatch, wait_for_nodes, wait_for_unmatched_pods, wait_until

STATE_LABEL = "nvidia.com/mig.config.state"
CONFIG_LABEL = "nvidia.com/mig.config"
MESSAGE_ANNOTATION = "gpuops.io/mig-reconfigure.message"
#: Whether the node was cordoned before the rollout cordoned it ("true"/"false"), written when it is fenced.
CORDON_RECORD = "gpuops.io/mig-reconfigure.cordoned-before"
DEPLOY_LABEL_PREFIX = "nvidia.com/gpu.deploy."
#: The value of a GPU client's deploy label while the rollout holds it paused.
PAUSED = "paused-for-mig-change"

PHASES = ("fence", "release", "fail")
SCOPE_SETTINGS = ("changed", "gpu", "all")

# The steps, by the names a failed node's message carries.
BEGIN = "Mark the node pending and taint it"
WAIT_FOR_JOBS = "Wait for the jobs on the node to finish"
EVACUATE = "Evict the pods that use the changing GPUs"
PAUSE = "Pause the GPU clients"
RESUME = "Resume the GPU clients"
WAIT = "Wait until the node advertises the new layout"
VALIDATE = "Run the validation pod on the node"
FINISH = "Mark the change as done and remove the taint"
FAIL = "Mark the node failed and resume its GPU clients"
BUDGET = "Wait until max_unavailable allows the node out of service"

#: Nodes of one batch worked on at once (each a thread); more queue.
WORKERS = 64


class RolloutSettings:
    """The options every node of a batch shares, validated before anything is read or written."""

    def __init__(
        self,
        taint_key: str = "gpuops.io/mig-reconfigure",
        taint_effect: str = "NoSchedule",
        cordon: bool = False,
        evacuate_scope: str = "changed",
        gpu_clients: Iterable[str] = (),
        gpu_clients_enable: Iterable[str] = (),
        plugin_config_label: str = "nvidia.com/device-plugin.config",
        reboot_allowed: bool = False,
        delete_bare_pods: bool = False,
        delete_emptydir_data: bool = False,
        grace_period: int | None = None,
        evacuate_timeout: float = 600,
        client_pod_timeout: float = 300,
        wait_timeout: float = 600,
        timeout: float = 60,
        poll_interval: float = 2.0,
        max_unavailable: Any = None,
        fleet: Iterable[str] = (),
        unavailable_timeout: float = 600,
        wait_for_jobs_selector: str | None = None,
        wait_for_jobs_timeout: float = 0,
        validation: bool = False,
        validation_image: str = DEFAULT_IMAGE,
        validation_command: Iterable[str] = DEFAULT_COMMAND,
        validation_namespace: str = "default",
        validation_timeout: float = 300,
    ) -> None:
        if evacuate_scope not in SCOPE_SETTINGS:
            raise K8sError("evacuate_scope: {0!r} is not one of {1}".format(evacuate_scope, ", ".join(SCOPE_SETTINGS)))
        for field, value in (("evacuate_timeout", evacuate_timeout), ("client_pod_timeout", client_pod_timeout),
                             ("wait_timeout", wait_timeout), ("timeout", timeout), ("unavailable_timeout", unavailable_timeout)):
            if value < 0:
                raise K8sError("{0}: must be 0 or more seconds, got {1}".format(field, value))
        # Validated here, so that a bad key fails the run before any node is written.
        normalize_taints([{"key": taint_key, "effect": taint_effect}], "present")
        self.taint_key = taint_key
        self.taint_effect = taint_effect
        self.cordon = bool(cordon)
        self.evacuate_scope = evacuate_scope
        self.gpu_clients = list(gpu_clients)
        self.gpu_clients_enable = list(gpu_clients_enable)
        self.plugin_config_label = plugin_config_label
        self.reboot_allowed = bool(reboot_allowed)
        self.delete_bare_pods = bool(delete_bare_pods)
        self.delete_emptydir_data = bool(delete_emptydir_data)
        self.grace_period = grace_period
        self.evacuate_timeout = evacuate_timeout
        self.client_pod_timeout = client_pod_timeout
        self.wait_timeout = wait_timeout
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.fleet = list(fleet)
        # Refused here, before any node is read or written.
        self.max_unavailable = None if max_unavailable in (None, "") else max_unavailable
        if self.max_unavailable is not None:
            if not self.fleet:
                raise K8sError("fleet: the GPU nodes are required with max_unavailable (it counts them)")
            max_unavailable_count(self.max_unavailable, len(self.fleet))
        self.unavailable_timeout = unavailable_timeout
        self.wait_for_jobs_selector = check_selector(wait_for_jobs_selector)
        jobs_deadline_seconds(wait_for_jobs_timeout)
        self.wait_for_jobs_timeout = wait_for_jobs_timeout
        self.validation = ValidationSettings(validation, validation_image, validation_command, validation_namespace,
                                             validation_timeout)


# ---------------------------------------------------------------------------------------------
# What each step does to a node (pure)


def _labels(node: Mapping[str, Any]) -> Mapping[str, str]:
    return (node.get("metadata") or {}).get("labels") or {}


def evacuation_scope(setting: str, decision: Mapping[str, Any]) -> str:
    """The evacuation scope of a node: ``changed`` (the pods on the changing devices), ``gpu`` or ``all``.

    A node the change reboots for sure (a driver that waits for a reboot) loses every pod: all move
    first. ``changed`` falls back to every GPU pod when the layout stays and what the node advertises
    must change: a new strategy or time-slicing renames the resources of every device.
    """
    if decision.get("reboot"):
        return "all"
    if setting != "changed" or decision.get("layout_changes") or decision.get("advertised_current"):
        return setting
    return "gpu"


def changes_mig_mode(plan: Mapping[str, Any]) -> bool:
    """Whether the plan changes a GPU's MIG mode (its changing devices hold a whole GPU, ``GPU-…``):
    the change then needs a GPU reset, or a reboot where the GPU cannot be reset."""
    return any(str(uuid).startswith("GPU-") for uuid in plan.get("changing_devices") or [])


def may_reboot(plan: Mapping[str, Any], decision: Mapping[str, Any], reboot_allowed: bool) -> bool:
    """Whether the node may be rebooted in this change: for sure when a driver waits for a reboot,
    and when reboots are allowed and a MIG mode changes (should the GPU not reset)."""
    return bool(decision.get("reboot")) or (reboot_allowed and changes_mig_mode(plan))


def evacuation(name: str, plan: Mapping[str, Any], decision: Mapping[str, Any], pod_devices: Any,
               settings: RolloutSettings) -> dict[str, Any] | None:
    """The node's evacuation (EvacuationRequest's arguments), None when no pod must move: the
    ``changed`` scope with no device that changes.

    Under ``changed`` the pods are selected by the node's pod → device map (``pod_devices``, what
    gpu_pod_devices read on the node); without one every GPU pod is a target, and the result says why.
    """
    scope = evacuation_scope(settings.evacuate_scope, decision)
    if scope != "changed":
        return {"node": name, "scope": scope}
    devices = list(plan.get("changing_devices") or [])
    if not devices:
        return None
    held = pod_devices if isinstance(pod_devices, Mapping) else {}
    return {"node": name, "scope": "devices", "device_uuids": devices,
            "pod_devices": {"available": bool(held.get("available")),
                            "reason": held.get("reason") or "the pod -> device map was not read on the node",
                            "pods": held.get("pods") or []}}


def running_clients(node: Mapping[str, Any], clients: Iterable[str]) -> dict[str, str]:
    """The ``nvidia.com/gpu.deploy.<client>`` labels of the node whose value is "true": the clients to pause.
    A client labelled "false" by its owner stays as it is."""
    labels = _labels(node)
    keys = [DEPLOY_LABEL_PREFIX + client for client in clients]
    return {key: labels[key] for key in keys if labels.get(key) == "true"}


def pause_labels(node: Mapping[str, Any], clients: Iterable[str]) -> dict[str, str]:
    """The labels that pause the node's running GPU clients."""
    return {key: PAUSED for key in running_clients(node, clients)}


def resume_labels(node: Mapping[str, Any], enable: Iterable[str] = (), plugin_config_label: str | None = None,
                  plugin_config: str | None = None) -> dict[str, str]:
    """The labels that resume every client the rollout paused (this run or an interrupted one) and
    switch on the ``enable`` clients the node has no label for (a first install).

    The device plugin's config label (``plugin_config``, when given) changes in the same write, while
    its daemons are still paused, so they start with the new settings on this node only.
    """
    labels = _labels(node)
    wanted = {key: "true" for key, value in labels.items() if key.startswith(DEPLOY_LABEL_PREFIX) and value == PAUSED}
    for client in enable:
        key = DEPLOY_LABEL_PREFIX + client
        if labels.get(key) in (None, PAUSED):
            wanted[key] = "true"
    if plugin_config_label and plugin_config not in (None, ""):
        wanted[plugin_config_label] = str(plugin_config)
    return wanted


def _config_labels(config_name: str | None) -> dict[str, str]:
    return {CONFIG_LABEL: config_name} if config_name else {}


def _driver_state(driver_upgrade: Any, state: str) -> dict[str, str]:
    """The driver upgrade's state label of a node whose decision upgrades its driver, else nothing."""
    return {drivers.DRIVER_STATE_LABEL: state} if driver_upgrade else {}


def begin_change(config_name: str | None, settings: RolloutSettings, driver_upgrade: Any = None) -> dict[str, Any]:
    """The write that fences the node: state ``pending``, the rollout's taint (its value the config
    name), the cordon when asked for, and no message left from an earlier failure. A node whose
    driver the change upgrades (``driver_upgrade``, from its decision) is ``draining`` it.

    One write, so the node is never seen ``pending`` without the taint that keeps new pods off the
    GPUs being changed, even when the controller stops between two steps.
    """
    return {
        "taints": [{"key": settings.taint_key, "value": config_name or "resources", "effect": settings.taint_effect}],
        "state": "present",
        # None: the cordon is left as it is. The record of whether the node was cordoned before is
        # written only with a cordon.
        "cordon": True if settings.cordon else None,
        "labels": dict(_config_labels(config_name), **{STATE_LABEL: "pending"},
                       **_driver_state(driver_upgrade, drivers.DRAINING)),
        "annotations": {MESSAGE_ANNOTATION: None},
    }


def finish_change(config_name: str | None, settings: RolloutSettings, driver_upgrade: Any = None) -> dict[str, Any]:
    """The write that ends the change: state ``success``, the rollout's taint removed and the node
    uncordoned only when its record says the rollout cordoned it (in this run or an interrupted one,
    also when cordoning is off now); a cordon or taint someone else set stays. A driver upgrade is
    ``upgrade-done``."""
    return {
        "taints": [{"key": settings.taint_key, "effect": settings.taint_effect}],
        "state": "absent",
        "cordon": False,
        "labels": dict(_config_labels(config_name), **{STATE_LABEL: "success"},
                       **_driver_state(driver_upgrade, drivers.UPGRADE_DONE)),
        "annotations": {MESSAGE_ANNOTATION: None},
    }


def wait_conditions(plan: Mapping[str, Any]) -> NodeConditions:
    """What the node advertises once the change is in place: the plan's expected allocatable and
    labels, and Ready."""
    expected = plan.get("expected") or {}
    return NodeConditions(allocatable=expected.get("allocatable") or {}, labels=expected.get("labels") or {}, ready=True)


def node_write(change: Mapping[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """The patch of a write (begin_change, finish_change, or labels and annotations alone) from the
    node as read; the cordon goes by the node's record (cordon_with_record)."""
    taints = normalize_taints(change.get("taints") or [], change.get("state", "present"))
    labels = normalize_metadata_changes("labels", change.get("labels") or {}, is_label=True)
    annotations = normalize_metadata_changes("annotations", change.get("annotations") or {}, is_label=False)

    def compute(node: dict[str, Any]) -> dict[str, Any] | None:
        cordon, recorded = cordon_with_record(node, change.get("cordon"), CORDON_RECORD)
        return combine_patches(taint_patch(node, taints, change.get("state", "present"), cordon),
                               label_patch(node, labels, {**annotations, **recorded}))
    return compute


def node_view(node: Mapping[str, Any]) -> dict[str, Any]:
    """What the rollout changes on a node, as its diff shows it."""
    view = taint_view(node)
    labels = label_view(node)
    view["labels"] = {key: value for key, value in labels["labels"].items()
                      if key in (STATE_LABEL, CONFIG_LABEL, drivers.DRIVER_STATE_LABEL) or key.startswith(DEPLOY_LABEL_PREFIX)}
    view["annotations"] = {key: value for key, value in labels["annotations"].items()
                           if key in (MESSAGE_ANNOTATION, CORDON_RECORD)}
    return view


# ---------------------------------------------------------------------------------------------
# The phases (I/O)


class NodeRun:
    """One node's way through a phase: its outcome, and the node as the last step saw it."""

    def __init__(self, entry: Mapping[str, Any]) -> None:
        self.name = entry["name"]
        self.entry = entry
        self.plan = entry.get("plan") or {}
        self.decision = entry.get("decision") or {}
        self.node: dict[str, Any] | None = None
        self.first: dict[str, Any] | None = None
        self.result: dict[str, Any] = {"changed": False, "failed": False, "step": None, "msg": "", "evicted": [],
                                       "would_evict": [], "warnings": []}

    @property
    def going(self) -> bool:
        return not self.result["failed"] and not self.result.get("deferred")

    def fail(self, step: str, error: K8sError) -> None:
        details = {key: value for key, value in error.details.items()
                   if key in ("evicted", "blocked", "refused", "pdb_shortfalls", "remaining", "device_map")}
        self.result.update(details)
        if "evicted" in details and not isinstance(details["evicted"], list):
            self.result["evicted"] = []
        self.result.update(failed=True, step=step, msg="{0}: {1}".format(step, error.msg))

    def write(self, client: KubeClient, change: Mapping[str, Any], settings: RolloutSettings, check_mode: bool) -> None:
        """One guarded write. In check mode it is applied to the node as the earlier steps left it,
        locally: a later step sees the node as the real run would."""
        compute = node_write(change)
        if check_mode and self.node is not None:
            patch = compute(self.node)
            after = self.node if patch is None else apply_patch_locally(self.node, patch)
            changed = patch is not None
        else:
            outcome = change_node(client, self.name, compute, client.retry.deadline(settings.timeout), check_mode)
            after, changed = outcome.after, outcome.patch is not None
            if self.first is None:
                self.first = outcome.before
        self.node = after
        self.result["changed"] = self.result["changed"] or changed

    def finish(self) -> dict[str, Any]:
        if self.first is not None and self.node is not None:
            self.result["diff"] = {"before": node_view(self.first), "after": node_view(self.node)}
        return self.result


def _each(runs: list[NodeRun], step: Callable[[NodeRun], None]) -> None:
    """Run ``step`` for every node still going, in parallel; a K8sError stops only its node."""
    going = [run for run in runs if run.going]
    if not going:
        return
    with ThreadPoolExecutor(max_workers=min(len(going), WORKERS)) as pool:
        for future in [pool.submit(step, run) for run in going]:
            future.result()


def _step(name: str, action: Callable[[NodeRun], None]) -> Callable[[NodeRun], None]:
    def guarded(run: NodeRun) -> None:
        try:
            action(run)
        except K8sError as error:
            run.fail(name, error)
    return guarded


def _evacuate(client: KubeClient, run: NodeRun, settings: RolloutSettings, check_mode: bool) -> None:
    arguments = evacuation(run.name, run.plan, run.decision, run.entry.get("pod_devices"), settings)
    if arguments is not None:
        outcome = evacuate(client, EvacuationRequest(
            grace_period=settings.grace_period, timeout=settings.evacuate_timeout, wait_timeout=settings.evacuate_timeout,
            poll_interval=settings.poll_interval, delete_bare_pods=settings.delete_bare_pods,
            delete_emptydir_data=settings.delete_emptydir_data, **arguments), check_mode)
        pods = outcome.get("evicted") or []
        run.result["evicted" if not check_mode else "would_evict"] = pods
        run.result["changed"] = run.result["changed"] or bool(pods)
        if "device_map" in outcome:
            run.result["device_map"] = outcome["device_map"]
        warnings = outcome.get("warnings") or []
        if check_mode:
            # The node a real run evicts from is fenced by then; in check mode it is not.
            warnings = [warning for warning in warnings if " is schedulable and has no " not in warning]
        run.result["warnings"].extend(warnings)
    if check_mode and may_reboot(run.plan, run.decision, settings.reboot_allowed) and (arguments or {}).get("scope") != "all":
        # The drain before a reboot (should the mode change need one) takes every pod the fence step
        # leaves on the node, DaemonSet and mirror pods excepted, as kubectl drain does.
        drain = evacuate(client, EvacuationRequest(
            node=run.name, scope="all", timeout=settings.evacuate_timeout, delete_bare_pods=settings.delete_bare_pods,
            delete_emptydir_data=settings.delete_emptydir_data), check_mode)
        moved = {(pod["namespace"], pod["name"]) for pod in run.result["would_evict"]}
        run.result["would_evict_before_reboot"] = [
            dict(pod, reason="before the reboot the MIG mode change needs where the GPU cannot be reset")
            for pod in drain.get("evicted") or [] if (pod["namespace"], pod["name"]) not in moved]


def _within_budget(client: KubeClient, runs: list[NodeRun], settings: RolloutSettings, check_mode: bool) -> None:
    """Keep the fleet within max_unavailable: the nodes of the batch the budget has no room for are
    deferred (left for a later run, nothing done to them); when it has room for none, wait until it
    has (nodes come back), up to unavailable_timeout, then fail them all saying why. In check mode
    nothing is waited for: the nodes that would wait are reported deferred."""
    fleet = set(settings.fleet)
    limit = max_unavailable_count(settings.max_unavailable, len(fleet))
    batch = [run.name for run in runs]
    found: list[Admission] = []

    def room(objects: dict[str, dict[str, Any]]) -> bool:
        nodes = [node for node in objects.values() if (node.get("metadata") or {}).get("name") in fleet]
        found[:] = [admit(batch, nodes, limit)]
        return bool(found[0].admitted) or not batch

    deadline = client.retry.deadline(0 if check_mode else settings.unavailable_timeout)
    outcome = wait_until(ListWatch(client, "nodes"), room, deadline, client.retry, settings.poll_interval)
    admission = found[0] if found else Admission([], batch, {}, limit)
    for run in runs:
        if run.name in admission.admitted:
            continue
        if outcome.met or check_mode:
            run.result.update(deferred=True, msg="left for a later run: " + admission.message())
        else:
            run.fail(BUDGET, K8sError("waited {0:g}s in vain: {1}".format(settings.unavailable_timeout, admission.message())))


def _wait_for_jobs(client: KubeClient, runs: list[NodeRun], settings: RolloutSettings, check_mode: bool) -> None:
    """The batch's fenced nodes wait, in one watch, for the pods the selector picks to end on their
    own; past the timeout the eviction takes them (as the GPU Operator's upgrade controller does),
    and the node's warnings say which. In check mode the result lists what would be waited for."""
    going = [run for run in runs if run.going]
    if not going or settings.wait_for_jobs_selector is None:
        return
    try:
        outcomes = wait_for_jobs(client, [run.name for run in going], settings.wait_for_jobs_selector,
                                 settings.wait_for_jobs_timeout, settings.poll_interval, check_mode)
    except K8sError as error:
        for run in going:
            run.fail(WAIT_FOR_JOBS, error)
        return
    for run in going:
        outcome = outcomes[run.name]
        run.result["would_wait_for_jobs" if check_mode else "waited_for_jobs"] = outcome["waited_for"]
        if outcome["timed_out"]:
            run.result["jobs_left"] = outcome["left"]
            run.result["warnings"].append(jobs_message(run.name, outcome["left"], settings.wait_for_jobs_timeout))


def _validate(client: KubeClient, runs: list[NodeRun], settings: RolloutSettings, check_mode: bool) -> None:
    """One validation pod per node still going, waited for together; a pod that did not succeed
    fails its node (it stays fenced). In check mode the result names the pod that would run."""
    going = [run for run in runs if run.going]
    if not going or not settings.validation.enabled:
        return
    advertised = {run.name: (run.plan.get("expected") or {}).get("allocatable") or {} for run in going}
    try:
        outcomes = validate_nodes(client, advertised, settings.validation, settings.taint_key, settings.timeout,
                                  settings.poll_interval, check_mode)
    except K8sError as error:
        for run in going:
            run.fail(VALIDATE, error)
        return
    for run in going:
        outcome = outcomes[run.name]
        if check_mode:
            # Nothing ran: what would run, not an outcome.
            run.result["would_validate"] = {key: outcome[key] for key in ("pod", "resources", "msg")}
            continue
        run.result["validation"] = outcome
        if not outcome["passed"]:
            run.fail(VALIDATE, K8sError(outcome["msg"]))


def fence(client: KubeClient, entries: list[Mapping[str, Any]], settings: RolloutSettings, check_mode: bool) -> dict[str, dict[str, Any]]:
    """Begin, wait for jobs, evacuate and pause every node of ``entries`` the unavailability budget admits;
    each node's result."""
    runs = [NodeRun(entry) for entry in entries]
    if settings.max_unavailable is not None and runs:
        _within_budget(client, runs, settings, check_mode)

    def begin(run: NodeRun) -> None:
        run.write(client, begin_change(run.entry.get("config_name"), settings, run.decision.get("driver_upgrade")),
                  settings, check_mode)

    def pause(run: NodeRun) -> None:
        labels = pause_labels(run.node or {}, settings.gpu_clients)
        run.result["paused"] = sorted(labels)
        if not labels:
            return
        run.write(client, {"labels": labels}, settings, check_mode)
        if not check_mode:
            run.result["waited_for"] = wait_for_unmatched_pods(client, run.name, _labels(run.node or {}),
                                                               settings.client_pod_timeout, settings.poll_interval)

    _each(runs, _step(BEGIN, begin))
    _wait_for_jobs(client, runs, settings, check_mode)
    _each(runs, _step(EVACUATE, lambda run: _evacuate(client, run, settings, check_mode)))
    _each(runs, _step(PAUSE, pause))
    return {run.name: run.finish() for run in runs}


def release(client: KubeClient, entries: list[Mapping[str, Any]], settings: RolloutSettings, check_mode: bool) -> dict[str, dict[str, Any]]:
    """Resume, wait for, validate and finish every node of ``entries``; each node's result. The wait is one
    list and watch of the nodes for the whole batch; in check mode it is not done (the GPUs did
    not change, so the node would never advertise the new layout)."""
    runs = [NodeRun(entry) for entry in entries]

    def resume(run: NodeRun) -> None:
        def compute(node: dict[str, Any]) -> dict[str, Any] | None:
            labels = resume_labels(node, settings.gpu_clients_enable, settings.plugin_config_label, run.entry.get("plugin_config"))
            return node_write({"labels": labels})(node)
        outcome = change_node(client, run.name, compute, client.retry.deadline(settings.timeout), check_mode)
        run.first, run.node = outcome.before, outcome.after
        run.result["changed"] = outcome.patch is not None
        run.result["resumed"] = sorted(key for key, value in label_view(outcome.after)["labels"].items()
                                       if key.startswith(DEPLOY_LABEL_PREFIX) and value == "true"
                                       and _labels(outcome.before).get(key) != "true")

    def finish(run: NodeRun) -> None:
        # A node whose upgrade failed in an earlier run and whose driver is now the wanted one (the
        # failure came after the reboot) finishes its upgrade with this change.
        upgrade = run.decision.get("driver_upgrade") or drivers.unfinished(_labels(run.node or {}))
        run.write(client, finish_change(run.entry.get("config_name"), settings, upgrade), settings, check_mode)

    _each(runs, _step(RESUME, resume))
    waiting = [run for run in runs if run.going]
    if waiting and not check_mode:
        requests = [{"name": run.name, "plan": run.plan, "timeout": settings.wait_timeout, "poll_interval": settings.poll_interval}
                    for run in waiting]
        try:
            outcomes = wait_for_nodes(client, requests, lambda request: wait_conditions(request["plan"]))
        except K8sError as error:
            outcomes = {run.name: error for run in waiting}
        for run in waiting:
            outcome = outcomes[run.name]
            if isinstance(outcome, K8sError):
                run.fail(WAIT, outcome)
            else:
                run.result["matched"] = outcome.get("matched", [])
    _validate(client, runs, settings, check_mode)
    _each(runs, _step(FINISH, finish))
    return {run.name: run.finish() for run in runs}


def fail(client: KubeClient, entries: list[Mapping[str, Any]], settings: RolloutSettings, check_mode: bool) -> dict[str, dict[str, Any]]:
    """Mark every node of ``entries`` failed with its ``reason``, resuming the GPU clients the
    rollout paused, in one write: a node never sits paused advertising 0 GPUs. The taint and the
    cordon stay, so nothing new lands on half-changed GPUs."""
    runs = [NodeRun(entry) for entry in entries]

    def mark(run: NodeRun) -> None:
        def compute(node: dict[str, Any]) -> dict[str, Any] | None:
            labels = dict(resume_labels(node), **{STATE_LABEL: "failed"}, **drivers.failed_state(_labels(node)))
            message = str(run.entry.get("reason") or "failed")[:4000]
            return node_write({"labels": labels, "annotations": {MESSAGE_ANNOTATION: message}})(node)
        outcome = change_node(client, run.name, compute, client.retry.deadline(settings.timeout), check_mode)
        run.first, run.node = outcome.before, outcome.after
        run.result["changed"] = outcome.patch is not None

    _each(runs, _step(FAIL, mark))
    return {run.name: run.finish() for run in runs}


PHASE_ACTIONS = {"fence": fence, "release": release, "fail": fail}


def run_phase(client: KubeClient, phase: str, entries: list[Mapping[str, Any]], settings: RolloutSettings,
              check_mode: bool) -> dict[str, dict[str, Any]]:
    """Each node's result of ``phase`` (one of PHASES) for the nodes of ``entries``."""
    if phase not in PHASE_ACTIONS:
        raise K8sError("phase: {0!r} is not one of {1}".format(phase, ", ".join(PHASES)))
    return PHASE_ACTIONS[phase](client, entries, settings, check_mode)
