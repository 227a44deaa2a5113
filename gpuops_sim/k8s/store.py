"""The emulator's object store: every resource, thread-safe, with watch history and subscribers.

This module is the in-process API the simulated node agents use (no HTTP, nothing in the request
log). Its public interface is stable:

``Store()`` (one per ``Emulator``, as ``emulator.store``)
    ``resource`` arguments name a resource loosely: ``"pods"``, ``"daemonsets"``,
    ``"daemonsets.apps"``, ``"apps/v1/daemonsets"`` or the kind (``"DaemonSet"``). ``namespace``
    is ignored for cluster-scoped resources; ``None`` for a namespaced one means ``"default"``
    on writes and "all namespaces" on ``list``.

    ``get(resource, namespace, name) -> dict``
    ``list(resource, namespace=None, label_selector=None, field_selector=None) -> list[dict]``
    ``create(resource, namespace, obj, dry_run=False) -> dict``
    ``update(resource, namespace, name, obj, subresource=None, dry_run=False) -> dict``   (PUT)
    ``patch(resource, namespace, name, patch, patch_type="strategic", subresource=None,
            dry_run=False) -> dict``  patch_type: "strategic", "merge", "json", "apply" or a
            Content-Type
    ``delete(resource, namespace, name, grace_period_seconds=None, propagation_policy=None,
             preconditions=None, dry_run=False) -> dict``  the object as deleted (or as marked
             for deletion when finalizers or a pod termination delay keep it)
    ``evict(namespace, name, dry_run=False) -> None``  PodDisruptionBudget-checked pod deletion
    ``bind(namespace, name, node_name) -> dict``
    ``subscribe(callback) -> unsubscribe``  ``callback(resource_plural, event_type, obj)`` for
            every ADDED / MODIFIED / DELETED, called synchronously in the writing thread while
            the store is locked, in resourceVersion order. Keep callbacks short (queue the work);
            ``obj`` is the subscriber's own copy.
    ``watch(resource, namespace=None, resource_version=None, label_selector=None,
            field_selector=None) -> Watch``  ``Watch.next(timeout) -> WatchEvent | None``,
            ``Watch.close()``
    ``resource_version -> str``, ``reset()``, ``termination_delay`` (seconds; 0 = pods vanish at
    once when deleted, as with an instant kubelet)

Errors are ``ApiError`` subclasses carrying the apiserver's ``code``, ``reason``, ``message`` and
a ``status()`` body; ``NotFound`` is also a ``LookupError``.

Objects returned are copies. Stored objects are never mutated after they are stored (every write
builds a new dict), so HTTP responses and watch events serialise them without copying.
"""

from __future__ import annotations

import base64
import collections
import json
import math
import queue
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple

from gpuops_sim.k8s.discovery import Registry, ResourceType
from gpuops_sim.k8s.patch import PatchError, apply_patch
from gpuops_sim.k8s.selectors import (FieldSelector, LabelSelector, SelectorError, compile_label_selector, label_key_valid,
                                      label_value_valid,
                                      fields_match, labels_match, parse_field_selector, parse_label_selector)

Obj = dict[str, Any]
Callback = Callable[[str, str, Obj], None]
Key = tuple[str, str]  # (namespace or "", name)

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_ANNOTATIONS_SIZE_LIMIT = 256 * 1024
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


# --- errors ---------------------------------------------------------------------------------------

class ApiError(Exception):
    """An error answer of the apiserver (``metav1.Status``)."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status_code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.retry_after = retry_after

    @property
    def status(self) -> int:  # what kubernetes' ApiException calls it
        return self.code

    def body(self) -> Obj:
        status: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            status["details"] = self.details
        return status


class NotFound(ApiError, LookupError):
    pass


class AlreadyExists(ApiError):
    pass


class Conflict(ApiError):
    pass


class Invalid(ApiError):
    pass


class BadRequest(ApiError):
    pass


class Forbidden(ApiError):
    pass


class Gone(ApiError):
    pass


class TooManyRequests(ApiError):
    pass


def _details(rt: ResourceType, name: str, **extra: Any) -> Obj:
    details: Obj = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.plural
    details.update(extra)
    return details


def not_found(rt: ResourceType, name: str) -> NotFound:
    return NotFound(404, "NotFound", f'{rt.group_resource} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> AlreadyExists:
    return AlreadyExists(409, "AlreadyExists", f'{rt.group_resource} "{name}" already exists', _details(rt, name))


def conflict(rt: ResourceType, name: str) -> Conflict:
    return Conflict(409, "Conflict", f'Operation cannot be fulfilled on {rt.group_resource} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again", _details(rt, name))


def invalid(rt: ResourceType, name: str, field_path: str, detail: str, cause_type: str = "FieldValueInvalid") -> Invalid:
    return Invalid(422, "Invalid", f'{rt.kind} "{name}" is invalid: {field_path}: {detail}',
                   _details(rt, name, causes=[{"reason": cause_type, "message": detail, "field": field_path}]))


def bad_request(message: str) -> BadRequest:
    return BadRequest(400, "BadRequest", message)


# --- helpers --------------------------------------------------------------------------------------

def clone(obj: Any) -> Any:
    """Deep copy of a JSON document (faster than copy.deepcopy)."""
    return json.loads(json.dumps(obj))


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def pod_ready(pod: Obj) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def pod_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, str) and value.endswith("%"):
        try:
            percent = int(value[:-1])
        except ValueError:
            raise ValueError(f"invalid value for IntOrString: invalid value {value!r}") from None
        scaled = percent * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value)


def pdb_status(spec: Obj, pods: Iterable[Obj], generation: int, controller_scale: int | None = None) -> Obj:
    """What the disruption controller writes. ``pods``: the live pods the selector matches;
    ``controller_scale``: the summed ``replicas`` of their controllers, which is what
    ``maxUnavailable`` and a percentage ``minAvailable`` count against (default: the pods)."""
    counted = [p for p in pods if not pod_terminal(p)]
    healthy = sum(1 for p in counted if pod_healthy(p))
    return pdb_status_from_counts(spec, len(counted), healthy, generation, controller_scale)


def pod_healthy(pod: Obj) -> bool:
    return pod_ready(pod) and not _meta(pod).get("deletionTimestamp")


def pdb_status_from_counts(spec: Obj, pods: int, healthy: int, generation: int, controller_scale: int | None) -> Obj:
    expected = pods
    min_available = spec.get("minAvailable")
    if min_available is not None and not (isinstance(min_available, str) and min_available.endswith("%")):
        desired = int(min_available)
    else:
        if controller_scale is not None:
            expected = controller_scale
        if min_available is not None:
            desired = scaled_value(min_available, expected, True)
        elif spec.get("maxUnavailable") is not None:
            desired = max(0, expected - scaled_value(spec["maxUnavailable"], expected, True))
        else:
            desired = expected
    allowed = max(0, healthy - desired)
    return {"currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
            "disruptionsAllowed": allowed, "observedGeneration": generation,
            "conditions": [{"type": "DisruptionAllowed", "status": "True" if allowed else "False",
                            "reason": "SufficientPods" if allowed else "InsufficientPods",
                            "lastTransitionTime": "1970-01-01T00:00:00Z", "message": ""}]}


class _PdbTally:
    """The pods one PodDisruptionBudget selects, counted incrementally (no scan per pod event)."""

    def __init__(self, selector: LabelSelector | None) -> None:
        self.selector = selector
        self.pods: dict[str, tuple[bool, tuple[str, str, str] | None]] = {}  # name -> (healthy, controller ref)
        self.healthy = 0
        self.refs: collections.Counter[tuple[str, str, str] | None] = collections.Counter()

    def set(self, name: str, pod: Obj | None) -> bool:
        """Account for the pod's new state; True when it is or was a member."""
        previous = self.pods.pop(name, None)
        if previous is not None:
            self.healthy -= previous[0]
            self.refs[previous[1]] -= 1
        if pod is not None and not pod_terminal(pod) and labels_match(self.selector, _meta(pod).get("labels")):
            ref = next((r for r in _meta(pod).get("ownerReferences") or [] if r.get("controller")), None)
            entry = (pod_healthy(pod), (ref.get("kind", ""), ref.get("name", ""), ref.get("uid", "")) if ref else None)
            self.pods[name] = entry
            self.healthy += entry[0]
            self.refs[entry[1]] += 1
            return True
        return previous is not None


# Go serialises these struct fields even when empty, and the Python client requires them: fill
# the zero values the way the real apiserver's responses carry them.
_NODE_INFO = ("architecture", "bootID", "containerRuntimeVersion", "kernelVersion", "kubeProxyVersion", "kubeletVersion",
              "machineID", "operatingSystem", "osImage", "systemUUID")
_CONTAINER_STATUS = {"image": "", "imageID": "", "name": "", "ready": False, "restartCount": 0}
_ZERO_FIELDS: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "nodes": (("status.nodeInfo", dict.fromkeys(_NODE_INFO, "")),),
    "pods": (("status.containerStatuses[]", _CONTAINER_STATUS), ("status.initContainerStatuses[]", _CONTAINER_STATUS),
             ("status.ephemeralContainerStatuses[]", _CONTAINER_STATUS)),
    "daemonsets.apps": (("status", {"currentNumberScheduled": 0, "desiredNumberScheduled": 0, "numberMisscheduled": 0,
                                    "numberReady": 0}),),
    "replicasets.apps": (("status", {"replicas": 0}),),
    "statefulsets.apps": (("status", {"replicas": 0}),),
}


def fill_zero_values(resource_key: str, obj: Obj) -> None:
    for path, zeros in _ZERO_FIELDS.get(resource_key, ()):
        targets: list[Any] = [obj]
        for part in path.split("."):
            many = part.endswith("[]")
            part = part.rstrip("[]")
            found = []
            for target in targets:
                value = target.get(part) if isinstance(target, dict) else None
                if many and isinstance(value, list):
                    found.extend(value)
                elif not many and value is not None:
                    found.append(value)
            targets = found
        for target in targets:
            if isinstance(target, dict):
                for key, zero in zeros.items():
                    target.setdefault(key, zero)


_SCALED_KINDS = {"ReplicaSet": "replicasets.apps", "StatefulSet": "statefulsets.apps", "Deployment": "deployments.apps",
                 "ReplicationController": "replicationcontrollers"}


def _as_label_selector(value: str | LabelSelector | None) -> LabelSelector:
    if value is None or isinstance(value, tuple):
        return value or ()
    try:
        return parse_label_selector(value)
    except SelectorError as error:
        raise bad_request(str(error)) from None


def _as_field_selector(rt: ResourceType, value: str | FieldSelector | None) -> FieldSelector:
    if value is None or isinstance(value, tuple):
        return value or ()
    try:
        return parse_field_selector(value, rt.field_selectors)
    except SelectorError as error:
        raise bad_request(str(error)) from None


# --- watch ----------------------------------------------------------------------------------------

@dataclass
class StoreEvent:
    """One change as stored in the history (``obj`` and ``old`` are frozen stored objects)."""

    rt: ResourceType
    type: str
    obj: Obj
    old: Obj | None
    rv: int
    _lines: dict[str, bytes] = field(default_factory=dict)

    def line(self, event_type: str) -> bytes:
        """The event as one watch-stream JSON line (cached per type)."""
        cached = self._lines.get(event_type)
        if cached is None:
            cached = self._lines[event_type] = (json.dumps({"type": event_type, "object": self.obj}) + "\n").encode()
        return cached


class ListPage(NamedTuple):
    items: list[Obj]
    resource_version: str
    continue_token: str | None
    remaining: int | None


@dataclass(frozen=True)
class WatchEvent:
    type: str
    object: Obj
    line: bytes


_CLOSED = object()


class Watch:
    """One watcher: events of one resource, filtered by namespace and selectors as it reads them.

    A MODIFIED event becomes ADDED when the object starts to match the selectors and DELETED when
    it stops matching, as the apiserver's watch cache does.
    """

    def __init__(self, store: "Store", rt: ResourceType, namespace: str | None, labels: LabelSelector,
                 fields: FieldSelector) -> None:
        self.store = store
        self.rt = rt
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.closed = False

    def _matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = _meta(obj)
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, meta.get("labels")) and fields_match(self.fields, obj)

    def translate(self, event: StoreEvent) -> WatchEvent | None:
        new_match = self._matches(event.obj)
        if event.type == "ADDED":
            kind = "ADDED" if new_match else None
        elif event.type == "DELETED":
            kind = "DELETED" if new_match else None
        else:
            old_match = self._matches(event.old)
            kind = {(True, True): "MODIFIED", (False, True): "ADDED", (True, False): "DELETED"}.get((old_match, new_match))
        if kind is None:
            return None
        return WatchEvent(kind, event.obj, event.line(kind))

    def next(self, timeout: float | None) -> WatchEvent | None:
        """The next matching event, or None at the timeout or once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self.queue.get(timeout=remaining)
            except queue.Empty:
                return None
            if item is _CLOSED:
                self.closed = True
                return None
            translated = self.translate(item)
            if translated is not None:
                return translated

    def close(self) -> None:
        self.store._unwatch(self)
        self.queue.put(_CLOSED)


# --- the store ------------------------------------------------------------------------------------

class Store:
    """All objects of the emulated cluster (see the module docstring for the interface)."""

    def __init__(self, history_limit: int = 50_000, termination_delay: float = 0.0) -> None:
        self.registry = Registry()
        self.history_limit = history_limit
        self.termination_delay = termination_delay
        self._lock = threading.RLock()
        self._subscribers: list[Callback] = []
        self._rv = 0
        self._objects: dict[str, dict[str, dict[str, Obj]]] = {}
        self._history: collections.deque[StoreEvent] = collections.deque()
        self._compacted = 0
        self._watchers: dict[str, set[Watch]] = {}
        self._pods_by_node: dict[str, set[Key]] = {}
        self._dependents: dict[str, set[tuple[str, str, str]]] = {}
        self._pdb_tallies: dict[Key, _PdbTally] = {}
        self._timers: set[threading.Timer] = set()
        self._types_by_key: dict[str, ResourceType] = {}
        self.reset()

    # --- lifecycle ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every object and watcher (the version counter keeps counting, so old watches
        get 410 Gone) and create the default namespaces."""
        with self._lock:
            for timer in list(self._timers):
                timer.cancel()
            self._timers.clear()
            for watchers in list(self._watchers.values()):
                for watcher in list(watchers):
                    watcher.close()
            self.registry.reset()
            self._objects = {}
            self._history.clear()
            self._compacted = self._rv
            self._watchers = {}
            self._pods_by_node = {}
            self._dependents = {}
            self._pdb_tallies = {}
            self.termination_delay = 0.0
            for name in DEFAULT_NAMESPACES:
                self.create("namespaces", None, {"metadata": {"name": name}})

    def close(self) -> None:
        with self._lock:
            for timer in list(self._timers):
                timer.cancel()
            for watchers in list(self._watchers.values()):
                for watcher in list(watchers):
                    watcher.close()

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    # --- lookup ---------------------------------------------------------------------------------

    def resolve(self, resource: str | ResourceType) -> ResourceType:
        if isinstance(resource, ResourceType):
            return resource
        try:
            return self.registry.resolve(resource)
        except KeyError as error:
            raise NotFound(404, "NotFound", str(error.args[0])) from None

    def _ns(self, rt: ResourceType, namespace: str | None) -> str:
        return (namespace or "default") if rt.namespaced else ""

    def _bucket(self, rt: ResourceType) -> dict[str, dict[str, Obj]]:
        self._types_by_key.setdefault(rt.key, rt)
        return self._objects.setdefault(rt.key, {})

    def _current(self, rt: ResourceType, ns: str, name: str) -> Obj:
        obj = self._bucket(rt).get(ns, {}).get(name)
        if obj is None:
            raise not_found(rt, name)
        return obj

    def _check_namespace(self, rt: ResourceType, ns: str) -> None:
        if rt.namespaced and ns not in self._objects.get("namespaces", {}).get("", {}):
            raise NotFound(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})

    # --- reads ----------------------------------------------------------------------------------

    def get(self, resource: str | ResourceType, namespace: str | None, name: str) -> Obj:
        rt = self.resolve(resource)
        with self._lock:
            return clone(self._current(rt, self._ns(rt, namespace), name))

    def get_stored(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        """The stored object itself (read-only!), for the HTTP layer."""
        with self._lock:
            return self._current(rt, self._ns(rt, namespace), name)

    def list(self, resource: str | ResourceType, namespace: str | None = None,
             label_selector: str | LabelSelector | None = None,
             field_selector: str | FieldSelector | None = None) -> list[Obj]:
        rt = self.resolve(resource)
        return [clone(o) for o in self.list_stored(rt, namespace, label_selector, field_selector).items]

    def list_stored(self, rt: ResourceType, namespace: str | None, label_selector: str | LabelSelector | None = None,
                    field_selector: str | FieldSelector | None = None, limit: int | None = None,
                    continue_token: str | None = None) -> "ListPage":
        """Stored objects (read-only!) in namespace/name order, for the HTTP layer."""
        labels = _as_label_selector(label_selector)
        fields = _as_field_selector(rt, field_selector)
        start = None
        if continue_token:
            try:
                start = tuple(json.loads(base64.urlsafe_b64decode(continue_token.encode()).decode())["start"])
            except (ValueError, KeyError, TypeError):
                raise bad_request(f"continue key is not valid: {continue_token}") from None
        with self._lock:
            keys = self._candidate_keys(rt, namespace if rt.namespaced else None, fields)
            keys.sort()
            bucket = self._bucket(rt)
            selected: list[Obj] = []
            next_start = None
            remaining = None
            for index, (ns, name) in enumerate(keys):  # keys are (namespace, name), sorted
                if start is not None and (ns, name) <= start:
                    continue
                obj = bucket.get(ns, {}).get(name)
                if obj is None:
                    continue
                meta = obj["metadata"]
                if labels and not labels_match(labels, meta.get("labels")):
                    continue
                if fields and not fields_match(fields, obj):
                    continue
                if limit and len(selected) >= limit:
                    next_start = (_meta(selected[-1]).get("namespace", ""), _meta(selected[-1])["name"])
                    remaining = len(keys) - index
                    break
                selected.append(obj)
            token = None
            if next_start is not None:
                token = base64.urlsafe_b64encode(json.dumps({"rv": self._rv, "start": list(next_start)}).encode()).decode()
            return ListPage(selected, str(self._rv), token, remaining)

    def _candidate_keys(self, rt: ResourceType, namespace: str | None, fields: FieldSelector) -> list[Key]:
        bucket = self._bucket(rt)
        if rt.plural == "pods" and not rt.group:
            for requirement in fields:
                if requirement.field == "spec.nodeName" and requirement.equal and requirement.value:
                    keys = self._pods_by_node.get(requirement.value, set())
                    return [k for k in keys if namespace is None or k[0] == namespace]
        for requirement in fields:
            if requirement.field == "metadata.name" and requirement.equal:
                if namespace is not None:
                    return [(namespace, requirement.value)] if requirement.value in bucket.get(namespace, {}) else []
                return [(ns, requirement.value) for ns, objs in bucket.items() if requirement.value in objs]
        if namespace is not None:
            return [(namespace, name) for name in bucket.get(namespace, {})]
        return [(ns, name) for ns, objs in bucket.items() for name in objs]

    # --- writes ---------------------------------------------------------------------------------

    def create(self, resource: str | ResourceType, namespace: str | None, obj: Obj, dry_run: bool = False) -> Obj:
        rt = self.resolve(resource)
        if not isinstance(obj, dict):
            raise bad_request("the body of the request was in an unknown format")
        new = clone(obj)
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        with self._lock:
            ns = self._ns(rt, namespace if namespace is not None else meta.get("namespace"))
            if rt.namespaced and meta.get("namespace") not in (None, "", ns):
                raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
            name = meta.get("name") or ""
            if not name and meta.get("generateName"):
                name = meta["generateName"] + "".join(random.choice(_SUFFIX_ALPHABET) for _letter in range(5))
            if not name:
                raise invalid(rt, "", "metadata.name", "Required value: name or generateName is required", "FieldValueRequired")
            if len(name) > 253 or not _NAME_RE.match(name):
                raise invalid(rt, name, "metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must '
                              "consist of lower case alphanumeric characters, '-' or '.', and must start and end with an "
                              "alphanumeric character")
            self._check_namespace(rt, ns)
            self._validate_fields(rt, name, new)
            if name in self._bucket(rt).get(ns, {}):
                raise already_exists(rt, name)
            new["apiVersion"] = rt.api_version
            new["kind"] = rt.kind
            meta["name"] = name
            if rt.namespaced:
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            meta["generation"] = 1
            for server_field in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
                meta.pop(server_field, None)
            self._defaults(rt, new)
            fill_zero_values(rt.key, new)
            if rt.key == "poddisruptionbudgets.policy":
                self._refresh_pdb_members((ns, name), new)
                new["status"] = self._pdb_status(new)
            if dry_run:
                if rt.key == "poddisruptionbudgets.policy":
                    self._pdb_tallies.pop((ns, name), None)
                meta["resourceVersion"] = self.resource_version
                return new
            self._commit(rt, ns, name, new, "ADDED", None)
            return clone(new)

    @staticmethod
    def _validate_fields(rt: ResourceType, name: str, obj: Obj) -> None:
        """What the apiserver validates on every write of any object: label and annotation keys and
        values; for nodes, the taints."""
        meta = obj.get("metadata") or {}
        for key, value in (meta.get("labels") or {}).items():
            if not label_key_valid(key):
                raise invalid(rt, name, "metadata.labels", f"Invalid value: {key!r}: name part must consist of alphanumeric "
                              "characters, '-', '_' or '.', and must start and end with an alphanumeric character")
            if not label_value_valid(value):
                raise invalid(rt, name, "metadata.labels", f"Invalid value: {value!r}: a valid label must be an empty string "
                              "or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                              "alphanumeric character")
        annotations = meta.get("annotations") or {}
        for key in annotations:
            if not label_key_valid(key):
                raise invalid(rt, name, "metadata.annotations", f"Invalid value: {key!r}: name part must consist of "
                              "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")
        if sum(len(str(k)) + len(str(v)) for k, v in annotations.items()) > _ANNOTATIONS_SIZE_LIMIT:
            raise invalid(rt, name, "metadata.annotations", "Too long: must have at most 262144 bytes", "FieldValueTooLong")
        if rt.plural == "nodes":
            for index, taint in enumerate((obj.get("spec") or {}).get("taints") or []):
                where = f"spec.taints[{index}]"
                if not isinstance(taint, dict) or not label_key_valid(taint.get("key")):
                    raise invalid(rt, name, where + ".key", "Invalid value: the key must be a qualified name")
                if taint.get("value") not in (None, "") and not label_value_valid(taint.get("value")):
                    raise invalid(rt, name, where + ".value", f"Invalid value: {taint.get('value')!r}: a valid label value")
                if taint.get("effect") not in _TAINT_EFFECTS:
                    raise invalid(rt, name, where + ".effect", f"Unsupported value: {taint.get('effect')!r}",
                                  "FieldValueNotSupported")

    def _defaults(self, rt: ResourceType, obj: Obj) -> None:
        if rt.group:
            if rt.key == "customresourcedefinitions.apiextensions.k8s.io":
                names = (obj.get("spec") or {}).get("names") or {}
                obj["status"] = {"acceptedNames": names, "storedVersions": [
                    v.get("name") for v in (obj.get("spec") or {}).get("versions") or [] if v.get("storage")],
                    "conditions": [{"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": now()}
                                   for t, r, m in (("NamesAccepted", "NoConflicts", "no conflicts found"),
                                                   ("Established", "InitialNamesAccepted", "the initial names have been accepted"))]}
            return
        if rt.plural == "pods":
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("dnsPolicy", "ClusterFirst")
            status = obj.get("status")
            if not isinstance(status, dict):
                status = obj["status"] = {}
            status.setdefault("phase", "Pending")
        elif rt.plural == "namespaces":
            meta = obj["metadata"]
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}

    def update(self, resource: str | ResourceType, namespace: str | None, name: str, obj: Obj,
               subresource: str | None = None, dry_run: bool = False) -> Obj:
        rt = self.resolve(resource)
        if not isinstance(obj, dict):
            raise bad_request("the body of the request was in an unknown format")
        body_name = _meta(obj).get("name")
        if body_name and body_name != name:
            raise bad_request(f"the name of the object ({body_name}) does not match the name on the URL ({name})")
        with self._lock:
            ns = self._ns(rt, namespace)
            old = self._current(rt, ns, name)
            wanted = _meta(obj).get("resourceVersion")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            return self._replace(rt, ns, name, old, clone(obj), subresource, dry_run)

    def patch(self, resource: str | ResourceType, namespace: str | None, name: str, patch: Any,
              patch_type: str = "strategic", subresource: str | None = None, dry_run: bool = False) -> Obj:
        rt = self.resolve(resource)
        with self._lock:
            ns = self._ns(rt, namespace)
            try:
                old = self._current(rt, ns, name)
            except NotFound:
                if patch_type in ("apply", "application/apply-patch+yaml") and subresource is None:
                    return self.create(rt, ns, patch, dry_run=dry_run)
                raise
            try:
                patched = apply_patch(patch_type, old, patch)
            except PatchError as error:
                raise Invalid(422, "Invalid", str(error)) from None
            if not isinstance(patched, dict):
                raise bad_request("the patch did not produce an object")
            patched_rv = _meta(patched).get("resourceVersion")
            if patched_rv and patched_rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            patched_name = _meta(patched).get("name")
            if patched_name and patched_name != name:
                raise bad_request(f"the name of the object ({patched_name}) does not match the name on the URL ({name})")
            return self._replace(rt, ns, name, old, patched, subresource, dry_run)

    def _replace(self, rt: ResourceType, ns: str, name: str, old: Obj, new: Obj, subresource: str | None,
                 dry_run: bool) -> Obj:
        if subresource not in (None, "status"):
            raise NotFound(404, "NotFound", "the server could not find the requested resource")
        if not isinstance(new.get("metadata"), dict):
            new["metadata"] = {}
        if rt.has_status:
            if subresource == "status":
                status = new.get("status")
                new = {k: v for k, v in clone(old).items() if k not in ("status", "metadata")} | {
                    "metadata": new["metadata"]}
                if status is not None:
                    new["status"] = status
            elif "status" in old:
                new["status"] = clone(old["status"])
            else:
                new.pop("status", None)
        old_meta = old["metadata"]
        meta = new["metadata"]
        new["apiVersion"] = rt.api_version
        new["kind"] = rt.kind
        meta["name"] = name
        for kept in ("uid", "creationTimestamp", "namespace", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if kept in old_meta:
                meta[kept] = old_meta[kept]
            else:
                meta.pop(kept, None)
        fill_zero_values(rt.key, new)
        self._validate_fields(rt, name, new)
        spec_changed = any(new.get(k) != old.get(k) for k in set(new) | set(old) if k not in ("metadata", "status", "apiVersion", "kind"))
        meta["generation"] = old_meta.get("generation", 1) + (1 if spec_changed else 0)
        if dry_run:
            meta["resourceVersion"] = old_meta["resourceVersion"]
            return new
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not self._pending_termination(rt, old):
            self._remove(rt, ns, name, old)
            return clone(old)
        if rt.key == "customresourcedefinitions.apiextensions.k8s.io":
            self.registry.add_crd(new)
        if rt.key == "poddisruptionbudgets.policy" and new.get("spec") != old.get("spec"):
            self._refresh_pdb_members((ns, name), new)
            new["status"] = {**(new.get("status") or {}), **self._pdb_status(new)}
        self._commit(rt, ns, name, new, "MODIFIED", old)
        return clone(new)

    def _pending_termination(self, rt: ResourceType, obj: Obj) -> bool:
        return rt.key == "pods" and bool(_meta(obj).get("deletionGracePeriodSeconds"))

    def bind(self, namespace: str | None, name: str, node_name: str) -> Obj:
        """POST pods/NAME/binding."""
        rt = self.resolve("pods")
        with self._lock:
            ns = self._ns(rt, namespace)
            old = self._current(rt, ns, name)
            if (old.get("spec") or {}).get("nodeName"):
                raise conflict(rt, name)
            new = clone(old)
            new["spec"]["nodeName"] = node_name
            self._commit(rt, ns, name, new, "MODIFIED", old)
            return clone(new)

    # --- deletion -------------------------------------------------------------------------------

    def delete(self, resource: str | ResourceType, namespace: str | None, name: str,
               grace_period_seconds: int | None = None, propagation_policy: str | None = None,
               preconditions: Obj | None = None, dry_run: bool = False) -> Obj:
        rt = self.resolve(resource)
        with self._lock:
            ns = self._ns(rt, namespace)
            old = self._current(rt, ns, name)
            meta = old["metadata"]
            preconditions = preconditions or {}
            if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
                raise Conflict(409, "Conflict", f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                               f"UID in object meta: {meta.get('uid')}", _details(rt, name))
            if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != meta.get("resourceVersion"):
                raise Conflict(409, "Conflict", "Precondition failed: ResourceVersion in precondition: "
                               f"{preconditions['resourceVersion']}, ResourceVersion in object meta: "
                               f"{meta.get('resourceVersion')}", _details(rt, name))
            if rt.key == "namespaces" and name in PROTECTED_NAMESPACES:
                raise Forbidden(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                                _details(rt, name))
            if dry_run:
                return clone(old)
            if rt.key == "pods" and self._should_linger(old, grace_period_seconds):
                return clone(self._mark_terminating(rt, ns, name, old, grace_period_seconds))
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return clone(old)
                new = clone(old)
                new["metadata"]["deletionTimestamp"] = now()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                self._commit(rt, ns, name, new, "MODIFIED", old)
                return clone(new)
            self._remove(rt, ns, name, old, orphan=propagation_policy == "Orphan")
            return clone(old)

    def _should_linger(self, pod: Obj, grace: int | None) -> bool:
        if self.termination_delay <= 0 or grace == 0:
            return False
        if not (pod.get("spec") or {}).get("nodeName") or pod_terminal(pod):
            return False
        return True

    def _mark_terminating(self, rt: ResourceType, ns: str, name: str, old: Obj, grace: int | None) -> Obj:
        if _meta(old).get("deletionTimestamp"):
            return old
        new = clone(old)
        if grace is None:
            grace = (old.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        new["metadata"]["deletionTimestamp"] = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + (grace or 0)))
        new["metadata"]["deletionGracePeriodSeconds"] = grace or 1
        self._commit(rt, ns, name, new, "MODIFIED", old)
        uid = new["metadata"]["uid"]

        def finish() -> None:
            with self._lock:
                self._timers.discard(timer)
                current = self._bucket(rt).get(ns, {}).get(name)
                if current is not None and current["metadata"].get("uid") == uid:
                    if current["metadata"].get("finalizers"):
                        updated = clone(current)
                        updated["metadata"]["deletionGracePeriodSeconds"] = 0
                        self._commit(rt, ns, name, updated, "MODIFIED", current)
                    else:
                        self._remove(rt, ns, name, current)
        timer = threading.Timer(self.termination_delay, finish)
        timer.daemon = True
        self._timers.add(timer)
        timer.start()
        return new

    def _remove(self, rt: ResourceType, ns: str, name: str, old: Obj, orphan: bool = False) -> None:
        """Take the object out for good, then what depended on it."""
        self._commit(rt, ns, name, None, "DELETED", old)
        uid = old["metadata"].get("uid")
        if rt.key == "namespaces":
            self._empty_namespace(name)
        elif rt.key == "customresourcedefinitions.apiextensions.k8s.io":
            for custom in self.registry.remove_crd(old):
                for cns, objs in list(self._objects.get(custom.key, {}).items()):
                    for cname, cobj in list(objs.items()):
                        self._commit(custom, cns, cname, None, "DELETED", cobj)
        if uid and not orphan:
            for dep_key, dep_ns, dep_name in sorted(self._dependents.pop(uid, set())):
                dep_rt = self._types_by_key.get(dep_key)
                dependent = self._objects.get(dep_key, {}).get(dep_ns, {}).get(dep_name)
                if dep_rt is None or dependent is None:
                    continue
                if dependent["metadata"].get("finalizers") or (dep_rt.key == "pods" and self._should_linger(dependent, None)):
                    self.delete(dep_rt, dep_ns, dep_name)
                else:
                    self._remove(dep_rt, dep_ns, dep_name, dependent)
        elif uid:
            self._dependents.pop(uid, None)

    def _empty_namespace(self, namespace: str) -> None:
        for key, namespaces in list(self._objects.items()):
            rt = self._types_by_key[key]
            if not rt.namespaced:
                continue
            for name, obj in sorted(namespaces.get(namespace, {}).items()):
                if self._objects.get(key, {}).get(namespace, {}).get(name) is obj:
                    self._remove(rt, namespace, name, obj)

    def delete_collection(self, resource: str | ResourceType, namespace: str | None,
                          label_selector: str | None = None, field_selector: str | None = None,
                          dry_run: bool = False) -> list[Obj]:
        rt = self.resolve(resource)
        with self._lock:
            items = self.list_stored(rt, namespace, label_selector, field_selector).items
            return [self.delete(rt, _meta(o).get("namespace"), _meta(o)["name"], dry_run=dry_run) for o in items]

    # --- eviction and disruption budgets --------------------------------------------------------

    def evict(self, namespace: str | None, name: str, dry_run: bool = False,
              grace_period_seconds: int | None = None) -> None:
        """The eviction subresource: delete the pod unless a PodDisruptionBudget forbids it."""
        rt = self.resolve("pods")
        with self._lock:
            ns = self._ns(rt, namespace)
            pod = self._current(rt, ns, name)
            if _meta(pod).get("deletionTimestamp"):
                return
            phase = (pod.get("status") or {}).get("phase")
            if phase not in ("Succeeded", "Failed", "Pending"):
                pdbs = self._matching_pdbs(ns, pod)
                if len(pdbs) > 1:
                    raise ApiError(500, "InternalError", "This pod has more than one PodDisruptionBudget, which the "
                                   "eviction subresource does not support.")
                if pdbs:
                    pdb = pdbs[0]
                    status = self._pdb_status(pdb)
                    allowed = status["disruptionsAllowed"] > 0
                    if not pod_ready(pod):
                        policy = (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy")
                        allowed = policy == "AlwaysAllow" or status["currentHealthy"] >= status["desiredHealthy"]
                    if not allowed:
                        raise TooManyRequests(
                            429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.",
                            {"causes": [{"reason": "DisruptionBudget",
                                         "message": f"The disruption budget {pdb['metadata']['name']} needs "
                                                    f"{status['desiredHealthy']} healthy pods and has "
                                                    f"{status['currentHealthy']} currently"}]})
            if not dry_run:
                self.delete(rt, ns, name, grace_period_seconds=grace_period_seconds)

    def _pdbs_in(self, namespace: str) -> dict[str, Obj]:
        return self._objects.get("poddisruptionbudgets.policy", {}).get(namespace, {})

    def _matching_pdbs(self, namespace: str, pod: Obj) -> list[Obj]:
        labels = _meta(pod).get("labels")
        found = []
        for pdb in self._pdbs_in(namespace).values():
            try:
                selector = compile_label_selector((pdb.get("spec") or {}).get("selector"))
            except SelectorError:
                continue
            if labels_match(selector, labels):
                found.append(pdb)
        return found

    def _pdb_status(self, pdb: Obj) -> Obj:
        key = (pdb["metadata"]["namespace"], pdb["metadata"]["name"])
        tally = self._pdb_tallies.get(key) or _PdbTally(None)
        return pdb_status_from_counts(pdb.get("spec") or {}, len(tally.pods), tally.healthy,
                                      pdb["metadata"].get("generation", 1), self._controller_scale(key[0], tally))

    def _controller_scale(self, namespace: str, tally: _PdbTally) -> int:
        """Sum of the scale of the pods' controllers; a pod without a known controller counts as one."""
        scales: dict[str, int] = {}
        loose = 0
        for ref, count in tally.refs.items():
            if count <= 0:
                continue
            owner = self._owner(namespace, ref) if ref else None
            if owner is None:
                loose += count
                continue
            if owner["kind"] == "ReplicaSet":
                parent = next((r for r in _meta(owner).get("ownerReferences") or []
                               if r.get("controller") and r.get("kind") == "Deployment"), None)
                if parent:
                    owner = self._owner(namespace, (parent["kind"], parent.get("name", ""), parent.get("uid", ""))) or owner
            scales[owner["metadata"]["uid"]] = int((owner.get("spec") or {}).get("replicas", 1))
        return loose + sum(scales.values())

    def _owner(self, namespace: str, ref: tuple[str, str, str]) -> Obj | None:
        kind, name, uid = ref
        key = _SCALED_KINDS.get(kind)
        owner = self._objects.get(key, {}).get(namespace, {}).get(name) if key else None
        if owner is None or owner["metadata"].get("uid") != uid:
            return None
        return owner

    def _refresh_pdb_members(self, pdb_key: Key, pdb: Obj | None) -> None:
        if pdb is None:
            self._pdb_tallies.pop(pdb_key, None)
            return
        try:
            selector = compile_label_selector((pdb.get("spec") or {}).get("selector"))
        except SelectorError:
            selector = None
        tally = self._pdb_tallies[pdb_key] = _PdbTally(selector)
        for name, pod in self._objects.get("pods", {}).get(pdb_key[0], {}).items():
            tally.set(name, pod)

    def _write_pdb_status(self, namespace: str, name: str) -> None:
        rt = self.resolve("poddisruptionbudgets")
        pdb = self._pdbs_in(namespace).get(name)
        if pdb is None:
            return
        status = self._pdb_status(pdb)
        current = pdb.get("status") or {}
        if all(current.get(k) == v for k, v in status.items()):
            return
        new = dict(pdb)
        new["metadata"] = dict(pdb["metadata"])
        new["status"] = {**current, **status}
        self._commit(rt, namespace, name, new, "MODIFIED", pdb)

    # --- commit, indexes, notification -----------------------------------------------------------

    def _commit(self, rt: ResourceType, ns: str, name: str, new: Obj | None, event_type: str, old: Obj | None) -> None:
        """Store ``new`` (None: remove), keep the indexes, record and fan out the event."""
        self._rv += 1
        bucket = self._bucket(rt)
        if new is None:
            objs = bucket.get(ns, {})
            objs.pop(name, None)
            if not objs:
                bucket.pop(ns, None)
            stored = old
            if stored is not None:
                # a DELETED event carries the object with a fresh resourceVersion
                stored = dict(stored)
                stored["metadata"] = dict(stored["metadata"], resourceVersion=str(self._rv))
        else:
            new["metadata"]["resourceVersion"] = str(self._rv)
            bucket.setdefault(ns, {})[name] = new
            stored = new
        assert stored is not None
        self._index(rt, ns, name, new, old)
        event = StoreEvent(rt, event_type, stored, old, self._rv)
        self._history.append(event)
        if len(self._history) > self.history_limit:
            self._compacted = self._history.popleft().rv
        for watcher in self._watchers.get(rt.key, ()):
            watcher.queue.put(event)
        for callback in list(self._subscribers):
            callback(rt.plural, event_type, clone(stored))
        self._after_commit(rt, ns, name, new, old)

    def _index(self, rt: ResourceType, ns: str, name: str, new: Obj | None, old: Obj | None) -> None:
        key = (rt.key, ns, name)
        old_owners = {r.get("uid") for r in _meta(old or {}).get("ownerReferences") or []}
        new_owners = {r.get("uid") for r in _meta(new or {}).get("ownerReferences") or []}
        for uid in old_owners - new_owners:
            self._dependents.get(uid, set()).discard(key)
        for uid in new_owners - old_owners:
            self._dependents.setdefault(uid, set()).add(key)
        if rt.key == "pods":
            old_node = ((old or {}).get("spec") or {}).get("nodeName")
            new_node = ((new or {}).get("spec") or {}).get("nodeName")
            if old_node != new_node or new is None:
                if old_node:
                    self._pods_by_node.get(old_node, set()).discard((ns, name))
                if new_node and new is not None:
                    self._pods_by_node.setdefault(new_node, set()).add((ns, name))

    def _after_commit(self, rt: ResourceType, ns: str, name: str, new: Obj | None, old: Obj | None) -> None:
        """Derived state: CRD registration, PDB membership and status."""
        if rt.key == "customresourcedefinitions.apiextensions.k8s.io" and new is not None and old is None:
            self.registry.add_crd(new)
        elif rt.key == "poddisruptionbudgets.policy" and new is None:
            self._refresh_pdb_members((ns, name), None)
        elif rt.key == "pods":
            for (pdb_ns, pdb_name), tally in list(self._pdb_tallies.items()):
                if pdb_ns == ns and tally.set(name, new):
                    self._write_pdb_status(ns, pdb_name)

    # --- subscriptions and watches --------------------------------------------------------------

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)
        return unsubscribe

    def watch(self, resource: str | ResourceType, namespace: str | None = None, resource_version: str | None = None,
              label_selector: str | LabelSelector | None = None,
              field_selector: str | FieldSelector | None = None) -> Watch:
        """Events after ``resource_version``; without one (or "0"), ADDED for every current object first."""
        rt = self.resolve(resource)
        labels = _as_label_selector(label_selector)
        fields = _as_field_selector(rt, field_selector)
        watcher = Watch(self, rt, namespace if rt.namespaced else None, labels, fields)
        with self._lock:
            if resource_version not in (None, "", "0"):
                try:
                    since = int(resource_version)
                except ValueError:
                    raise bad_request(f"invalid resource version: {resource_version!r}") from None
                if since < self._compacted:
                    raise Gone(410, "Expired", f"too old resource version: {since} ({self._compacted + 1})")
                for event in self._history:
                    if event.rv > since and event.rt.key == rt.key:
                        watcher.queue.put(event)
            else:
                for obj in self.list_stored(rt, watcher.namespace, labels, fields).items:
                    watcher.queue.put(StoreEvent(rt, "ADDED", obj, None, int(obj["metadata"]["resourceVersion"])))
            self._watchers.setdefault(rt.key, set()).add(watcher)
        return watcher

    def _unwatch(self, watcher: Watch) -> None:
        with self._lock:
            self._watchers.get(watcher.rt.key, set()).discard(watcher)

    # --- conveniences for tests -----------------------------------------------------------------

    def pods_on_node(self, node_name: str) -> list[Obj]:
        with self._lock:
            bucket = self._objects.get("pods", {})
            return [clone(bucket[ns][name]) for ns, name in sorted(self._pods_by_node.get(node_name, ()))
                    if name in bucket.get(ns, {})]

    def count(self, resource: str | ResourceType) -> int:
        rt = self.resolve(resource)
        with self._lock:
            return sum(len(objs) for objs in self._objects.get(rt.key, {}).values())


__all__ = ["AlreadyExists", "ApiError", "BadRequest", "Conflict", "Forbidden", "Gone", "Invalid", "NotFound", "Store",
           "StoreEvent", "TooManyRequests", "Watch", "WatchEvent", "clone", "pdb_status", "pod_ready", "scaled_value"]
