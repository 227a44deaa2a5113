# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""The one wait loop of the collection: list, then watch from that list's resourceVersion.

The loop keeps a local copy of the selected objects (keyed by uid), applies each watch event
to it and re-evaluates the caller's predicate. When the watch cannot be opened or breaks, it
falls back to polling: list again after ``poll_interval``. Everything ends at the deadline.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.conditions import (
    NodeConditions,
    all_met,
    evaluate,
    node_summary,
    unmet_summary,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import (
    Deadline,
    K8sError,
    KubeClient,
    RetryPolicy,
    api_status,
    is_retryable,
)

# How long one watch request may stay open before it is renewed by a fresh list. Bounding it
# means that even a watch which silently misses events is corrected by the next list.
WATCH_WINDOW_SECONDS = 60


def object_key(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    uid = metadata.get("uid")
    if uid:
        return str(uid)
    return "{0}/{1}".format(metadata.get("namespace") or "", metadata.get("name") or "")


def index_objects(items: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {object_key(item): dict(item) for item in items}


def apply_event(objects: dict[str, dict[str, Any]], event: Mapping[str, Any]) -> bool:
    """Fold one watch event into ``objects``. Returns False for events that end the watch."""
    kind = event.get("type")
    obj = event.get("object") or {}
    if kind in ("ADDED", "MODIFIED"):
        objects[object_key(obj)] = dict(obj)
    elif kind == "DELETED":
        objects.pop(object_key(obj), None)
    elif kind == "ERROR":
        # Typically 410 Gone: our resourceVersion is too old. A fresh list recovers.
        return False
    return True


class ListWatch:
    """A selection of pods or nodes that can be listed and watched."""

    def __init__(self, client: KubeClient, kind: str, field_selector: str | None = None, label_selector: str | None = None) -> None:
        if kind not in ("pods", "nodes"):
            raise ValueError("kind must be pods or nodes")
        self.client = client
        self.kind = kind
        self.field_selector = field_selector
        self.label_selector = label_selector

    def describe(self) -> str:
        selectors = [s for s in (self.field_selector, self.label_selector) if s]
        return "{0}{1}".format(self.kind, " ({0})".format(", ".join(selectors)) if selectors else "")

    def list(self) -> tuple[list[dict[str, Any]], str | None]:
        if self.kind == "pods":
            result = self.client.list_pods(field_selector=self.field_selector, label_selector=self.label_selector)
        else:
            result = self.client.list_nodes(field_selector=self.field_selector)
        return list(result.get("items") or []), (result.get("metadata") or {}).get("resourceVersion")

    def watch(self, resource_version: str | None, timeout_seconds: int) -> Iterator[dict[str, Any]]:
        return self.client.watch(
            self.kind, resource_version, timeout_seconds, field_selector=self.field_selector, label_selector=self.label_selector
        )


class WaitResult:
    def __init__(self, met: bool, objects: dict[str, dict[str, Any]], lists: int, watches: int, watch_failures: int) -> None:
        self.met = met
        self.objects = objects
        self.lists = lists
        self.watches = watches
        self.watch_failures = watch_failures


def wait_until(
    source: Any,
    satisfied: Callable[[dict[str, dict[str, Any]]], bool],
    deadline: Deadline,
    retry: RetryPolicy,
    poll_interval: float,
    watch_window: int = WATCH_WINDOW_SECONDS,
) -> WaitResult:
    """Wait until ``satisfied(objects)`` holds for the objects ``source`` selects.

    ``source`` offers ``list() -> (items, resourceVersion)``, ``watch(resourceVersion,
    timeout_seconds) -> events`` and ``describe()``. Returns when the predicate holds or the
    deadline passes (``met`` tells which), never by sleeping a fixed time: between lists it
    either follows a watch or, when no watch works, waits ``poll_interval``.
    """
    lists = watches = watch_failures = 0
    use_watch = True
    objects: dict[str, dict[str, Any]] = {}
    while True:
        items, resource_version = retry.run(source.list, deadline, "listing " + source.describe())
        lists += 1
        objects = index_objects(items)
        if satisfied(objects):
            return WaitResult(True, objects, lists, watches, watch_failures)
        if deadline.expired():
            return WaitResult(False, objects, lists, watches, watch_failures)

        events_seen = 0
        if use_watch:
            watches += 1
            # A deadline may be infinite (a timeout of 0 that means forever): the window bounds it.
            timeout_seconds = max(1, int(min(watch_window, deadline.remaining()) + 0.999))
            try:
                for event in source.watch(resource_version, timeout_seconds):
                    events_seen += 1
                    if not apply_event(objects, event):
                        events_seen = 0
                        break
                    if satisfied(objects):
                        return WaitResult(True, objects, lists, watches, watch_failures)
                    if deadline.expired():
                        return WaitResult(False, objects, lists, watches, watch_failures)
            except K8sError:
                raise
            except Exception as error:  # noqa: BLE001 - a broken watch falls back to polling
                watch_failures += 1
                events_seen = 0
                if api_status(error) is not None and not is_retryable(error):
                    # The server refuses watches (forbidden, unsupported): poll from now on.
                    use_watch = False
        if deadline.expired():
            # One last list so that the caller reports what is true now, not a stale copy.
            try:
                items = retry.run(source.list, deadline, "listing " + source.describe())[0]
            except K8sError:
                return WaitResult(False, objects, lists, watches, watch_failures)
            lists += 1
            objects = index_objects(items)
            return WaitResult(satisfied(objects), objects, lists, watches, watch_failures)
        if not events_seen:
            retry.sleep(min(poll_interval, deadline.remaining()))


NO_CONDITION = "no condition given: set at least one of allocatable, capacity, labels, ready, unschedulable, jmespath"


def check_wait_times(timeout: float, poll_interval: float) -> None:
    if timeout < 0:
        raise K8sError("timeout: must be 0 or more seconds, got {0}".format(timeout))
    if poll_interval <= 0:
        raise K8sError("poll_interval: must be more than 0, got {0}".format(poll_interval))


def _node_result(node: Mapping[str, Any] | None, conditions: NodeConditions) -> dict[str, Any]:
    """What k8s_node_wait reports for one node: its summary and each condition's outcome."""
    results = evaluate(node, conditions)
    return {
        "changed": False,
        "node": node_summary(node),
        "conditions": results,
        "matched": [entry["condition"] for entry in results if entry["met"]],
    }


def _timed_out(name: str, timeout: float, result: dict[str, Any]) -> K8sError:
    return K8sError("node {0} did not meet the conditions within {1:g}s: {2}".format(name, timeout, unmet_summary(result["conditions"])), **result)


def wait_for_node(client: KubeClient, name: str, conditions: NodeConditions, timeout: float, poll_interval: float) -> dict[str, Any]:
    """Wait until node ``name`` meets ``conditions``; the result of k8s_node_wait."""
    if conditions.is_empty():
        raise K8sError(NO_CONDITION)
    check_wait_times(timeout, poll_interval)

    def the_node(objects: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        for obj in objects.values():
            if (obj.get("metadata") or {}).get("name") == name:
                return obj
        return None

    outcome = wait_until(
        ListWatch(client, "nodes", field_selector="metadata.name=" + name),
        lambda objects: all_met(evaluate(the_node(objects), conditions)),
        client.retry.deadline(timeout),
        client.retry,
        poll_interval,
    )
    result = _node_result(the_node(outcome.objects), conditions)
    if not outcome.met:
        raise _timed_out(name, timeout, result)
    return result


def wait_for_nodes(client: KubeClient, requests: list[Mapping[str, Any]], conditions: Callable[[Mapping[str, Any]], NodeConditions]) -> dict[str, Any]:
    """k8s_node_wait for a batch: one list and watch of the nodes for all of them.

    ``requests`` are the per-node parameters (``name``, ``timeout``, ``poll_interval``, the
    conditions); the batch shares the longest timeout of its nodes. A node is done once it has
    met its conditions; its result is the one k8s_node_wait returns for it, or the K8sError it
    would have raised.
    """
    wanted: dict[str, NodeConditions] = {}
    outcomes: dict[str, Any] = {}
    for request in requests:
        wanted[request["name"]] = conditions(request)
        if wanted[request["name"]].is_empty():
            outcomes[request["name"]] = K8sError(NO_CONDITION)
    timeout = max(request["timeout"] for request in requests)
    poll_interval = min(request["poll_interval"] for request in requests)
    check_wait_times(timeout, poll_interval)
    met: dict[str, dict[str, Any]] = {}

    def by_name(objects: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {(obj.get("metadata") or {}).get("name"): obj for obj in objects.values()}

    def all_done(objects: dict[str, dict[str, Any]]) -> bool:
        nodes = by_name(objects)
        for name, node_conditions in wanted.items():
            if name not in met and name not in outcomes and all_met(evaluate(nodes.get(name), node_conditions)):
                met[name] = nodes[name]
        return len(met) + len(outcomes) == len(wanted)

    outcome = wait_until(ListWatch(client, "nodes"), all_done, client.retry.deadline(timeout), client.retry, poll_interval)
    last = by_name(outcome.objects)
    for name, node_conditions in wanted.items():
        if name in outcomes:
            continue
        result = _node_result(met.get(name, last.get(name)), node_conditions)
        outcomes[name] = result if name in met else _timed_out(name, timeout, result)
    return outcomes


def unmatched_pods(pods: Iterable[Mapping[str, Any]], labels: Mapping[str, Any]) -> list[str]:
    """The running pods whose ``spec.nodeSelector`` a node with ``labels`` no longer satisfies
    (``namespace/name``): a DaemonSet's pods that its controller is about to remove."""
    found = []
    for pod in pods:
        if ((pod.get("status") or {}).get("phase")) in ("Succeeded", "Failed"):
            continue
        selector = ((pod.get("spec") or {}).get("nodeSelector")) or {}
        if any(labels.get(key) != value for key, value in selector.items()):
            metadata = pod.get("metadata") or {}
            found.append("{0}/{1}".format(metadata.get("namespace"), metadata.get("name")))
    return sorted(found)


def wait_for_unmatched_pods(client: KubeClient, name: str, labels: Mapping[str, Any], timeout: float, poll_interval: float = 2.0) -> list[str]:
    """Wait until no pod on node ``name`` has a node selector that ``labels`` do not satisfy.

    Returns the pods that were waited for; raises K8sError naming those still there at the deadline.
    """
    first: list[list[str]] = []

    def none_left(objects: dict[str, dict[str, Any]]) -> bool:
        left = unmatched_pods(objects.values(), labels)
        if not first:
            first.append(left)
        return not left

    outcome = wait_until(ListWatch(client, "pods", field_selector="spec.nodeName=" + name), none_left,
                         client.retry.deadline(timeout), client.retry, poll_interval)
    if not outcome.met:
        left = unmatched_pods(outcome.objects.values(), labels)
        raise K8sError("node {0}: pods whose node selector the new labels no longer match were still there after {1:g}s: {2}".format(
            name, timeout, ", ".join(left)), waited_for=first[0] if first else [], pods_left=left)
    return first[0] if first else []
