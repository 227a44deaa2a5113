"""Fault injection for the API emulator (contract §2 of docs/architecture.md).

A fault selects requests by ``verb`` (audit verb: get, list, watch, create, update, patch, delete,
deletecollection), ``resource`` (plural), ``subresource`` (``""`` selects only the main resource,
None any), ``name`` and ``namespace``, and does one or more of:

- ``status``: answer with this HTTP code and a realistic ``Status`` body instead of serving the
  request (409 Conflict, 429 TooManyRequests with ``Retry-After``, 500, 503, ...);
- ``latency_ms``: wait before serving (or before failing);
- ``drop_watch``: for a watch, cut the stream (no terminating chunk) after ``after_events`` events;
- ``drop_connection``: close the socket without answering.

``count`` requests are affected (default 1); ``count: 0`` or ``None`` affects every matching request
until the faults are cleared.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"})
SELECTORS = ("verb", "resource", "subresource", "name", "namespace")
REASONS = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    401: ("Unauthorized", "Unauthorized"),
    403: ("Forbidden", "forbidden: injected fault"),
    404: ("NotFound", "the server could not find the requested resource"),
    409: ("Conflict", ""),
    410: ("Expired", "too old resource version"),
    422: ("Invalid", "the object is invalid: injected fault"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: injected fault"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted, but may still be processing the request"),
}


@dataclasses.dataclass
class Fault:
    verb: str | None = None
    resource: str | None = None
    subresource: str | None = None
    name: str | None = None
    namespace: str | None = None
    status: int | None = None
    count: int | None = 1
    latency_ms: int = 0
    drop_watch: bool = False
    drop_connection: bool = False
    after_events: int = 0
    retry_after: int | None = None
    message: str | None = None
    hits: int = 0

    def validate(self) -> "Fault":
        if not any(getattr(self, s) is not None for s in SELECTORS):
            raise ValueError(f"fault: give at least one of {', '.join(SELECTORS)}")
        if self.verb is not None and self.verb not in VERBS:
            raise ValueError(f"fault: verb {self.verb!r} is not one of {', '.join(sorted(VERBS))}")
        if self.status is not None and not (isinstance(self.status, int) and 400 <= self.status <= 599):
            raise ValueError(f"fault: status {self.status!r} must be an HTTP error code (400-599)")
        if not (self.status or self.latency_ms or self.drop_watch or self.drop_connection):
            raise ValueError("fault: give at least one of status, latency_ms, drop_watch, drop_connection")
        if self.count is not None and self.count < 0:
            raise ValueError(f"fault: count must be >= 0, got {self.count}")
        if self.latency_ms < 0:
            raise ValueError(f"fault: latency_ms must be >= 0, got {self.latency_ms}")
        return self

    def matches(self, request: dict[str, Any]) -> bool:
        if self.drop_watch and not (self.status or self.drop_connection) and request.get("verb") != "watch":
            return False
        for selector in SELECTORS:
            wanted = getattr(self, selector)
            if wanted is None:
                continue
            if selector == "subresource" and wanted == "":
                if request.get("subresource"):
                    return False
            elif request.get(selector) != wanted:
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def error_body(self, request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """The Status body and extra headers of an injected error."""
        assert self.status is not None
        fallback = ("InternalError" if self.status >= 500 else "BadRequest", f"injected fault {self.status}")
        reason, message = REASONS.get(self.status, fallback)
        resource = request.get("resource") or ""
        group = request.get("group") or ""
        group_resource = f"{resource}.{group}" if group else resource
        name = request.get("name") or ""
        details: dict[str, Any] = {}
        if name:
            details["name"] = name
        if group:
            details["group"] = group
        if resource:
            details["kind"] = resource
        headers: dict[str, str] = {}
        if self.status == 409:
            message = (f'Operation cannot be fulfilled on {group_resource} "{name}": the object has been modified; '
                       "please apply your changes to the latest version and try again")
        elif self.status == 404 and name:
            message = f'{group_resource} "{name}" not found'
        elif self.status == 429:
            retry = self.retry_after if self.retry_after is not None else 1
            headers["Retry-After"] = str(retry)
            details["retryAfterSeconds"] = retry
            if request.get("subresource") == "eviction":
                message = "Cannot evict pod as it would violate the pod's disruption budget."
                details["causes"] = [{"reason": "DisruptionBudget",
                                      "message": "The disruption budget (injected fault) needs 1 healthy pods and has 1 currently"}]
        elif self.status == 503 and self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.message:
            message = self.message
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                "reason": reason, "details": details, "code": self.status}
        return body, headers


def fault_from_dict(data: dict[str, Any]) -> Fault:
    """A fault from the JSON of ``POST /_sim/faults`` (unknown keys are an error)."""
    if not isinstance(data, dict):
        raise ValueError("fault: the body must be a JSON object")
    fields = {f.name for f in dataclasses.fields(Fault)} - {"hits"}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"fault: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    values = {k: v for k, v in data.items() if v is not None or k == "count"}
    for flag in ("drop_watch", "drop_connection"):
        values[flag] = bool(values.get(flag, False))
    values["latency_ms"] = int(values.get("latency_ms") or 0)
    return Fault(**values).validate()


class FaultSet:
    """The active faults; thread-safe. ``take`` consumes one use of the first matching fault."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        fault.validate()
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_dict() for f in self._faults]

    def take(self, request: dict[str, Any]) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(request):
                    fault.hits += 1
                    if fault.count and fault.hits >= fault.count:
                        self._faults.remove(fault)
                    return dataclasses.replace(fault)
        return None
