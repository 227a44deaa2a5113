"""The Kubernetes API emulator: an HTTP front end (standard library only) over ``store.Store``.

``Emulator(port=0).start()`` serves on 127.0.0.1 in a background thread (pytest, the simulated
cluster); ``Emulator(port=P).serve_forever()`` serves in the calling thread (a detached process).
It speaks the REST API the ``kubernetes`` Python client, ``kubernetes.dynamic``, the
kubernetes.core modules and kubectl use: legacy discovery (``/api``, ``/apis``, ...), ``/version``,
CRUD + watch on every resource of ``discovery.BUILTIN`` and of stored CRDs, the ``status``,
``eviction`` and ``binding`` subresources, server-side Table output for kubectl, plus the test
control surface under ``/_sim/`` (request log and fault injection, contract §2).

Plain HTTP without authentication: TLS is off in the simulator only; the product verifies TLS by
default against real clusters. Any bearer token is accepted.
"""

from __future__ import annotations

import collections
import json
import os
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from gpuops_sim.k8s.discovery import ResourceType
from gpuops_sim.k8s.faults import Fault, FaultSet, fault_from_dict
from gpuops_sim.k8s.patch import APPLY_PATCH, JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH
from gpuops_sim.k8s.store import ApiError, Gone, Store, pod_ready

Obj = dict[str, Any]
SERVER_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.4", "gitCommit": "0000000000000000000000000000000000000000",
                  "gitTreeState": "clean", "buildDate": "2025-04-22T00:00:00Z", "goVersion": "go1.23.6",
                  "compiler": "gc", "platform": "linux/amd64"}
DEFAULT_WATCH_TIMEOUT = 1800
REQUEST_LOG_LIMIT = 200_000
TOKEN = "gpuops-sim-token"


class RequestInfo:
    """What a request addresses (the apiserver's RequestInfo)."""

    def __init__(self) -> None:
        self.verb = "get"
        self.rt: ResourceType | None = None
        self.group = ""
        self.version = ""
        self.resource: str | None = None
        self.namespace: str | None = None
        self.name: str | None = None
        self.subresource: str | None = None
        self.discovery: str | None = None  # non-resource paths


def not_found_status(message: str = "the server could not find the requested resource") -> ApiError:
    return ApiError(404, "NotFound", message, {})


def parse_path(emulator: "Emulator", method: str, path: str, query: dict[str, str]) -> RequestInfo:
    info = RequestInfo()
    parts = [p for p in path.split("/") if p]
    watch = query.get("watch") in ("true", "1")
    if not parts or parts[0] not in ("api", "apis"):
        info.discovery = path
        return info
    if parts[0] == "api":
        if len(parts) == 1:
            info.discovery = "/api"
            return info
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) <= 2:
            info.discovery = "/apis" if len(parts) == 1 else f"group:{parts[1]}"
            return info
        group, version, rest = parts[1], parts[2], parts[3:]
    info.group, info.version = group, version
    if not rest:
        info.discovery = f"resources:{group}/{version}"
        return info
    if rest[0] == "namespaces" and len(rest) >= 3 and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")):
        info.namespace, rest = rest[1], rest[2:]
    info.resource = rest[0]
    info.rt = emulator.store.registry.lookup(group, version, rest[0])
    if len(rest) >= 2:
        info.name = rest[1]
    if len(rest) >= 3:
        info.subresource = "/".join(rest[2:])
    collection = info.name is None
    if method == "GET":
        info.verb = "watch" if watch else ("list" if collection else "get")
    else:
        info.verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                     "DELETE": "deletecollection" if collection else "delete"}.get(method, method.lower())
    return info


# --- Table output for kubectl -----------------------------------------------------------------------

def human_age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        created = time.mktime(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except ValueError:
        return "<unknown>"
    seconds = max(0, int(time.time() - created))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _col(name: str, kind: str = "string", priority: int = 0, fmt: str = "") -> Obj:
    return {"name": name, "type": kind, "format": fmt, "description": name, "priority": priority}


def _node_row(node: Obj) -> list[Any]:
    meta, status, spec = node["metadata"], node.get("status") or {}, node.get("spec") or {}
    ready = next((c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    state = "Ready" if ready == "True" else ("NotReady" if ready else "Unknown")
    if spec.get("unschedulable"):
        state += ",SchedulingDisabled"
    roles = sorted(k.split("/", 1)[1] for k in meta.get("labels") or {} if k.startswith("node-role.kubernetes.io/"))
    info = status.get("nodeInfo") or {}
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return [meta["name"], state, ",".join(roles) or "<none>", human_age(meta.get("creationTimestamp")),
            info.get("kubeletVersion", ""), addresses.get("InternalIP", "<none>"), addresses.get("ExternalIP", "<none>"),
            info.get("osImage", "<unknown>"), info.get("kernelVersion", "<unknown>"), info.get("containerRuntimeVersion", "<unknown>")]


def _pod_row(pod: Obj) -> list[Any]:
    meta, status, spec = pod["metadata"], pod.get("status") or {}, pod.get("spec") or {}
    containers = spec.get("containers") or []
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    if not statuses and pod_ready(pod):
        ready = len(containers)
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for container in statuses:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
    if meta.get("deletionTimestamp"):
        reason = "Terminating"
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    return [meta["name"], f"{ready}/{len(containers)}", reason, restarts, human_age(meta.get("creationTimestamp")),
            status.get("podIP") or "<none>", spec.get("nodeName") or "<none>", status.get("nominatedNodeName") or "<none>",
            "<none>"]


def _ds_row(ds: Obj) -> list[Any]:
    status = ds.get("status") or {}
    selector = ((ds.get("spec") or {}).get("template") or {}).get("spec", {}).get("nodeSelector") or {}
    return [ds["metadata"]["name"], status.get("desiredNumberScheduled", 0), status.get("currentNumberScheduled", 0),
            status.get("numberReady", 0), status.get("updatedNumberScheduled", 0), status.get("numberAvailable", 0),
            ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>",
            human_age(ds["metadata"].get("creationTimestamp"))]


def _pdb_row(pdb: Obj) -> list[Any]:
    spec, status = pdb.get("spec") or {}, pdb.get("status") or {}
    return [pdb["metadata"]["name"], str(spec.get("minAvailable", "N/A")), str(spec.get("maxUnavailable", "N/A")),
            status.get("disruptionsAllowed", 0), human_age(pdb["metadata"].get("creationTimestamp"))]


TABLES = {
    "nodes": ([_col("Name", fmt="name"), _col("Status"), _col("Roles"), _col("Age"), _col("Version"),
               _col("Internal-IP", priority=1), _col("External-IP", priority=1), _col("OS-Image", priority=1),
               _col("Kernel-Version", priority=1), _col("Container-Runtime", priority=1)], _node_row),
    "pods": ([_col("Name", fmt="name"), _col("Ready"), _col("Status"), _col("Restarts", "string"), _col("Age"),
              _col("IP", priority=1), _col("Node", priority=1), _col("Nominated Node", priority=1),
              _col("Readiness Gates", priority=1)], _pod_row),
    "daemonsets.apps": ([_col("Name", fmt="name"), _col("Desired", "integer"), _col("Current", "integer"),
                         _col("Ready", "integer"), _col("Up-to-date", "integer"), _col("Available", "integer"),
                         _col("Node Selector"), _col("Age")], _ds_row),
    "poddisruptionbudgets.policy": ([_col("Name", fmt="name"), _col("Min Available"), _col("Max Unavailable"),
                                     _col("Allowed Disruptions", "integer"), _col("Age")], _pdb_row),
    "namespaces": ([_col("Name", fmt="name"), _col("Status"), _col("Age")],
                   lambda o: [o["metadata"]["name"], (o.get("status") or {}).get("phase", "Active"),
                              human_age(o["metadata"].get("creationTimestamp"))]),
}
DEFAULT_TABLE = ([_col("Name", fmt="name"), _col("Age")],
                 lambda o: [o["metadata"]["name"], human_age(o["metadata"].get("creationTimestamp"))])


def table(rt: ResourceType, items: list[Obj], resource_version: str, include_object: str | None) -> Obj:
    columns, row = TABLES.get(rt.key, DEFAULT_TABLE)
    rows = []
    for obj in items:
        if include_object == "Object":
            embedded: Obj | None = obj
        elif include_object == "None":
            embedded = None
        else:
            embedded = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
        rows.append({"cells": row(obj), "object": embedded})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": columns, "rows": rows}


# --- the HTTP handler ---------------------------------------------------------------------------------

def node_availability(node: Obj) -> Obj:
    """What a node write left of the node's availability, kept in the request log (``node_after``),
    so that a test can replay how many nodes were out of service at any time: cordoned, the keys of
    its NoSchedule and NoExecute taints, and Ready."""
    spec, status = node.get("spec") or {}, node.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return {"unschedulable": bool(spec.get("unschedulable")), "ready": ready,
            "taints": sorted(t.get("key", "") for t in spec.get("taints") or [] if t.get("effect") in ("NoSchedule", "NoExecute"))}


class _Dropped(Exception):
    """The connection was closed on purpose (fault injection)."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "gpuops-sim-apiserver/1.32"
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if os.environ.get("GPUOPS_SIM_K8S_DEBUG"):
            super().log_message(format, *args)

    def do_GET(self) -> None:  # pylint: disable=invalid-name  # the names http.server dispatches to
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # --- plumbing -------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, payload: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _send_json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(obj, separators=(",", ":")).encode(), headers=headers)

    def _drop(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True
        raise _Dropped()

    # --- entry point ----------------------------------------------------------------------------

    def _handle(self) -> None:
        emulator = self.server.emulator
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        body = self._read_body()
        if split.path.startswith("/_sim/"):
            self._control(split.path, body)
            return
        info = parse_path(emulator, self.command, split.path, query)
        record = emulator._record_start(self.command, self.path, info, query, self.headers.get("Content-Type"),
                                        self.headers.get("User-Agent"))
        try:
            fault = emulator.faults.take(record)
            if fault is not None:
                if fault.latency_ms:
                    time.sleep(fault.latency_ms / 1000)
                if fault.drop_connection:
                    emulator._record_status(record, 0)
                    self._drop()
                if fault.status:
                    error_body, headers = fault.error_body(record)
                    emulator._record_status(record, fault.status)
                    self._send_json(fault.status, error_body, headers)
                    return
            if info.discovery is not None:
                code, payload = self._discovery(info.discovery)
                emulator._record_status(record, code)
                self._send_json(code, payload)
                return
            if info.verb == "watch":
                self._watch(info, query, record, fault)
                return
            code, payload = self._resource(info, query, body)
            if info.resource == "nodes" and info.verb in ("patch", "update") and code < 300 and isinstance(payload, dict):
                record["node_after"] = node_availability(payload)
            emulator._record_status(record, code)
            if isinstance(payload, bytes):
                self._send(code, payload)
            else:
                self._send_json(code, payload)
        except _Dropped:
            return
        except ApiError as error:
            emulator._record_status(record, error.code)
            headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
            self._send_json(error.code, error.body(), headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as error:  # pylint: disable=broad-except  # a bug here must not kill the server
            emulator._record_status(record, 500)
            self._send_json(500, ApiError(500, "InternalError", f"Internal error occurred: {error!r}").body())

    # --- /_sim/ ---------------------------------------------------------------------------------

    def _control(self, path: str, body: bytes) -> None:
        emulator = self.server.emulator
        try:
            if path == "/_sim/requests" and self.command == "GET":
                self._send_json(200, {"items": emulator.requests})
            elif path == "/_sim/requests" and self.command == "DELETE":
                emulator.clear_requests()
                self._send_json(200, {"items": []})
            elif path == "/_sim/faults" and self.command == "GET":
                self._send_json(200, {"items": emulator.faults.list()})
            elif path == "/_sim/faults" and self.command == "POST":
                fault = emulator.add_fault(**fault_from_dict(json.loads(body or b"{}")).to_dict())
                self._send_json(201, fault.to_dict())
            elif path == "/_sim/faults" and self.command == "DELETE":
                emulator.clear_faults()
                self._send_json(200, {"items": []})
            elif path == "/_sim/reset" and self.command == "POST":
                emulator.reset()
                self._send_json(200, {})
            else:
                self._send_json(404, {"error": f"no {self.command} {path} under /_sim/"})
        except (ValueError, TypeError) as error:
            self._send_json(400, {"error": str(error)})

    # --- discovery ------------------------------------------------------------------------------

    def _discovery(self, what: str) -> tuple[int, Any]:
        registry = self.server.emulator.store.registry
        path = what.rstrip("/") or "/"
        if path == "/api":
            return 200, registry.api_versions(f"127.0.0.1:{self.server.server_address[1]}")
        if path == "/apis":
            return 200, registry.group_list()
        if path.startswith("group:"):
            document = registry.group_document(path[len("group:"):])
            if document is None:
                raise not_found_status()
            return 200, document
        if path.startswith("resources:"):
            group, _slash, version = path[len("resources:"):].partition("/")
            document = registry.resource_list(group, version)
            if document is None:
                raise not_found_status()
            return 200, document
        if path == "/version":
            return 200, SERVER_VERSION
        if path in ("/healthz", "/livez", "/readyz"):
            return 200, "ok"
        raise not_found_status()

    # --- resources ------------------------------------------------------------------------------

    def _body_json(self, body: bytes, content_type: str | None = None) -> Any:
        if not body:
            return None
        try:
            if content_type == APPLY_PATCH:
                return yaml.safe_load(body.decode())
            return json.loads(body)
        except (ValueError, yaml.YAMLError) as error:
            raise ApiError(400, "BadRequest", f"the body of the request was in an unknown format: {error}") from None

    def _resource(self, info: RequestInfo, query: dict[str, str], raw: bytes) -> tuple[int, Any]:
        store = self.server.emulator.store
        rt = info.rt
        if rt is None:
            raise not_found_status()
        if info.namespace is not None and not rt.namespaced:
            raise not_found_status()
        dry_run = query.get("dryRun") == "All"
        if info.subresource and info.subresource not in rt.subresources:
            raise not_found_status()
        verb = info.verb
        namespace = info.namespace
        if verb == "list":
            return 200, self._list(rt, namespace, query)
        if verb == "get":
            if info.subresource not in (None, "status"):
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            obj = store.get_stored(rt, namespace, info.name or "")
            if "as=Table" in (self.headers.get("Accept") or ""):
                return 200, table(rt, [obj], obj["metadata"]["resourceVersion"], query.get("includeObject"))
            return 200, obj
        if rt.namespaced and namespace is None and verb in ("create", "update", "patch", "delete", "deletecollection"):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        content_type = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        if verb == "create":
            body = self._body_json(raw)
            if info.subresource == "eviction":
                return self._evict(info, body, dry_run)
            if info.subresource == "binding":
                target = (body or {}).get("target") or {}
                store.bind(namespace, info.name or "", target.get("name", ""))
                return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
            if info.name is not None:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            return 201, store.create(rt, namespace, body if body is not None else {}, dry_run=dry_run)
        if verb == "update":
            body = self._body_json(raw)
            return 200, store.update(rt, namespace, info.name or "", body if body is not None else {},
                                     subresource=info.subresource, dry_run=dry_run)
        if verb == "patch":
            if content_type not in (STRATEGIC_MERGE_PATCH, MERGE_PATCH, JSON_PATCH, APPLY_PATCH):
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted "
                               f"media types include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}, {STRATEGIC_MERGE_PATCH}")
            if content_type == STRATEGIC_MERGE_PATCH and rt.crd:
                raise ApiError(415, "UnsupportedMediaType", "strategic merge patch is not supported for custom resources")
            if content_type == APPLY_PATCH and not query.get("fieldManager"):
                raise ApiError(400, "BadRequest", "PATCH /apply requests require fieldManager to be set")
            body = self._body_json(raw, content_type)
            return 200, store.patch(rt, namespace, info.name or "", body if body is not None else {}, content_type,
                                    subresource=info.subresource, dry_run=dry_run)
        if verb == "delete":
            options = self._body_json(raw) or {}
            grace = query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
            deleted = store.delete(rt, namespace, info.name or "",
                                   grace_period_seconds=int(grace) if grace not in (None, "") else None,
                                   propagation_policy=query.get("propagationPolicy") or options.get("propagationPolicy"),
                                   preconditions=options.get("preconditions"),
                                   dry_run=dry_run or options.get("dryRun") == ["All"])
            if rt.key in ("pods", "namespaces") or rt.crd or deleted["metadata"].get("deletionTimestamp"):
                return 200, deleted
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                         "details": {"name": info.name, "group": rt.group, "kind": rt.plural,
                                     "uid": deleted["metadata"].get("uid")}}
        if verb == "deletecollection":
            store.delete_collection(rt, namespace, query.get("labelSelector"), query.get("fieldSelector"), dry_run=dry_run)
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _list(self, rt: ResourceType, namespace: str | None, query: dict[str, str]) -> Any:
        store = self.server.emulator.store
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
        page = store.list_stored(rt, namespace, query.get("labelSelector"), query.get("fieldSelector"),
                                 limit=limit or None, continue_token=query.get("continue") or None)
        items, rv, token, remaining = page.items, page.resource_version, page.continue_token, page.remaining
        if "as=Table" in (self.headers.get("Accept") or ""):
            listed = table(rt, items, rv, query.get("includeObject"))
            # kubectl pages its tables too (500 rows a request): without the token it stops at the first page.
            if token:
                listed["metadata"]["continue"] = token
            return listed
        meta: Obj = {"resourceVersion": rv}
        if token:
            meta["continue"] = token
            if remaining is not None and not query.get("labelSelector") and not query.get("fieldSelector"):
                meta["remainingItemCount"] = remaining
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": items}

    def _evict(self, info: RequestInfo, body: Any, dry_run: bool) -> tuple[int, Any]:
        store = self.server.emulator.store
        body = body or {}
        body_name = (body.get("metadata") or {}).get("name")
        if body_name and body_name != info.name:
            raise ApiError(400, "BadRequest", "name in URL does not match name in Eviction object")
        options = body.get("deleteOptions") or {}
        grace = options.get("gracePeriodSeconds")
        store.evict(info.namespace, info.name or "", dry_run=dry_run or options.get("dryRun") == ["All"],
                    grace_period_seconds=grace)
        return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # --- watch ----------------------------------------------------------------------------------

    def _watch(self, info: RequestInfo, query: dict[str, str], record: Obj, fault: Fault | None) -> None:
        emulator = self.server.emulator
        rt = info.rt
        if rt is None or (info.namespace is not None and not rt.namespaced):
            raise not_found_status()
        field_selector = query.get("fieldSelector")
        if info.name:  # GET .../NAME?watch=true
            field_selector = ",".join(filter(None, [field_selector, f"metadata.name={info.name}"]))
        timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        gone = None
        watcher = None
        try:
            watcher = emulator.store.watch(rt, info.namespace, query.get("resourceVersion"), query.get("labelSelector"),
                                           field_selector)
        except Gone as error:
            gone = error
        emulator._record_status(record, 200)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        cut_after = fault.after_events if fault is not None and fault.drop_watch else None
        sent = 0
        try:
            if gone is not None:
                self._chunk(json.dumps({"type": "ERROR", "object": gone.body()}).encode() + b"\n")
                self._chunk(b"")
                return
            assert watcher is not None
            deadline = time.monotonic() + timeout
            while True:
                if cut_after is not None and sent >= cut_after:
                    self._drop()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                event = watcher.next(min(remaining, 1.0))
                if event is None:
                    if watcher.closed or self._peer_closed():
                        break
                    continue
                self._chunk(event.line)
                sent += 1
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            if watcher is not None:
                watcher.close()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _peer_closed(self) -> bool:
        try:
            readable = select.select([self.connection], [], [], 0)[0]
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], emulator: "Emulator") -> None:
        self.emulator = emulator
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet on client disconnects
        if os.environ.get("GPUOPS_SIM_K8S_DEBUG"):
            super().handle_error(request, client_address)


# --- the emulator -------------------------------------------------------------------------------------

class Emulator:
    """An API server on 127.0.0.1 backed by an in-memory ``Store``.

    ``start()`` / ``stop()``, ``url``, ``write_kubeconfig(path)``, ``requests`` (the request log,
    contract §2), ``clear_requests()``, ``add_fault(**fields)`` / ``clear_faults()``, ``reset()``;
    ``store`` is the in-process API; ``termination_delay`` (seconds) keeps deleted pods
    Terminating that long instead of removing them at once.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, termination_delay: float = 0.0,
                 history_limit: int = 50_000, token: str = TOKEN) -> None:
        self.host = host
        self.requested_port = port
        self.token = token
        self.store = Store(history_limit=history_limit, termination_delay=termination_delay)
        self.default_termination_delay = termination_delay
        self.faults = FaultSet()
        self._log: collections.deque[Obj] = collections.deque(maxlen=REQUEST_LOG_LIMIT)
        self._log_lock = threading.Lock()
        self._seq = 0
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def _bind(self) -> _Server:
        if self._httpd is None:
            self._httpd = _Server((self.host, self.requested_port), self)
        return self._httpd

    def start(self) -> "Emulator":
        httpd = self._bind()
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"k8s-emulator-{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self, kubeconfig: str | None = None) -> None:
        """Serve in this thread until interrupted (a detached emulator process)."""
        httpd = self._bind()
        if kubeconfig:
            self.write_kubeconfig(kubeconfig)
        try:
            httpd.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self.store.close()
            httpd.server_close()

    def stop(self) -> None:
        self.store.close()
        if self._httpd is not None:
            if self._thread is not None:
                self._httpd.shutdown()
                self._thread.join(5)
            self._httpd.server_close()
            self._httpd = None
            self._thread = None

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._bind().server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def termination_delay(self) -> float:
        return self.store.termination_delay

    @termination_delay.setter
    def termination_delay(self, seconds: float) -> None:
        self.store.termination_delay = seconds

    def reset(self) -> None:
        """Back to an empty cluster (default namespaces only), no faults, empty request log."""
        self.store.reset()
        self.store.termination_delay = self.default_termination_delay
        self.clear_faults()
        self.clear_requests()

    def kubeconfig(self, context: str = "gpuops-sim") -> Obj:
        return {"apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": context,
                "clusters": [{"name": context, "cluster": {"server": self.url}}],
                "users": [{"name": context, "user": {"token": self.token}}],
                "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": "default"}}]}

    def write_kubeconfig(self, path: str, context: str = "gpuops-sim") -> str:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("# Written by the gpuops simulator: plain HTTP on loopback, for tests only.\n")
            yaml.safe_dump(self.kubeconfig(context), handle, sort_keys=False)
        os.chmod(path, 0o600)
        return path

    # --- request log ----------------------------------------------------------------------------

    def _record_start(self, method: str, raw_path: str, info: RequestInfo, query: dict[str, str],
                      content_type: str | None, user_agent: str | None = None) -> Obj:
        with self._log_lock:
            self._seq += 1
            record = {"seq": self._seq, "verb": info.verb, "method": method, "path": raw_path.split("?", 1)[0],
                      "resource": info.resource, "subresource": info.subresource, "namespace": info.namespace,
                      "name": info.name, "query": query, "content_type": content_type, "status": None,
                      "group": info.group, "user_agent": user_agent}
        return record

    def _record_status(self, record: Obj, status: int) -> None:
        if record["status"] is None:
            record["status"] = status
            with self._log_lock:
                self._log.append(record)

    @property
    def requests(self) -> list[Obj]:
        """The request log, oldest first (copies)."""
        with self._log_lock:
            return [dict(r, query=dict(r["query"])) for r in self._log]

    def clear_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    # --- faults ---------------------------------------------------------------------------------

    def add_fault(self, **fields: Any) -> Fault:
        fields.pop("hits", None)
        return self.faults.add(Fault(**fields))

    def clear_faults(self) -> None:
        self.faults.clear()
