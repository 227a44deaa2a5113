"""The simulated cluster's node side: kubelet, DaemonSet/ReplicaSet/PDB controllers, scheduler,
and NVIDIA's device plugin, GPU feature discovery and DCGM exporter.

Everything runs on ONE thread (``Reactor``): store events and timers are queued to it, so the
agents keep plain in-memory indexes without locks, and a fleet of 1,000 nodes costs one thread.
Store callbacks only enqueue. Timers exist for start-up delays, GFD's relabel interval and crash
back-off only; nothing polls.

The agents reach the API through ``ClusterApi`` (see ``agents_api.py`` for the adapter to the
emulator's store) and the nodes' GPUs through ``gpuops_sim.nvml`` (contract §6). Which pod holds
which device is served as a real kubelet serves it: the PodResources v1 gRPC API on a unix socket
per node (``podresources``), read on gRPC's threads from snapshots the reactor publishes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import itertools
import json
import logging
import queue
import random
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Protocol

from gpuops_sim.k8s import agents_nfd as nfd
from gpuops_sim.k8s import containers
from gpuops_sim.k8s import agents_nvidia as nv
from gpuops_sim.k8s.agents_nfd_daemons import NodeFeatureDiscoveryAgents
from gpuops_sim.k8s.agents_placement import (daemon_pod_fits, matches_node, node_ready, pod_requests,
                                             schedule_blockers, _match_expression)

LOG = logging.getLogger("gpuops_sim.k8s.agents")

USED_MEMORY_ANNOTATION = "gpuops.io/sim-used-memory-mib"
REVISION_LABEL = "controller-revision-hash"
DEFAULT_USED_MEMORY_MIB = 512
DCGM_CLIENT = "nv-hostengine (dcgm-exporter)"
# Like kube-scheduler's percentageOfNodesToScore: stop scanning once this many nodes fit.
FEASIBLE_NODES_TO_SCORE = 50
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

Obj = dict[str, Any]


class ClusterApi(Protocol):
    """What the agents need from the API server (kinds: plural resource names, e.g. "pods")."""

    def list(self, kind: str) -> list[Obj]: ...

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None: ...

    def create(self, kind: str, namespace: str | None, obj: Obj) -> Obj: ...

    def merge_patch(self, kind: str, namespace: str | None, name: str, patch: Obj,
                    subresource: str | None = None) -> Obj | None: ...

    def delete(self, kind: str, namespace: str | None, name: str) -> None: ...

    def subscribe(self, callback: Callable[[str, str, Obj], None]) -> Callable[[], None]:
        """Call ``callback(kind, event_type, obj)`` for every change; returns an unsubscribe."""


# --- the one thread ---------------------------------------------------------------------------

class Timer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Reactor:
    """A single thread running queued calls and timers in order."""

    def __init__(self, name: str = "gpuops-sim-agents") -> None:
        self._queue: queue.Queue[tuple[Callable[..., None], tuple] | None] = queue.Queue()
        self._timers: list[tuple[float, int, Timer, Callable[..., None], tuple]] = []
        self._seq = itertools.count()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopping = False
        self._idle = threading.Condition()
        self._busy = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._queue.put(None)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the reactor thread (thread-safe)."""
        self._queue.put((fn, args))

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> Timer:
        """Run ``fn(*args)`` after ``delay`` seconds; only from the reactor thread."""
        timer = Timer()
        heapq.heappush(self._timers, (time.monotonic() + max(0.0, delay), next(self._seq), timer, fn, args))
        return timer

    def _run(self) -> None:
        while not self._stopping:
            timeout = None
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = ()
            if item is None:
                break
            if item:
                self._call(*item)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _due, _order, timer, fn, args = heapq.heappop(self._timers)
                if not timer.cancelled:
                    self._call(fn, args)

    @staticmethod
    def _call(fn: Callable[..., None], args: tuple) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - one failing agent step must not stop the cluster
            LOG.exception("agent step %s failed", getattr(fn, "__name__", fn))

    def sync(self, timeout: float = 10.0) -> None:
        """Wait until everything queued before this call has run (not timers); for tests and CLI."""
        if threading.current_thread() is self._thread:
            return
        done = threading.Event()
        self.post(done.set)
        done.wait(timeout)


# --- helpers over API objects -----------------------------------------------------------------

def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = _meta(obj)
    return (meta.get("namespace") or "", meta.get("name") or "")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def random_suffix(length: int = 5) -> str:
    return "".join(random.choice(_NAME_ALPHABET) for _position in range(length))


def template_hash(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector; an empty selector matches everything, None matches nothing."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != str(value):
            return False
    return all(_match_expression(labels, e) for e in selector.get("matchExpressions") or [])


def owner_of(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for ref in _meta(pod).get("ownerReferences") or []:
        if ref.get("kind") == kind:
            return ref
    return None


def _pod_terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def _ready_conditions(ready: bool, message: str = "") -> list[dict[str, Any]]:
    now = _now()
    status = "True" if ready else "False"
    conditions = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                  {"type": "Initialized", "status": "True", "lastTransitionTime": now}]
    for kind in ("ContainersReady", "Ready"):
        condition = {"type": kind, "status": status, "lastTransitionTime": now}
        if not ready:
            condition.update(reason="ContainersNotReady", message=message or "containers with unready status")
        conditions.append(condition)
    return conditions


def running_status(pod: Mapping[str, Any], ready: bool, node_ip: str = "10.0.0.1") -> dict[str, Any]:
    containers = (pod.get("spec") or {}).get("containers") or []
    now = _now()
    return {
        "phase": "Running",
        "hostIP": node_ip,
        "podIP": node_ip,
        "startTime": now,
        "conditions": _ready_conditions(ready),
        "containerStatuses": [{"name": c.get("name"), "image": c.get("image"), "ready": ready, "started": True,
                               "restartCount": 0, "state": {"running": {"startedAt": now}}} for c in containers],
    }


def crashloop_status(pod: Mapping[str, Any], message: str, restarts: int, backoff: float) -> dict[str, Any]:
    containers = (pod.get("spec") or {}).get("containers") or []
    statuses = []
    for c in containers:
        statuses.append({
            "name": c.get("name"), "image": c.get("image"), "ready": False, "started": False,
            "restartCount": restarts,
            "state": {"waiting": {"reason": "CrashLoopBackOff",
                                  "message": f"back-off {int(backoff)}s restarting failed container={c.get('name')} "
                                             f"pod={_meta(pod).get('name')}"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": message,
                                         "finishedAt": _now()}},
        })
    return {"phase": "Running", "conditions": _ready_conditions(False, message), "containerStatuses": statuses}


# --- per-node and per-daemon state ------------------------------------------------------------

@dataclasses.dataclass
class Daemon:
    """One running daemon pod (device plugin, GFD, DCGM exporter or a plain DaemonSet pod)."""

    key: tuple[str, str]
    node: str
    roles: dict[str, Mapping[str, Any]]
    pod: Obj
    alive: bool = True
    restarts: int = 0
    timer: Timer | None = None  # start-up / crash back-off
    gfd_timer: Timer | None = None  # GFD's relabel interval
    dcgm_holding: bool = False


@dataclasses.dataclass
class NodeState:
    name: str
    node: Obj
    devices: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # what the plugin advertises now
    advertised: set[str] = dataclasses.field(default_factory=set)  # every resource it ever advertised
    allocated: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # device id → pod key
    requested: dict[str, int] = dataclasses.field(default_factory=dict)  # by bound, non-terminal pods
    pods: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # bound, non-terminal pods
    gfd_published: tuple[dict[str, str], str] | None = None  # GFD's last labels and their timestamp
    # What the PodResources API lists: pod key → [(container, resource, device ids)]. Replaced, never
    # changed in place, so that gRPC's threads read a consistent snapshot.
    pod_devices: dict[tuple[str, str], tuple[tuple[str, str, tuple[str, ...]], ...]] = dataclasses.field(default_factory=dict)
    held: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # bound while the kubelet is down


@dataclasses.dataclass
class WorkloadPod:
    key: tuple[str, str]
    node: str
    requests: dict[str, int]
    devices: list[str] = dataclasses.field(default_factory=list)
    pids: list[int] = dataclasses.field(default_factory=list)
    started: bool = False


@dataclasses.dataclass
class AgentSettings:
    plugin_delay: float = 1.0  # device plugin and GFD start-up
    gfd_interval: float = 60.0
    nfd_interval: float = 60.0  # nfd-worker's core.sleepInterval
    pod_start_delay: float = 0.0  # workload and plain daemon pods
    crash_backoff: float = 10.0  # first CrashLoopBackOff delay; doubles up to crash_backoff_max
    crash_backoff_max: float = 300.0
    used_memory_mib: int = DEFAULT_USED_MEMORY_MIB


class Agents(NodeFeatureDiscoveryAgents):
    """All simulated node agents and controllers of one cluster."""

    def __init__(self, api: ClusterApi, state_path: Callable[[str], str | None],
                 settings: AgentSettings | None = None, nvml: Any = None,
                 pod_resources_socket: Callable[[str], str | None] | None = None,
                 node_root: Callable[[str], str | None] | None = None) -> None:
        self.api = api
        self.state_path = state_path
        # The node's root directory (hostPath volumes lie under it); None: daemons write no host files.
        self.node_root = node_root
        self.pod_resources: Any = None
        if pod_resources_socket is not None:
            from gpuops_sim.k8s.podresources import PodResourcesServers  # pylint: disable=import-outside-toplevel
            self.pod_resources = PodResourcesServers(self.pod_resources_of, pod_resources_socket)
        self.settings = settings or AgentSettings()
        self.reactor = Reactor()
        self._nvml = nvml
        self._unsubscribe: Callable[[], None] | None = None
        self.nodes: dict[str, NodeState] = {}
        self.daemonsets: dict[tuple[str, str], Obj] = {}
        self.replicasets: dict[tuple[str, str], Obj] = {}
        self.pdbs: dict[tuple[str, str], Obj] = {}
        self.pods: dict[tuple[str, str], Obj] = {}
        self.ds_pods: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}  # ds key → node → pod key
        self.ds_wanted: dict[tuple[str, str], set[str]] = {}  # ds key → nodes it selects
        self.ds_revisions: dict[tuple[str, str], str] = {}  # ds key → hash of its pod template
        self._rotation = 0  # where the scheduler starts scanning nodes
        self.daemons: dict[tuple[str, str], Daemon] = {}
        self.workloads: dict[tuple[str, str], WorkloadPod] = {}
        self.pending: set[tuple[str, str]] = set()
        self._dirty: dict[str, set] = {"ds": set(), "rs": set(), "pdb": set()}
        self._flush_scheduled = False
        self._retry_scheduled = False
        self._pids = itertools.count(200000)
        self._nfd_init()

    # -- lifecycle --

    @property
    def nvml(self) -> Any:
        if self._nvml is None:
            self._nvml = nvml_api()
        return self._nvml

    def start(self) -> None:
        self._unsubscribe = self.api.subscribe(self._on_event)
        self.reactor.start()
        self.reactor.post(self._bootstrap)
        self.reactor.sync()

    def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        self.reactor.stop()
        if self.pod_resources is not None:
            self.pod_resources.stop_all()

    def pod_resources_of(self, node: str) -> tuple[Mapping[tuple[str, str], Any], Mapping[str, Any]]:
        """What the node's kubelet answers on its PodResources socket: (pods' devices, allocatable)."""
        state = self.nodes.get(node)
        if state is None:
            return {}, {}
        return state.pod_devices, state.devices

    def sync(self, timeout: float = 10.0) -> None:
        self.reactor.sync(timeout)

    def _on_event(self, kind: str, event_type: str, obj: Obj) -> None:
        self.reactor.post(self._dispatch, kind, event_type, obj)

    def _bootstrap(self) -> None:
        for kind in ("nodes", "configmaps", "daemonsets", "replicasets", "poddisruptionbudgets", "pods"):
            for obj in self.api.list(kind):
                self._dispatch(kind, "ADDED", obj)
        self._nfd_bootstrap()

    def _cached(self, kind: str, obj: Obj) -> Obj | None:
        if kind == "pods":
            return self.pods.get(_key(obj))
        state = self.nodes.get(_meta(obj).get("name"))
        return state.node if state else None

    def _dispatch(self, kind: str, event_type: str, obj: Obj) -> None:
        if event_type != "DELETED" and kind in ("pods", "nodes") and _older(obj, self._cached(kind, obj)):
            return  # our own later write is already cached; this event predates it
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(event_type, obj)

    # -- coalesced follow-ups (status writes, pending retries) --

    def _mark(self, what: str, key: Any) -> None:
        self._dirty[what].add(key)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.reactor.call_later(0, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, {"ds": set(), "rs": set(), "pdb": set()}
        for key in dirty["rs"]:
            self._reconcile_replicaset(key)
        for key in dirty["ds"]:
            self._write_ds_status(key)
        for namespace in dirty["pdb"]:
            self._write_pdb_status(namespace)

    def _retry_pending_soon(self) -> None:
        if self.pending and not self._retry_scheduled:
            self._retry_scheduled = True
            self.reactor.call_later(0, self._retry_pending)

    def _retry_pending(self) -> None:
        self._retry_scheduled = False
        for key in sorted(self.pending):
            pod = self.pods.get(key)
            if pod is not None:
                self._schedule(pod)

    # -- nodes --

    def _on_nodes(self, event_type: str, node: Obj) -> None:
        name = _meta(node).get("name")
        if event_type == "DELETED":
            state = self.nodes.pop(name, None)
            if self.pod_resources is not None:
                self.pod_resources.stop(name)
            if state:
                for key in list(state.pods):
                    self._safe_delete("pods", *key)
            for by_node in self.ds_pods.values():
                by_node.pop(name, None)
            for ds_key, selected in self.ds_wanted.items():
                if name in selected:
                    selected.discard(name)
                    self._mark("ds", ds_key)
            return
        state = self.nodes.get(name)
        old = state.node if state else None
        if state is None:
            state = self.nodes[name] = NodeState(name=name, node=node)
            if self.pod_resources is not None:
                self.pod_resources.start(name)
            self._nfd_node_added(name)
        self._node_changed(state, old, node)

    def _node_changed(self, state: NodeState, old: Obj | None, node: Obj) -> None:
        """Follow-ups of a node change, whether seen as an event or made by our own write."""
        name = state.name
        state.node = node
        if old is not None and not node_ready(old) and node_ready(node):
            # The kubelet is back (after a reboot): it starts the pods bound to its node meanwhile.
            held, state.held = state.held, set()
            for key in sorted(held):
                pod = self.pods.get(key)
                if pod is not None and key not in self.daemons and key not in self.workloads:
                    self._start_pod(pod)
        placement_changed = old is None or _placement_view(old) != _placement_view(node)
        if placement_changed:
            for ds_key in list(self.daemonsets):
                self._reconcile_ds_on_node(ds_key, name)
            self._retry_pending_soon()
        elif _allocatable(old) != _allocatable(node):
            self._retry_pending_soon()
        if old is not None and _labels(old).get(nv.CONFIG_LABEL) != _labels(node).get(nv.CONFIG_LABEL):
            self._restart_configured_daemons(name)

    # -- DaemonSets --

    def _on_daemonsets(self, event_type: str, ds: Obj) -> None:
        key = _key(ds)
        if event_type == "DELETED":
            self.daemonsets.pop(key, None)
            self.ds_wanted.pop(key, None)
            self.ds_revisions.pop(key, None)
            for pod_key in list(self.ds_pods.pop(key, {}).values()):
                self._safe_delete("pods", *pod_key)
            return
        previous = self.daemonsets.get(key)
        self.daemonsets[key] = ds
        self.ds_pods.setdefault(key, {})
        # The agents write each DaemonSet's status themselves, and a node or pod change reconciles
        # its own node: only a new DaemonSet or a new spec needs every node looked at again. (Doing
        # it on every status write made the agents cost nodes x status writes on a large cluster.)
        if previous is not None and previous.get("spec") == ds.get("spec"):
            return
        self.ds_revisions[key] = template_hash((ds.get("spec") or {}).get("template") or {})
        for node_name in list(self.nodes):
            self._reconcile_ds_on_node(key, node_name)
        self._mark("ds", key)

    def _reconcile_ds_on_node(self, ds_key: tuple[str, str], node_name: str) -> None:
        ds = self.daemonsets.get(ds_key)
        state = self.nodes.get(node_name)
        if ds is None or state is None:
            return
        template = (ds.get("spec") or {}).get("template") or {}
        wanted = daemon_pod_fits(template.get("spec") or {}, state.node)
        selected = self.ds_wanted.setdefault(ds_key, set())
        if wanted != (node_name in selected):
            (selected.add if wanted else selected.discard)(node_name)
            self._mark("ds", ds_key)
        by_node = self.ds_pods.setdefault(ds_key, {})
        pod_key = by_node.get(node_name)
        revision = self.ds_revisions[ds_key]
        if pod_key is not None:
            pod = self.pods.get(pod_key)
            current = pod is not None and _labels(pod).get(REVISION_LABEL) == revision
            if wanted and current:
                return
            by_node.pop(node_name, None)
            self._safe_delete("pods", *pod_key)
            self._mark("ds", ds_key)
        if wanted:
            by_node[node_name] = self._create_ds_pod(ds, template, node_name, revision)
            self._mark("ds", ds_key)

    def _create_ds_pod(self, ds: Obj, template: Obj, node_name: str, revision: str) -> tuple[str, str]:
        namespace, ds_name = _key(ds)
        meta = template.get("metadata") or {}
        spec = json.loads(json.dumps(template.get("spec") or {}))
        spec["nodeName"] = node_name
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": f"{ds_name}-{random_suffix()}", "namespace": namespace,
                "labels": {**(meta.get("labels") or {}), REVISION_LABEL: revision},
                "annotations": dict(meta.get("annotations") or {}),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": ds_name,
                                     "uid": _meta(ds).get("uid", ""), "controller": True,
                                     "blockOwnerDeletion": True}],
            },
            "spec": spec,
            "status": {"phase": "Pending"},
        }
        created = self.api.create("pods", namespace, pod)
        key = _key(created)
        self.pods[key] = created
        self._start_pod(created)
        return key

    def _write_ds_status(self, ds_key: tuple[str, str]) -> None:
        ds = self.daemonsets.get(ds_key)
        if ds is None:
            return
        revision = self.ds_revisions[ds_key]
        pods = [self.pods.get(k) for k in self.ds_pods.get(ds_key, {}).values()]
        pods = [p for p in pods if p is not None]
        ready = sum(1 for p in pods if _pod_ready(p))
        desired = len(self.ds_wanted.get(ds_key, ()))
        status = {
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": len(pods),
            "updatedNumberScheduled": sum(1 for p in pods if _labels(p).get(REVISION_LABEL) == revision),
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": max(0, desired - ready),
            "numberMisscheduled": 0,
            "observedGeneration": _meta(ds).get("generation", 1),
        }
        if all((ds.get("status") or {}).get(k) == v for k, v in status.items()):
            return
        self._safe_patch("daemonsets", *ds_key, {"status": status}, subresource="status")

    # -- pods --

    def _on_pods(self, event_type: str, pod: Obj) -> None:
        key = _key(pod)
        if event_type == "DELETED":
            self._pod_gone(key, pod)
            return
        self.pods[key] = pod
        if _meta(pod).get("deletionTimestamp"):
            self._pod_gone(key, pod)
            self._safe_delete("pods", *key, force=True)
            return
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            if key not in self.workloads and (key not in self.pending or event_type == "ADDED"):
                self._schedule(pod)
            return
        self.pending.discard(key)
        if key not in self.daemons and key not in self.workloads:
            self._start_pod(pod)
        self._note_pod_status(pod)

    def _note_pod_status(self, pod: Obj) -> None:
        ds_ref = owner_of(pod, "DaemonSet")
        if ds_ref is not None:
            self._mark("ds", (_meta(pod).get("namespace") or "", ds_ref.get("name")))
        if self.pdbs:
            self._mark("pdb", _meta(pod).get("namespace") or "")

    def _start_pod(self, pod: Obj) -> None:
        """The kubelet admits a pod bound to its node."""
        key = _key(pod)
        node_name = (pod.get("spec") or {}).get("nodeName")
        state = self.nodes.get(node_name)
        if state is None or _pod_terminal(pod):
            return
        if not node_ready(state.node):
            # No kubelet runs on the node (it is rebooting, or held back at boot): the pod waits for it.
            state.held.add(key)
            return
        if owner_of(pod, "DaemonSet") is not None:
            spec = pod.get("spec") or {}
            daemon = Daemon(key=key, node=node_name, roles={**nv.pod_roles(spec), **nfd.pod_roles(spec)}, pod=pod)
            self.daemons[key] = daemon
            state.pods.add(key)
            delay = self.settings.plugin_delay if daemon.roles else self.settings.pod_start_delay
            daemon.timer = self.reactor.call_later(delay, self._daemon_started, daemon)
            return
        requests = pod_requests(pod.get("spec") or {})
        workload = WorkloadPod(key=key, node=node_name, requests=requests)
        self.workloads[key] = workload
        state.pods.add(key)
        for name, count in requests.items():
            state.requested[name] = state.requested.get(name, 0) + count
        self.reactor.call_later(self.settings.pod_start_delay, self._workload_started, workload)

    def _pod_gone(self, key: tuple[str, str], pod: Obj) -> None:
        self.pods.pop(key, None)
        held_on = self.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        if held_on is not None:
            held_on.held.discard(key)
        self.pending.discard(key)
        daemon = self.daemons.pop(key, None)
        if daemon is not None:
            self._daemon_stopped(daemon)
        workload = self.workloads.pop(key, None)
        if workload is not None:
            self._release(workload)
        ds_ref = owner_of(pod, "DaemonSet")
        if ds_ref is not None:
            ds_key = (_meta(pod).get("namespace") or "", ds_ref.get("name"))
            node_name = (pod.get("spec") or {}).get("nodeName")
            by_node = self.ds_pods.get(ds_key, {})
            if by_node.get(node_name) == key:
                by_node.pop(node_name)
                self._reconcile_ds_on_node(ds_key, node_name)  # recreate a deleted daemon pod, as the controller does
            self._mark("ds", ds_key)
        rs_ref = owner_of(pod, "ReplicaSet")
        if rs_ref is not None:
            self._mark("rs", (_meta(pod).get("namespace") or "", rs_ref.get("name")))
        if self.pdbs:
            self._mark("pdb", _meta(pod).get("namespace") or "")
        self._retry_pending_soon()

    # -- daemons --

    def _daemon_started(self, daemon: Daemon) -> None:
        if not daemon.alive:
            return
        daemon.timer = None
        ready = True
        error = ""
        if nv.ROLE_DEVICE_PLUGIN in daemon.roles:
            error = self._plugin_start(daemon)
            ready = not error
        if nv.ROLE_GFD in daemon.roles:
            error = error or self._gfd_run(daemon)
            ready = not error
        if nfd.ROLE_NFD_WORKER in daemon.roles:
            error = error or self._nfd_worker_started(daemon)
            ready = not error
        if nv.ROLE_DCGM_EXPORTER in daemon.roles and not daemon.dcgm_holding:
            self._dcgm_attach(daemon)
        pod = self.pods.get(daemon.key, daemon.pod)
        if ready:
            daemon.restarts = 0
            status = running_status(pod, True)
        else:
            backoff = min(self.settings.crash_backoff * (2 ** daemon.restarts), self.settings.crash_backoff_max)
            daemon.restarts += 1
            status = crashloop_status(pod, error, daemon.restarts, backoff)
            daemon.timer = self.reactor.call_later(backoff, self._daemon_started, daemon)
        self._safe_patch("pods", *daemon.key, {"status": status}, subresource="status")

    def _daemon_stopped(self, daemon: Daemon) -> None:
        daemon.alive = False
        for timer in (daemon.timer, daemon.gfd_timer):
            if timer:
                timer.cancel()
        state = self.nodes.get(daemon.node)
        if state is None:
            return
        state.pods.discard(daemon.key)
        if nv.ROLE_DEVICE_PLUGIN in daemon.roles:
            self._plugin_advertise(state, {})
        if nv.ROLE_GFD in daemon.roles:
            self._gfd_stopped(daemon)
        if nfd.ROLE_NFD_WORKER in daemon.roles:
            self._nfd_worker_stopped(daemon)
        if daemon.dcgm_holding:
            self._dcgm_release(daemon)

    def _restart_configured_daemons(self, node_name: str) -> None:
        """The GPU Operator's config-manager sidecar restarts the daemon when the config label changes."""
        for daemon in self.daemons.values():
            if daemon.node == node_name and (nv.ROLE_DEVICE_PLUGIN in daemon.roles or nv.ROLE_GFD in daemon.roles):
                if daemon.timer:
                    daemon.timer.cancel()
                if nv.ROLE_DEVICE_PLUGIN in daemon.roles:
                    self._plugin_advertise(self.nodes[node_name], {})
                daemon.timer = self.reactor.call_later(self.settings.plugin_delay, self._daemon_started, daemon)

    def _node_gpus(self, node_name: str) -> dict[str, Any]:
        path = self.state_path(node_name)
        if not path:
            return {"gpus": []}
        return self.nvml.show(path)

    def _daemon_config(self, daemon: Daemon, role: str) -> nv.PluginConfig:
        pod = self.pods.get(daemon.key, daemon.pod)
        spec = pod.get("spec") or {}
        container = daemon.roles[role]
        namespace = daemon.key[0]
        config_maps = {}
        for name in nv.config_map_names(spec, container):
            cm = self.api.get("configmaps", namespace, name)
            config_maps[name] = None if cm is None else dict(cm.get("data") or {})
        return nv.resolve_config(spec, container, config_maps, _labels(self.nodes[daemon.node].node))

    def _plugin_start(self, daemon: Daemon) -> str:
        """Read GPUs and config once, advertise; returns the crash message or ''."""
        state = self.nodes.get(daemon.node)
        if state is None:
            return ""
        try:
            config = self._daemon_config(daemon, nv.ROLE_DEVICE_PLUGIN)
            inventory = nv.plugin_inventory(self._node_gpus(daemon.node), config)
        except (nv.PluginError, OSError, ValueError) as exc:
            self._plugin_advertise(state, {})
            return str(exc)
        self._plugin_advertise(state, inventory)
        return ""

    def _plugin_advertise(self, state: NodeState, inventory: dict[str, list[str]]) -> None:
        """Publish capacity/allocatable as the kubelet does for registered plugin resources."""
        state.devices = inventory
        status = (state.node.get("status") or {})
        capacity = dict(status.get("capacity") or {})
        allocatable = dict(status.get("allocatable") or {})
        cap_patch: dict[str, str] = {}
        alloc_patch: dict[str, str] = {}
        for name in state.advertised | set(inventory):
            count = str(len(inventory.get(name, ())))
            if name in inventory and capacity.get(name) != count:
                cap_patch[name] = count
            if allocatable.get(name) != count:
                alloc_patch[name] = count
        state.advertised |= set(inventory)
        if cap_patch or alloc_patch:
            patched = self._safe_patch("nodes", None, state.name,
                                       {"status": {"capacity": cap_patch, "allocatable": alloc_patch}},
                                       subresource="status")
            if patched is not None:
                self._node_changed(state, state.node, patched)

    def _gfd_run(self, daemon: Daemon) -> str:
        """Label once and publish through NFD (agents_nfd_daemons); returns a crash message or ''."""
        state = self.nodes.get(daemon.node)
        if state is None or not daemon.alive:
            return ""
        error = ""
        try:
            config = self._daemon_config(daemon, nv.ROLE_GFD)
            machine = _labels(state.node).get("node.kubernetes.io/instance-type", "")
            wanted = nv.gfd_labels(self._node_gpus(daemon.node), config, machine=machine)
        except (nv.PluginError, OSError, ValueError) as exc:
            LOG.warning("gpu-feature-discovery on %s: %s", daemon.node, exc)
            wanted = None
        if wanted is not None:
            error = self._gfd_publish(daemon, wanted)
        if daemon.gfd_timer:
            daemon.gfd_timer.cancel()
        daemon.gfd_timer = self.reactor.call_later(self.settings.gfd_interval, self._gfd_run, daemon)
        return error

    def _dcgm_attach(self, daemon: Daemon) -> None:
        """DCGM keeps every GPU of the node open: NVML refuses a reset while the exporter runs."""
        path = self.state_path(daemon.node)
        if not path:
            return
        try:
            for gpu in self.nvml.show(path).get("gpus") or []:
                self.nvml.add_client(path, gpu["index"], DCGM_CLIENT)
        except Exception as exc:  # noqa: BLE001 - a state file the exporter cannot read leaves it idle
            LOG.warning("dcgm-exporter on %s could not open the GPUs: %s", daemon.node, exc)
            return
        daemon.dcgm_holding = True

    def _dcgm_release(self, daemon: Daemon) -> None:
        path = self.state_path(daemon.node)
        daemon.dcgm_holding = False
        if not path:
            return
        try:
            for gpu in self.nvml.show(path).get("gpus") or []:
                self.nvml.remove_client(path, gpu["index"], DCGM_CLIENT)
        except Exception as exc:  # noqa: BLE001
            LOG.warning("dcgm-exporter on %s could not release the GPUs: %s", daemon.node, exc)

    # -- workload pods: scheduling, admission, release --

    def _schedule(self, pod: Obj) -> None:
        key = _key(pod)
        if _pod_terminal(pod) or (pod.get("spec") or {}).get("schedulerName", "default-scheduler") != "default-scheduler":
            return
        spec = pod.get("spec") or {}
        best = None
        reasons: dict[str, int] = {}
        requests = pod_requests(spec)
        states = list(self.nodes.values())
        start = self._rotation % len(states) if states else 0
        feasible = 0
        for state in states[start:] + states[:start]:
            if feasible >= FEASIBLE_NODES_TO_SCORE:
                break
            free = {name: self._free(state, name) for name in requests}
            short = [name for name, count in requests.items() if free[name] < count]
            if short:  # the common miss, decided without the full filter chain
                for name in short:
                    reason = f"Insufficient {name}"
                    reasons[reason] = reasons.get(reason, 0) + 1
                continue
            pods_free = int(str(_allocatable(state.node).get("pods", "110"))) - len(state.pods)
            blockers = schedule_blockers(spec, state.node, free, pods_free)
            if blockers:
                for reason in blockers:
                    reasons[reason] = reasons.get(reason, 0) + 1
                continue
            feasible += 1
            score = (-sum(free.values()), state.name)  # least allocated first, then by name
            if best is None or score < best[0]:
                best = (score, state)
        if best is None:
            self.pending.add(key)
            detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
            message = f"0/{len(self.nodes)} nodes are available: {detail}." if detail else "no nodes available"
            condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                         "message": message, "lastTransitionTime": _now()}
            old = [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == "PodScheduled"]
            if not old or old[0].get("message") != message:
                self._safe_patch("pods", *key, {"status": {"phase": "Pending", "conditions": [condition]}},
                                 subresource="status")
            return
        self.pending.discard(key)
        self._rotation += 1
        node_name = best[1].name
        bound = self._safe_patch("pods", *key, {"spec": {"nodeName": node_name}})
        if bound is None:
            return
        self.pods[key] = bound
        self._start_pod(bound)

    def _free(self, state: NodeState, resource: str) -> int:
        return int(str(_allocatable(state.node).get(resource, "0"))) - state.requested.get(resource, 0)

    def _workload_started(self, workload: WorkloadPod) -> None:
        if workload.key not in self.workloads or workload.started:
            return
        state = self.nodes.get(workload.node)
        pod = self.pods.get(workload.key)
        if state is None or pod is None:
            return
        taken: list[str] = []
        by_resource: dict[str, list[str]] = {}
        for name, count in workload.requests.items():
            free = [d for d in state.devices.get(name, []) if d not in state.allocated and d not in taken]
            if len(free) < count:
                self._reject(workload, f"Allocate failed due to requested number of devices unavailable for {name}. "
                                       f"Requested: {count}, Available: {len(free)}, which is unexpected")
                return
            taken.extend(free[:count])
            by_resource[name] = free[:count]
        for device in taken:
            state.allocated[device] = workload.key
        workload.devices = taken
        state.pod_devices = {**state.pod_devices,
                             workload.key: container_devices((pod.get("spec") or {}).get("containers") or [], by_resource)}
        uuids = list(dict.fromkeys(nv.device_uuid(d) for d in taken))
        path = self.state_path(workload.node)
        used = int((_meta(pod).get("annotations") or {}).get(USED_MEMORY_ANNOTATION, self.settings.used_memory_mib))
        for uuid in uuids:
            pid = next(self._pids)
            if path:
                try:
                    self.nvml.attach_process(path, uuid, pid, used)
                except Exception as exc:  # noqa: BLE001 - recorded, the pod still runs
                    LOG.warning("attach_process %s on %s failed: %s", uuid, workload.node, exc)
                    continue
            workload.pids.append(pid)
        workload.started = True
        patch: Obj = {"status": running_status(pod, True)}
        self._safe_patch("pods", *workload.key, patch, subresource="status")
        self._run_to_an_end(workload, pod, uuids)

    def _run_to_an_end(self, workload: WorkloadPod, pod: Obj, uuids: list[str]) -> None:
        """A pod whose containers run a program that ends (gpuops_sim/k8s/containers.py) exits when
        it does; any pod that outlives its activeDeadlineSeconds is failed, as a kubelet does."""
        program = containers.pod_program(pod)
        if program is not None:
            self.reactor.call_later(program.seconds, self._workload_exited, workload, program, uuids)
        deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        if deadline is not None:
            self.reactor.call_later(float(deadline), self._workload_ended, workload,
                                    containers.deadline_exceeded_status(deadline))

    def _workload_exited(self, workload: WorkloadPod, program: containers.Program, uuids: list[str]) -> None:
        if self.workloads.get(workload.key) is not workload:
            return
        if program.kind == containers.NVIDIA_SMI:
            path = self.state_path(workload.node)
            check = getattr(self.nvml, "device_error", None) if path else None
            outcome = containers.run_nvidia_smi(uuids, (lambda uuid: check(path, uuid)) if check else (lambda uuid: None))
        else:
            outcome = containers.Exit(0, "Completed")
        self._workload_ended(workload, containers.terminated_status(self.pods.get(workload.key) or {}, outcome))

    def _workload_ended(self, workload: WorkloadPod, status: Obj) -> None:
        """The pod's containers are done: its devices are free, its phase final."""
        if self.workloads.get(workload.key) is not workload:
            return
        self._release(workload)
        self.workloads.pop(workload.key, None)
        self._safe_patch("pods", *workload.key, {"status": status}, subresource="status")

    def _reject(self, workload: WorkloadPod, message: str) -> None:
        self._release(workload)
        self.workloads.pop(workload.key, None)
        self._safe_patch("pods", *workload.key, {"status": {
            "phase": "Failed", "reason": "UnexpectedAdmissionError", "message": message}}, subresource="status")

    def _release(self, workload: WorkloadPod) -> None:
        state = self.nodes.get(workload.node)
        if state is None:
            return
        for device in workload.devices:
            if state.allocated.get(device) == workload.key:
                del state.allocated[device]
        workload.devices = []
        if workload.key in state.pod_devices:
            state.pod_devices = {key: value for key, value in state.pod_devices.items() if key != workload.key}
        if workload.pids:
            self._detach(workload.node, workload.pids)
            workload.pids = []
        if workload.key in state.pods:
            state.pods.discard(workload.key)
            for name, count in workload.requests.items():
                state.requested[name] = max(0, state.requested.get(name, 0) - count)

    def _detach(self, node_name: str, pids: Iterable[int]) -> None:
        path = self.state_path(node_name)
        if not path:
            return
        for pid in pids:
            try:
                self.nvml.detach_process(path, pid)
            except Exception as exc:  # noqa: BLE001 - a vanished process is already detached
                LOG.debug("detach_process %s on %s: %s", pid, node_name, exc)

    # -- ReplicaSets (re-create evicted workload pods) --

    def _on_replicasets(self, event_type: str, rs: Obj) -> None:
        key = _key(rs)
        if event_type == "DELETED":
            self.replicasets.pop(key, None)
            uid = _meta(rs).get("uid")
            for pod_key, pod in list(self.pods.items()):
                ref = owner_of(pod, "ReplicaSet")
                if ref is not None and ref.get("uid") == uid:
                    self._safe_delete("pods", *pod_key)
            return
        self.replicasets[key] = rs
        self._mark("rs", key)

    def _reconcile_replicaset(self, key: tuple[str, str]) -> None:
        rs = self.replicasets.get(key)
        if rs is None:
            return
        uid = _meta(rs).get("uid")
        mine = [p for p in self.pods.values()
                if (owner_of(p, "ReplicaSet") or {}).get("uid") == uid and not _meta(p).get("deletionTimestamp")
                and not _pod_terminal(p)]
        wanted = int((rs.get("spec") or {}).get("replicas", 1))
        template = (rs.get("spec") or {}).get("template") or {}
        for _missing in range(wanted - len(mine)):
            meta = template.get("metadata") or {}
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"{key[1]}-{random_suffix()}", "namespace": key[0],
                                "labels": dict(meta.get("labels") or {}),
                                "annotations": dict(meta.get("annotations") or {}),
                                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": key[1],
                                                     "uid": uid, "controller": True, "blockOwnerDeletion": True}]},
                   "spec": json.loads(json.dumps(template.get("spec") or {})), "status": {"phase": "Pending"}}
            created = self.api.create("pods", key[0], pod)
            self.pods[_key(created)] = created
            self._schedule(created)
        for pod in sorted(mine, key=_pod_ready)[:max(0, len(mine) - wanted)]:
            self._safe_delete("pods", *_key(pod))
        ready = sum(1 for p in mine if _pod_ready(p))
        status = {"replicas": len(mine), "readyReplicas": ready, "availableReplicas": ready,
                  "fullyLabeledReplicas": len(mine), "observedGeneration": _meta(rs).get("generation", 1)}
        if any((rs.get("status") or {}).get(k) != v for k, v in status.items()):
            self._safe_patch("replicasets", *key, {"status": status}, subresource="status")

    # -- PodDisruptionBudgets (the disruption controller's status) --

    def _on_poddisruptionbudgets(self, event_type: str, pdb: Obj) -> None:
        key = _key(pdb)
        if event_type == "DELETED":
            self.pdbs.pop(key, None)
            return
        self.pdbs[key] = pdb
        self._mark("pdb", key[0])

    def _write_pdb_status(self, namespace: str) -> None:
        for key, pdb in list(self.pdbs.items()):
            if key[0] != namespace:
                continue
            spec = pdb.get("spec") or {}
            selector = spec.get("selector")
            pods = [p for p in self.pods.values() if _key(p)[0] == namespace and selector_matches(selector, _labels(p))
                    and not _pod_terminal(p) and not _meta(p).get("deletionTimestamp")]
            status = pdb_status(spec, pods, _meta(pdb).get("generation", 1))
            current = pdb.get("status") or {}
            if any(current.get(k) != v for k, v in status.items()):
                self._safe_patch("poddisruptionbudgets", *key, {"status": status}, subresource="status")

    # -- API writes that tolerate races with deletions --

    def _safe_patch(self, kind: str, namespace: str | None, name: str, patch: Obj,
                    subresource: str | None = None) -> Obj | None:
        try:
            return self.api.merge_patch(kind, namespace or None, name, patch, subresource=subresource)
        except LookupError:
            return None

    def _safe_delete(self, kind: str, namespace: str | None, name: str, force: bool = False) -> None:
        try:
            self.api.delete(kind, namespace or None, name)
        except LookupError:
            pass


def container_devices(containers: list[Mapping[str, Any]],
                      by_resource: Mapping[str, list[str]]) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """The devices the kubelet gave each container: its own requests, in container order."""
    left = {name: list(ids) for name, ids in by_resource.items()}
    result = []
    for container in containers:
        wanted = pod_requests({"containers": [container]})
        for name, count in wanted.items():
            ids, left[name] = left.get(name, [])[:count], left.get(name, [])[count:]
            if ids:
                result.append((str(container.get("name") or ""), name, tuple(ids)))
    first = str((containers[0] if containers else {}).get("name") or "")
    result.extend((first, name, tuple(ids)) for name, ids in left.items() if ids)
    return tuple(result)


def nvml_api() -> Any:
    """The NVML simulator's Python API (contract §6), imported late so pure API tests need none of it."""
    import importlib
    package = importlib.import_module("gpuops_sim.nvml")
    if all(hasattr(package, name) for name in ("show", "attach_process", "detach_process", "add_client")):
        return package
    return importlib.import_module("gpuops_sim.nvml.state")


# --- small pure helpers -----------------------------------------------------------------------

def _older(incoming: Mapping[str, Any], cached: Mapping[str, Any] | None) -> bool:
    if cached is None:
        return False
    new, old = str(_meta(incoming).get("resourceVersion", "")), str(_meta(cached).get("resourceVersion", ""))
    return new.isdigit() and old.isdigit() and int(new) < int(old)


def _labels(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _allocatable(node: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return ((node or {}).get("status") or {}).get("allocatable") or {}


def _placement_view(node: Mapping[str, Any]) -> tuple:
    """The parts of a node that decide where pods go."""
    spec = node.get("spec") or {}
    return (json.dumps(_labels(node), sort_keys=True), json.dumps(spec.get("taints") or [], sort_keys=True),
            bool(spec.get("unschedulable")), node_ready(node))


def _int_or_percent(value: Any, total: int, round_up: bool) -> int:
    text = str(value)
    if text.endswith("%"):
        share = int(text[:-1]) * total
        return -(-share // 100) if round_up else share // 100
    return int(text)


def pdb_status(spec: Mapping[str, Any], pods: list[Mapping[str, Any]], generation: int) -> dict[str, Any]:
    """currentHealthy / desiredHealthy / disruptionsAllowed as the disruption controller computes them."""
    expected = len(pods)
    healthy = sum(1 for p in pods if _pod_ready(p))
    if spec.get("minAvailable") is not None:
        desired = _int_or_percent(spec["minAvailable"], expected, round_up=True)
    elif spec.get("maxUnavailable") is not None:
        desired = max(0, expected - _int_or_percent(spec["maxUnavailable"], expected, round_up=True))
    else:
        desired = expected
    allowed = max(0, healthy - desired)
    return {"currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
            "disruptionsAllowed": allowed, "observedGeneration": generation,
            "conditions": [{"type": "DisruptionAllowed", "status": "True" if allowed else "False",
                            "reason": "SufficientPods" if allowed else "InsufficientPods",
                            "lastTransitionTime": "1970-01-01T00:00:00Z", "message": ""}]}


__all__ = ["Agents", "AgentSettings", "ClusterApi", "Reactor", "matches_node",
           "pdb_status", "selector_matches"]
