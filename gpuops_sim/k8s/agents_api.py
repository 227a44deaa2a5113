"""How the agents reach the API: ``StoreApi`` adapts the emulator's in-process store to
``agents.ClusterApi``; ``MemoryApi`` is a dict-backed stand-in for unit tests of the agents alone.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
import uuid
from typing import Any, Callable

from gpuops_sim.k8s.patch import merge_patch

Obj = dict[str, Any]
Callback = Callable[[str, str, Obj], None]

CLUSTER_SCOPED = frozenset({"nodes", "namespaces", "persistentvolumes", "storageclasses",
                            "customresourcedefinitions", "clusterroles", "clusterrolebindings"})


class MemoryApi:
    """A minimal object store with change notifications (no HTTP, no validation)."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {}
        self._subscribers: list[Callback] = []
        self._lock = threading.RLock()
        self._version = itertools.count(1)

    def _bucket(self, kind: str) -> dict[tuple[str, str], Obj]:
        return self._objects.setdefault(kind, {})

    @staticmethod
    def _ns(kind: str, namespace: str | None) -> str:
        return "" if kind in CLUSTER_SCOPED else (namespace or "default")

    def _notify(self, kind: str, event_type: str, obj: Obj) -> None:
        for callback in list(self._subscribers):
            callback(kind, event_type, copy.deepcopy(obj))

    def list(self, kind: str) -> list[Obj]:
        with self._lock:
            return [copy.deepcopy(o) for o in self._bucket(kind).values()]

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        with self._lock:
            obj = self._bucket(kind).get((self._ns(kind, namespace), name))
            return copy.deepcopy(obj) if obj is not None else None

    def create(self, kind: str, namespace: str | None, obj: Obj) -> Obj:
        with self._lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            ns = self._ns(kind, namespace or meta.get("namespace"))
            if ns:
                meta["namespace"] = ns
            key = (ns, meta["name"])
            if key in self._bucket(kind):
                raise ValueError(f"{kind} {key} already exists")
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            meta["generation"] = 1
            meta["resourceVersion"] = str(next(self._version))
            self._bucket(kind)[key] = obj
            self._notify(kind, "ADDED", obj)
            return copy.deepcopy(obj)

    def merge_patch(self, kind: str, namespace: str | None, name: str, patch: Obj,
                    subresource: str | None = None) -> Obj | None:
        with self._lock:
            key = (self._ns(kind, namespace), name)
            current = self._bucket(kind).get(key)
            if current is None:
                raise LookupError(f"{kind} {key} not found")
            updated = merge_patch(current, patch)
            if updated.get("spec") != current.get("spec"):
                updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            updated["metadata"]["resourceVersion"] = str(next(self._version))
            self._bucket(kind)[key] = updated
            self._notify(kind, "MODIFIED", updated)
            return copy.deepcopy(updated)

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        with self._lock:
            obj = self._bucket(kind).pop((self._ns(kind, namespace), name), None)
            if obj is None:
                raise LookupError(f"{kind} {namespace}/{name} not found")
            self._notify(kind, "DELETED", obj)

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None


class StoreApi:
    """``ClusterApi`` over the emulator's in-process store (no HTTP round trips).

    Written against the store interface requested from the emulator's author (see the "Agents
    and cluster" section of docs/simulator-k8s.md): ``list/get/create/patch/delete/subscribe`` by
    plural resource name. Missing objects raise an exception whose class derives from LookupError
    or carries ``status == 404``; both are mapped to LookupError here.
    """

    def __init__(self, emulator: Any) -> None:
        self.store = getattr(emulator, "store", emulator)

    @staticmethod
    def _missing(exc: Exception) -> bool:
        return isinstance(exc, LookupError) or getattr(exc, "status", None) == 404 or getattr(exc, "code", None) == 404

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if self._missing(exc) and not isinstance(exc, LookupError):
                raise LookupError(str(exc)) from exc
            raise

    def list(self, kind: str) -> list[Obj]:
        result = self._call(self.store.list, kind)
        return list(result.get("items", []) if isinstance(result, dict) else result)

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        try:
            return self._call(self.store.get, kind, namespace, name)
        except LookupError:
            return None

    def create(self, kind: str, namespace: str | None, obj: Obj) -> Obj:
        return self._call(self.store.create, kind, namespace, obj)

    def merge_patch(self, kind: str, namespace: str | None, name: str, patch: Obj,
                    subresource: str | None = None) -> Obj | None:
        return self._call(self.store.patch, kind, namespace, name, patch, patch_type="merge", subresource=subresource)

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        self._call(self.store.delete, kind, namespace, name)

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        return self.store.subscribe(callback)
