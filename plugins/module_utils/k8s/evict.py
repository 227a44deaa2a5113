# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""Evacuating pods from a node through the Eviction API.

Which pods (pure): DaemonSet and mirror pods never; of the rest, all of them, those that
request any ``nvidia.com/*`` resource, or those bound to given GPU or MIG devices. Which pod holds
which device comes from the node's kubelet (PodResources API, read on the node by
gpu_pod_devices); without that map every GPU pod counts as holding the devices, and says so.

How (I/O): one ``policy/v1`` Eviction per pod, each carrying the pod's uid as a
precondition. Refusals by a PodDisruptionBudget (429) are retried with backoff until the
eviction deadline. Only then, and only when forced with a stated reason, is a pod deleted.
Finally the loop waits until every evicted pod (by uid: a re-created pod is another pod) is
gone from the node. The node itself is never touched.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import (
    Deadline,
    K8sError,
    KubeClient,
    api_error_body,
    api_status,
    describe_error,
    is_retryable,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.node import read_node, validate_node_name
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.wait import ListWatch, wait_until

SCOPES = ("all", "gpu", "devices")
GPU_RESOURCE_PREFIX = "nvidia.com/"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

_PDB_NAME_IN_MESSAGE = re.compile(r"disruption budget ([a-z0-9]([-a-z0-9.]*[a-z0-9])?)")


# ---------------------------------------------------------------------------------------------
# Which pods (pure)


def pod_ref(pod: Mapping[str, Any]) -> dict[str, Any]:
    metadata = pod.get("metadata") or {}
    return {"namespace": metadata.get("namespace"), "name": metadata.get("name"), "uid": metadata.get("uid")}


def pod_label(pod: Mapping[str, Any]) -> str:
    metadata = pod.get("metadata") or {}
    return "{0}/{1}".format(metadata.get("namespace"), metadata.get("name"))


def is_mirror_pod(pod: Mapping[str, Any]) -> bool:
    return MIRROR_ANNOTATION in ((pod.get("metadata") or {}).get("annotations") or {})


def is_daemonset_pod(pod: Mapping[str, Any]) -> bool:
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("kind") == "DaemonSet" and owner.get("controller", True):
            return True
    return False


def _positive(quantity: Any) -> bool:
    text = str(quantity).strip()
    return bool(text) and text.lstrip("+") not in ("0", "0.0", "0m")


def gpu_resources(pod: Mapping[str, Any]) -> list[str]:
    """The ``nvidia.com/*`` resources any container (init containers too) requests or limits."""
    spec = pod.get("spec") or {}
    names = set()
    for container in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
        resources = container.get("resources") or {}
        for section in ("requests", "limits"):
            for name, quantity in (resources.get(section) or {}).items():
                if name.startswith(GPU_RESOURCE_PREFIX) and _positive(quantity):
                    names.add(name)
    return sorted(names)


def device_map(pod_devices: Any) -> dict[str, Any]:
    """The ``pod_devices`` option as ``{"available", "reason", "pods": {(namespace, name): entry}}``.

    It takes gpu_pod_devices' whole result (``available``, ``reason``, ``pods``) or its ``pods``
    list; None (not given) is a map that is unavailable for that reason.
    """
    if pod_devices is None:
        return {"available": False, "reason": "no pod_devices were given (read them on the node with gpuops.nvidia.gpu_pod_devices)",
                "pods": {}}
    if isinstance(pod_devices, Mapping):
        if "available" not in pod_devices:
            raise K8sError("pod_devices: a mapping must be the result of gpuops.nvidia.gpu_pod_devices (with available, reason "
                           "and pods), got keys {0}".format(", ".join(sorted(str(key) for key in pod_devices)) or "none"))
        if not pod_devices.get("available"):
            return {"available": False, "reason": str(pod_devices.get("reason") or "the node said the map is unavailable"), "pods": {}}
        entries = pod_devices.get("pods") or []
    else:
        entries = pod_devices
    if not isinstance(entries, (list, tuple)):
        raise K8sError("pod_devices: expected gpu_pod_devices' result or its pods list, got {0!r}".format(entries))
    pods: dict[tuple[str, str], dict[str, Any]] = {}
    for position, entry in enumerate(entries):
        where = "pod_devices.pods[{0}]".format(position)
        if not isinstance(entry, Mapping) or not entry.get("namespace") or not entry.get("name"):
            raise K8sError("{0}: each pod needs a namespace and a name, got {1!r}".format(where, entry))
        lists = {}
        for field in ("devices", "gpus"):
            value = entry.get(field) or []
            if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
                raise K8sError("{0}.{1}: expected a list of device UUIDs, got {2!r}".format(where, field, value))
            lists[field] = list(value)
        parents = entry.get("parents") or {}
        if not isinstance(parents, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in parents.items()):
            raise K8sError("{0}.parents: expected a map of MIG device UUID to GPU UUID, got {1!r}".format(where, parents))
        lists["parents"] = dict(parents)
        pods[(str(entry["namespace"]), str(entry["name"]))] = lists
    return {"available": True, "reason": None, "pods": pods}


def device_match(held: Mapping[str, Iterable[str]], wanted: Iterable[str], parents: Mapping[str, str] | None) -> list[str]:
    """The pod's devices that are wanted themselves or whose GPU is wanted, then its wanted GPUs
    (for a map given without the devices' ``parents``)."""
    wanted_set = set(wanted)
    parents = dict(held.get("parents") or {}, **(parents or {}))
    devices = list(held.get("devices") or [])
    matched = [device for device in devices if device in wanted_set or parents.get(device) in wanted_set]
    covered = {parents.get(device, device) for device in matched}
    matched.extend(gpu for gpu in held.get("gpus") or [] if gpu in wanted_set and gpu not in covered)
    return matched


def _device_target(pod: Mapping[str, Any], resources: list[str], wanted: list[str], devices: Mapping[str, Any],
                   parents: Mapping[str, str] | None) -> tuple[bool, str]:
    """(target?, reason) of a GPU pod under the ``devices`` scope."""
    requested = ", ".join(resources)
    if not devices["available"]:
        return True, "requests {0}; which devices it holds is unknown, so it counts as holding them: {1}".format(
            requested, devices["reason"])
    metadata = pod.get("metadata") or {}
    held = devices["pods"].get((metadata.get("namespace"), metadata.get("name")))
    if held is None:
        return True, ("requests {0} but the node's pod -> device map does not list it (started after the map was read?), "
                      "so it counts as holding the devices".format(requested))
    matched = device_match(held, wanted, parents)
    if matched:
        return True, "uses " + ", ".join(matched)
    return False, "uses other devices: " + (", ".join(held["devices"]) or "none")


def select_pods(
    pods: Iterable[Mapping[str, Any]],
    scope: str,
    device_uuids: Iterable[str] = (),
    held: Mapping[str, Any] | None = None,
    device_parents: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split pods into eviction targets and skipped pods, each with its reason.

    Terminal pods (Succeeded, Failed) are evicted like the rest, as ``kubectl drain`` does. Under
    the ``devices`` scope a GPU pod is a target when ``held`` (the node's map, from
    :func:`device_map`) says it holds a wanted device, when the map does not list it, and when
    there is no map: its devices are unknown, so it may hold one of them.
    """
    if scope not in SCOPES:
        raise K8sError("scope: {0!r} is not one of {1}".format(scope, ", ".join(SCOPES)))
    device_uuids = list(device_uuids)
    devices = held if held is not None else device_map(None)
    targets: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for pod in sorted(pods, key=pod_label):
        ref = pod_ref(pod)
        if is_mirror_pod(pod):
            skipped.append(dict(ref, reason="mirror pod (managed by the kubelet, cannot be evicted)"))
            continue
        if is_daemonset_pod(pod):
            skipped.append(dict(ref, reason="DaemonSet pod"))
            continue
        if scope == "all":
            targets.append(dict(ref, pod=pod, reason="on the node"))
            continue
        resources = gpu_resources(pod)
        if not resources:
            skipped.append(dict(ref, reason="requests no nvidia.com/* resource"))
            continue
        if scope == "gpu":
            targets.append(dict(ref, pod=pod, reason="requests " + ", ".join(resources)))
            continue
        is_target, reason = _device_target(pod, resources, device_uuids, devices, device_parents)
        if is_target:
            targets.append(dict(ref, pod=pod, reason=reason))
        else:
            skipped.append(dict(ref, reason=reason))
    return targets, skipped


# ---------------------------------------------------------------------------------------------
# PodDisruptionBudgets (pure)


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector against labels. A null selector matches nothing; an empty one everything."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.get("matchExpressions") or []:
        key = requirement.get("key")
        operator = requirement.get("operator")
        values = requirement.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def matching_pdbs(pod: Mapping[str, Any], pdbs: Iterable[Mapping[str, Any]]) -> list[str]:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    namespace = (pod.get("metadata") or {}).get("namespace")
    names = []
    for pdb in pdbs:
        metadata = pdb.get("metadata") or {}
        if metadata.get("namespace") not in (None, namespace):
            continue
        if selector_matches((pdb.get("spec") or {}).get("selector"), labels):
            names.append(metadata.get("name"))
    return sorted(name for name in names if name)


def is_disruption_budget_refusal(status: int | None, body: Mapping[str, Any]) -> bool:
    if status != 429:
        return False
    causes = (body.get("details") or {}).get("causes") or []
    if any(cause.get("reason") == "DisruptionBudget" for cause in causes):
        return True
    return "disruption budget" in str(body.get("message") or "").lower()


def pdb_names_from_refusal(body: Mapping[str, Any]) -> list[str]:
    texts = [str(cause.get("message") or "") for cause in (body.get("details") or {}).get("causes") or []]
    texts.append(str(body.get("message") or ""))
    names = set()
    for text in texts:
        for match in _PDB_NAME_IN_MESSAGE.finditer(text):
            names.add(match.group(1))
    return sorted(names)


# ---------------------------------------------------------------------------------------------
# Drain safety, as kubectl drain decides it (pure)

TERMINAL_PHASES = ("Succeeded", "Failed")


def is_terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def controller_of(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("controller"):
            return owner
    return None


def emptydir_volumes(pod: Mapping[str, Any]) -> list[str]:
    return sorted(str(volume.get("name")) for volume in (pod.get("spec") or {}).get("volumes") or []
                  if isinstance(volume, Mapping) and "emptyDir" in volume)


def drain_refusals(targets: Iterable[Mapping[str, Any]], delete_bare_pods: bool, delete_emptydir_data: bool) -> list[dict[str, Any]]:
    """The targets ``kubectl drain`` would refuse without ``--force`` / ``--delete-emptydir-data``.

    A pod without a controller (no ownerReference with ``controller: true``) is never re-created
    once evicted; the data of an ``emptyDir`` volume is deleted with its pod. A pod that already
    ended is no loss, as kubectl sees it too.
    """
    refused = []
    for target in targets:
        pod = target["pod"]
        if is_terminal(pod):
            continue
        problems = []
        if not delete_bare_pods and controller_of(pod) is None:
            problems.append("bare pod: no controller re-creates it (delete_bare_pods allows it)")
        volumes = emptydir_volumes(pod) if not delete_emptydir_data else []
        if volumes:
            problems.append("emptyDir volume(s) {0}: their data would be deleted (delete_emptydir_data allows it)".format(
                ", ".join(volumes)))
        if problems:
            refused.append(dict(_public(target), problems=problems, emptydir=volumes))
    return refused


def is_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(condition.get("type") == "Ready" and condition.get("status") == "True" for condition in status.get("conditions") or [])


def pdb_shortfalls(targets: Iterable[Mapping[str, Any]], pdbs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The budgets that block the node's drain: those that allow no disruption at all
    (``status.disruptionsAllowed`` 0) while some of their healthy pods are among the targets.

    A budget that allows at least one disruption lets the drain go on, one pod at a time as its
    replacements become ready elsewhere, as ``kubectl drain`` does: refusing it because more of its
    pods are on the node than it allows at once would refuse the common Deployment of several
    replicas behind a ``maxUnavailable: 1`` budget. Only healthy (Running and Ready) pods use up a
    budget, as the API server counts them; a budget whose status the disruption controller has not
    written yet is left to the API server.
    """
    targets = list(targets)
    shortfalls = []
    for pdb in pdbs:
        metadata = pdb.get("metadata") or {}
        status = pdb.get("status") or {}
        allowed = status.get("disruptionsAllowed")
        if not isinstance(allowed, int) or isinstance(allowed, bool):
            continue
        selector = (pdb.get("spec") or {}).get("selector")
        covered = [target for target in targets
                   if (target["pod"].get("metadata") or {}).get("namespace") == metadata.get("namespace")
                   and is_ready(target["pod"])
                   and selector_matches(selector, (target["pod"].get("metadata") or {}).get("labels") or {})]
        if covered and allowed < 1:
            shortfalls.append({
                "namespace": metadata.get("namespace"),
                "name": metadata.get("name"),
                "disruptions_allowed": allowed,
                "pods": sorted(pod_label(target["pod"]) for target in covered),
            })
    return sorted(shortfalls, key=lambda entry: (str(entry["namespace"]), str(entry["name"])))


def drain_safety_message(node: str, refused: list[dict[str, Any]], shortfalls: list[dict[str, Any]]) -> str:
    parts = []
    bare = ["{0}/{1}".format(entry["namespace"], entry["name"]) for entry in refused if entry["problems"][0].startswith("bare")]
    if bare:
        parts.append("{0} bare pod(s), which no controller re-creates (delete_bare_pods allows them): {1}".format(
            len(bare), ", ".join(bare)))
    local = ["{0}/{1} ({2})".format(entry["namespace"], entry["name"], ", ".join(entry["emptydir"])) for entry in refused if entry["emptydir"]]
    if local:
        parts.append("{0} pod(s) with emptyDir volumes, whose data would be deleted (delete_emptydir_data allows them): {1}".format(
            len(local), ", ".join(local)))
    parts.extend(
        "{0} blocked by PodDisruptionBudget {1}: it allows {2} disruption(s) and {3} of its pods are on the node".format(
            ", ".join(entry["pods"]), entry["name"], entry["disruptions_allowed"], len(entry["pods"]))
        for entry in shortfalls)
    return "nothing was evicted from node {0}: {1}".format(node, "; ".join(parts))


# ---------------------------------------------------------------------------------------------
# Eviction (I/O)


class EvacuationRequest:
    def __init__(
        self,
        node: str,
        scope: str = "gpu",
        device_uuids: Iterable[str] = (),
        pod_devices: Any = None,
        device_parents: Mapping[str, str] | None = None,
        pod_selectors: Iterable[str] = (),
        grace_period: int | None = None,
        timeout: float = 300,
        wait_timeout: float = 300,
        poll_interval: float = 2.0,
        force: bool = False,
        force_reason: str | None = None,
        delete_bare_pods: bool = False,
        delete_emptydir_data: bool = False,
    ) -> None:
        if scope not in SCOPES:
            raise K8sError("scope: {0!r} is not one of {1}".format(scope, ", ".join(SCOPES)))
        self.device_uuids = [str(uuid).strip() for uuid in device_uuids or [] if str(uuid).strip()]
        if scope == "devices" and not self.device_uuids:
            raise K8sError("device_uuids: at least one GPU or MIG device UUID is required when scope is devices")
        if scope != "devices" and self.device_uuids:
            raise K8sError("device_uuids: only used when scope is devices (scope is {0})".format(scope))
        if force and not (force_reason or "").strip():
            raise K8sError("force_reason: required when force is true; say why deleting pods past their disruption budget is acceptable")
        if grace_period is not None and grace_period < 0:
            raise K8sError("grace_period: must be 0 or more, got {0}".format(grace_period))
        for field, value in (("timeout", timeout), ("wait_timeout", wait_timeout)):
            if value < 0:
                raise K8sError("{0}: must be 0 or more seconds, got {1}".format(field, value))
        if poll_interval <= 0:
            raise K8sError("poll_interval: must be more than 0, got {0}".format(poll_interval))
        validate_node_name(node, "name")
        self.node = node
        self.delete_bare_pods = bool(delete_bare_pods)
        self.delete_emptydir_data = bool(delete_emptydir_data)
        self.scope = scope
        if scope != "devices" and pod_devices is not None:
            raise K8sError("pod_devices: only used when scope is devices (scope is {0})".format(scope))
        self.device_map = device_map(pod_devices) if scope == "devices" else None
        self.device_parents = dict(device_parents or {})
        self.label_selector = ",".join(selector for selector in pod_selectors or [] if selector) or None
        self.grace_period = grace_period
        self.timeout = timeout
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval
        self.force = force
        self.force_reason = force_reason

    @property
    def field_selector(self) -> str:
        return "spec.nodeName=" + self.node


def _public(entry: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {key: entry.get(key) for key in ("namespace", "name", "uid") + keys}


def _node_is_fenced(node: Mapping[str, Any]) -> bool:
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return True
    return any(taint.get("effect") in ("NoSchedule", "NoExecute") for taint in spec.get("taints") or [])


class _Evacuation:
    """One run of :func:`evacuate`; holds the bookkeeping that ends up in the result."""

    def __init__(self, client: KubeClient, request: EvacuationRequest) -> None:
        self.client = client
        self.request = request
        self.evicted: list[dict[str, Any]] = []
        self.forced: list[dict[str, Any]] = []
        self.blocked: dict[str, dict[str, Any]] = {}
        self.last_errors: dict[str, str] = {}
        self.pdb_cache: dict[str, list[dict[str, Any]]] = {}
        self.warnings: list[str] = []

    def pdbs(self, namespace: str) -> list[dict[str, Any]]:
        if namespace not in self.pdb_cache:
            try:
                self.pdb_cache[namespace] = self.client.list_pdbs(namespace)
            except Exception:  # noqa: BLE001 - naming the PDB is a courtesy; the refusal says enough
                self.pdb_cache[namespace] = []
        return self.pdb_cache[namespace]

    def try_evict(self, target: dict[str, Any]) -> tuple[str, BaseException | None]:
        """One eviction POST. Returns evicted, gone, blocked or retry (with the error)."""
        try:
            self.client.evict_pod(target["namespace"], target["name"], target["uid"], self.request.grace_period)
        except Exception as error:  # noqa: BLE001 - classified below
            status = api_status(error)
            if status == 404:
                return "gone", None
            body = api_error_body(error)
            if is_disruption_budget_refusal(status, body):
                names = sorted(set(pdb_names_from_refusal(body)) | set(matching_pdbs(target["pod"], self.pdbs(target["namespace"]))))
                self.blocked[target["uid"]] = dict(
                    _public(target), pdbs=names, message=str(body.get("message") or describe_error(error))
                )
                return "blocked", error
            if is_retryable(error):
                self.last_errors[target["uid"]] = describe_error(error)
                return "retry", error
            raise K8sError(
                "evicting pod {0} failed: {1}".format(pod_label(target["pod"]), describe_error(error)), status=status
            ) from error
        return "evicted", None

    def still_on_node(self, deadline: Deadline) -> set[str]:
        listing = self.client.retry.run(
            lambda: self.client.list_pods(field_selector=self.request.field_selector),
            deadline,
            "listing pods on node " + self.request.node,
        )
        return {pod_ref(pod)["uid"] for pod in listing.get("items") or []}

    def evict_all(self, targets: list[dict[str, Any]], deadline: Deadline) -> list[dict[str, Any]]:
        """Evict until every target is accepted or gone, or the deadline passes; returns the rest."""
        pending = {target["uid"]: target for target in targets}
        attempt = 0
        while pending:
            wait_error: BaseException | None = None
            for uid, target in list(pending.items()):
                outcome, error = self.try_evict(target)
                if outcome in ("evicted", "gone"):
                    self.evicted.append(_public(target, "reason"))
                    self.blocked.pop(uid, None)
                    self.last_errors.pop(uid, None)
                    del pending[uid]
                elif error is not None and wait_error is None:
                    wait_error = error
            if not pending or deadline.expired():
                break
            attempt += 1
            self.client.retry.wait(attempt, wait_error, deadline)
            # A pod that left the node meanwhile (evicted by an attempt whose answer was lost,
            # deleted by its owner) needs no more eviction.
            present = self.still_on_node(deadline)
            for uid in [uid for uid in pending if uid not in present]:
                self.evicted.append(_public(pending.pop(uid), "reason"))
                self.blocked.pop(uid, None)
                self.last_errors.pop(uid, None)
        return list(pending.values())

    def pdb_precheck(self, targets: list[dict[str, Any]], deadline: Deadline, wait: bool) -> list[dict[str, Any]]:
        """The budgets that block the drain (pdb_shortfalls), re-read until none does or the deadline
        passes (``wait``); an empty list means the evictions may start."""
        namespaces = sorted({str(target["namespace"]) for target in targets})
        attempt = 0
        while True:
            pdbs: list[dict[str, Any]] = []
            for namespace in namespaces:
                pdbs.extend(self.client.retry.run(lambda namespace=namespace: self.client.list_pdbs(namespace), deadline,
                                                  "listing the PodDisruptionBudgets of namespace " + namespace))
            shortfalls = pdb_shortfalls(targets, pdbs)
            if not shortfalls or not wait or deadline.expired():
                return shortfalls
            attempt += 1
            self.client.retry.wait(attempt, None, deadline)

    def force_delete(self, targets: list[dict[str, Any]], deadline: Deadline) -> None:
        for target in targets:
            def delete(target: dict[str, Any] = target) -> None:
                self.client.delete_pod(target["namespace"], target["name"], target["uid"], self.request.grace_period)

            try:
                self.client.retry.run(delete, deadline, "deleting pod " + pod_label(target["pod"]))
            except K8sError as error:
                if error.details.get("status") not in (404, 409):
                    raise
            self.forced.append(_public(target, "reason"))


def evacuate(client: KubeClient, request: EvacuationRequest, check_mode: bool) -> dict[str, Any]:
    """Evacuate the node as ``request`` says. Raises K8sError (with the partial result) on failure."""
    retry = client.retry
    eviction_deadline = retry.deadline(request.timeout)
    node = read_node(client, request.node, eviction_deadline)
    listing = retry.run(
        lambda: client.list_pods(field_selector=request.field_selector, label_selector=request.label_selector),
        eviction_deadline,
        "listing pods on node " + request.node,
    )
    pods = list(listing.get("items") or [])
    targets, skipped = select_pods(pods, request.scope, request.device_uuids, request.device_map, request.device_parents)
    before = sorted(pod_label(pod) for pod in pods)
    run = _Evacuation(client, request)
    if targets and not _node_is_fenced(node):
        run.warnings.append(
            "node {0} is schedulable and has no NoSchedule/NoExecute taint: evicted pods may be scheduled back onto it; "
            "cordon it first with gpuops.nvidia.k8s_node_taint (cordon: true)".format(request.node)
        )
    result: dict[str, Any] = {
        "node": request.node,
        "scope": request.scope,
        "skipped": skipped,
        "evicted": [],
        "forced": [],
        "blocked": [],
        "remaining": [],
        "refused": [],
        "pdb_shortfalls": [],
        "warnings": run.warnings,
    }
    if request.device_map is not None:
        result["device_map"] = {"available": request.device_map["available"], "reason": request.device_map["reason"]}
        if not request.device_map["available"] and targets:
            run.warnings.append("which pod holds which device is unknown ({0}): every GPU pod of node {1} is evicted, "
                                "{2} pod(s)".format(request.device_map["reason"], request.node, len(targets)))
    refused = drain_refusals(targets, request.delete_bare_pods, request.delete_emptydir_data)
    # With force, a budget that blocks is waited for, then its pods deleted, as before.
    shortfalls = [] if request.force or not targets else run.pdb_precheck(targets, eviction_deadline, wait=not check_mode and not refused)
    if refused or shortfalls:
        blocked = {}
        for entry in shortfalls:
            for target in targets:
                if pod_label(target["pod"]) in entry["pods"]:
                    item = blocked.setdefault(target["uid"], dict(_public(target), pdbs=[], message=""))
                    item["pdbs"].append(entry["name"])
                    item["message"] = "PodDisruptionBudget {0} allows {1} disruption(s) and {2} of its pods are on the node".format(
                        entry["name"], entry["disruptions_allowed"], len(entry["pods"]))
        message = drain_safety_message(request.node, refused, shortfalls)
        refused = [{key: value for key, value in entry.items() if key != "emptydir"} for entry in refused]
        result.update(changed=False, refused=refused, pdb_shortfalls=shortfalls,
                      blocked=sorted(blocked.values(), key=lambda entry: (entry["namespace"], entry["name"])),
                      remaining=[_public(target) for target in targets])
        raise K8sError(message, **result)
    if check_mode:
        would = [_public(target, "reason") for target in targets]
        removed = {pod_label(target["pod"]) for target in targets}
        result.update(changed=bool(targets), evicted=would, diff={"before": before, "after": [p for p in before if p not in removed]})
        return result

    unevicted = run.evict_all(targets, eviction_deadline)
    if unevicted and request.force:
        run.warnings.append("force: deleting {0} pod(s) that could not be evicted within {1:g}s ({2})".format(
            len(unevicted), request.timeout, request.force_reason))
        run.force_delete(unevicted, retry.deadline(request.wait_timeout))
        unevicted = []

    def fill_result(remaining: list[dict[str, Any]]) -> None:
        gone = {entry["uid"] for entry in run.evicted + run.forced} - {entry["uid"] for entry in remaining}
        result.update(
            changed=bool(run.evicted or run.forced),
            evicted=run.evicted,
            forced=run.forced,
            blocked=sorted(run.blocked.values(), key=lambda entry: (entry["namespace"], entry["name"])),
            remaining=remaining,
            diff={"before": before, "after": [p for p in before if p not in {
                "{0}/{1}".format(e["namespace"], e["name"]) for e in run.evicted + run.forced if e["uid"] in gone}]},
        )

    if unevicted:
        fill_result([_public(target) for target in unevicted])
        problems = []
        for target in unevicted:
            entry = run.blocked.get(target["uid"])
            if entry is not None:
                problems.append("{0}/{1} blocked by PodDisruptionBudget {2}: {3}".format(
                    entry["namespace"], entry["name"], ", ".join(entry["pdbs"]) or "(unknown)", entry["message"]))
            else:
                problems.append("{0}: {1}".format(pod_label(target["pod"]), run.last_errors.get(target["uid"], "not evicted")))
        raise K8sError(
            "could not evict {0} pod(s) from node {1} within {2:g}s: {3}. The node was left as it is "
            "(taints and cordon unchanged); {4} pod(s) were evicted.".format(
                len(unevicted), request.node, request.timeout, "; ".join(problems), len(run.evicted)),
            **result
        )

    watched = {entry["uid"] for entry in run.evicted + run.forced}
    if watched:
        outcome = wait_until(
            ListWatch(client, "pods", field_selector=request.field_selector),
            lambda objects: not watched & set(objects),
            retry.deadline(request.wait_timeout),
            retry,
            request.poll_interval,
        )
        remaining = [_public(entry) for entry in run.evicted + run.forced if entry["uid"] in outcome.objects]
        fill_result(remaining)
        if not outcome.met:
            raise K8sError(
                "{0} evicted pod(s) still on node {1} after {2:g}s: {3}".format(
                    len(remaining), request.node, request.wait_timeout,
                    ", ".join("{0}/{1}".format(entry["namespace"], entry["name"]) for entry in remaining)),
                **result
            )
    else:
        fill_result([])
    return result
