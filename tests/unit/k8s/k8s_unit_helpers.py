# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fakes for the k8s module_utils unit tests: an injected clock and an in-memory API with KubeClient's surface."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any, Callable

COLLECTIONS = Path(__file__).resolve().parents[3] / ".collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

from kubernetes.client.exceptions import ApiException  # noqa: E402

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import RetryPolicy  # noqa: E402
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.node import merge_patch  # noqa: E402


class FakeClock:
    """Monotonic time that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def api_error(status: int, message: str = "", reason: str = "", headers: dict[str, str] | None = None,
              causes: list[dict[str, Any]] | None = None, retry_after: int | None = None) -> ApiException:
    error = ApiException(status=status, reason=reason or "Error")
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": status}
    details: dict[str, Any] = {}
    if causes:
        details["causes"] = causes
    if retry_after is not None:
        details["retryAfterSeconds"] = retry_after
    if details:
        body["details"] = details
    error.body = json.dumps(body)
    error.headers = headers or {}
    return error


def pdb_refusal(pdb: str = "web") -> ApiException:
    return api_error(
        429,
        "Cannot evict pod as it would violate the pod's disruption budget.",
        "TooManyRequests",
        causes=[{"reason": "DisruptionBudget", "message": "The disruption budget {0} needs 1 healthy pods and has 1 currently".format(pdb)}],
    )


def make_node(name: str = "gpu-node-1", labels: dict[str, str] | None = None, taints: list[dict[str, Any]] | None = None,
              unschedulable: bool = False, allocatable: dict[str, str] | None = None, ready: bool = True,
              rv: str = "100") -> dict[str, Any]:
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": "uid-" + name, "resourceVersion": rv, "labels": dict(labels or {}), "annotations": {}},
        "spec": {},
        "status": {
            "allocatable": dict(allocatable or {}),
            "capacity": dict(allocatable or {}),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady", "message": ""}],
        },
    }
    if taints:
        node["spec"]["taints"] = taints
    if unschedulable:
        node["spec"]["unschedulable"] = True
    return node


def make_pod(name: str, namespace: str = "default", node: str = "gpu-node-1", gpus: dict[str, str] | None = None,
             labels: dict[str, str] | None = None, owner_kind: str | None = "ReplicaSet", annotations: dict[str, str] | None = None,
             init_gpus: dict[str, str] | None = None, phase: str = "Running", uid: str | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "busybox"}
    if gpus:
        container["resources"] = {"limits": dict(gpus)}
    spec: dict[str, Any] = {"nodeName": node, "containers": [container]}
    if init_gpus:
        spec["initContainers"] = [{"name": "init", "image": "busybox", "resources": {"requests": dict(init_gpus)}}]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid or "uid-{0}-{1}".format(namespace, name),
                                "labels": dict(labels or {}), "annotations": dict(annotations or {})}
    if owner_kind:
        metadata["ownerReferences"] = [{"kind": owner_kind, "name": "owner", "uid": "o", "apiVersion": "apps/v1", "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": {"phase": phase}}


class FakeKube:
    """KubeClient's surface over dictionaries, with scripted failures per operation.

    ``failures[op]`` is a list of exceptions raised, in order, by the next calls of ``op``.
    """

    def __init__(self, clock: FakeClock, nodes: list[dict[str, Any]] | None = None, pods: list[dict[str, Any]] | None = None,
                 pdbs: list[dict[str, Any]] | None = None) -> None:
        self.clock = clock
        self.retry = RetryPolicy(sleep=clock.sleep, clock=clock)
        self.nodes = {node["metadata"]["name"]: copy.deepcopy(node) for node in nodes or []}
        self.pods = {pod["metadata"]["uid"]: copy.deepcopy(pod) for pod in pods or []}
        self.pdbs = list(pdbs or [])
        self.calls: list[tuple[str, Any]] = []
        self.failures: dict[str, list[BaseException]] = {}
        self.on_evict: Callable[[dict[str, Any]], None] | None = None
        # Called with each pod created (a kubelet's part: set its phase).
        self.on_create: Callable[[dict[str, Any]], None] | None = None
        self.watch_events: list[list[dict[str, Any]]] = []
        self.rv = 200

    def _fail(self, op: str) -> None:
        queue = self.failures.get(op) or []
        if queue:
            raise queue.pop(0)

    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def read_node(self, name: str) -> dict[str, Any]:
        self.calls.append(("read_node", name))
        self._fail("read_node")
        if name not in self.nodes:
            raise api_error(404, 'nodes "{0}" not found'.format(name), "NotFound")
        return copy.deepcopy(self.nodes[name])

    def list_nodes(self, field_selector: str | None = None) -> dict[str, Any]:
        self.calls.append(("list_nodes", field_selector))
        self._fail("list_nodes")
        items = list(self.nodes.values())
        if field_selector and field_selector.startswith("metadata.name="):
            items = [n for n in items if n["metadata"]["name"] == field_selector.split("=", 1)[1]]
        return {"items": copy.deepcopy(items), "metadata": {"resourceVersion": str(self.rv)}}

    def patch_node(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch_node", copy.deepcopy(body)))
        self._fail("patch_node")
        node = self.nodes[name]
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and wanted_rv != node["metadata"]["resourceVersion"]:
            raise api_error(409, "the object has been modified; please apply your changes to the latest version and try again", "Conflict")
        changes = copy.deepcopy(body)
        changes.get("metadata", {}).pop("resourceVersion", None)
        updated = merge_patch(node, changes)
        updated["metadata"]["resourceVersion"] = self._bump()
        self.nodes[name] = updated
        return copy.deepcopy(updated)

    def list_pods(self, field_selector: str | None = None, label_selector: str | None = None) -> dict[str, Any]:
        self.calls.append(("list_pods", field_selector, label_selector))
        self._fail("list_pods")
        items = list(self.pods.values())
        if field_selector and field_selector.startswith("spec.nodeName="):
            items = [p for p in items if p["spec"].get("nodeName") == field_selector.split("=", 1)[1]]
        if label_selector:
            # Enough of the selector syntax for the tests: comma-separated `key` and `key=value` terms.
            for term in label_selector.split(","):
                key, value = term.partition("=")[::2]
                items = [p for p in items if key in (p["metadata"].get("labels") or {})
                         and (not value or p["metadata"]["labels"][key] == value)]
        return {"items": copy.deepcopy(items), "metadata": {"resourceVersion": str(self.rv)}}

    def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create_pod", namespace, copy.deepcopy(body)))
        self._fail("create_pod")
        if any(p["metadata"]["namespace"] == namespace and p["metadata"]["name"] == body["metadata"]["name"] for p in self.pods.values()):
            raise api_error(409, 'pods "{0}" already exists'.format(body["metadata"]["name"]), "AlreadyExists")
        pod = copy.deepcopy(body)
        pod["metadata"].setdefault("uid", "uid-{0}-{1}".format(namespace, body["metadata"]["name"]))
        pod.setdefault("status", {"phase": "Pending"})
        self.pods[pod["metadata"]["uid"]] = pod
        if self.on_create:
            self.on_create(pod)
        return copy.deepcopy(pod)

    def list_pdbs(self, namespace: str) -> list[dict[str, Any]]:
        self.calls.append(("list_pdbs", namespace))
        return [p for p in self.pdbs if p["metadata"]["namespace"] == namespace]

    def evict_pod(self, namespace: str, name: str, uid: str | None, grace_period: int | None) -> None:
        self.calls.append(("evict_pod", namespace, name, uid, grace_period))
        self._fail("evict_pod:" + name)
        pod = self.pods.get(uid)
        if pod is None:
            raise api_error(404, 'pods "{0}" not found'.format(name), "NotFound")
        if self.on_evict:
            self.on_evict(pod)
        else:
            del self.pods[uid]

    def delete_pod(self, namespace: str, name: str, uid: str | None, grace_period: int | None) -> None:
        self.calls.append(("delete_pod", namespace, name, uid, grace_period))
        if uid is None:
            uid = next((key for key, pod in self.pods.items()
                        if pod["metadata"]["namespace"] == namespace and pod["metadata"]["name"] == name), None)
            if uid is None:
                raise api_error(404, 'pods "{0}" not found'.format(name), "NotFound")
        self.pods.pop(uid, None)

    def watch(self, kind: str, resource_version: str | None, timeout_seconds: int, field_selector: str | None = None,
              label_selector: str | None = None):
        self.calls.append(("watch", kind, resource_version, timeout_seconds))
        self._fail("watch")
        events = self.watch_events.pop(0) if self.watch_events else []
        yield from events
        # A watch that delivered nothing lasts its whole timeout.
        if not events:
            self.clock.sleep(timeout_seconds)

    def count(self, op: str) -> int:
        return sum(1 for call in self.calls if call[0] == op)
