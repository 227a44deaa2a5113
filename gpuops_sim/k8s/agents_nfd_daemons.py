"""The agents' Node Feature Discovery half: GPU feature discovery's output, nfd-worker and nfd-master.

A mixin of ``agents.Agents`` (same reactor thread, same indexes); the pure parts are in
``agents_nfd.py``. GFD writes its labels into its node's feature directory (under the node's root
directory) or as a NodeFeature object; a worker pod turns its node's feature files and GPUs into the
NodeFeature ``<node>``; while a Deployment runs nfd-master, the master turns every node's NodeFeature
objects into its labels. Without NFD in the cluster GFD's labels never reach a node, as on a real one.

The worker rereads its sources every ``AgentSettings.nfd_interval`` seconds as the real one does
(``core.sleepInterval``) and, to keep runs quick, also soon after GFD rewrites or removes its
feature file on the node. The master follows NodeFeature objects as they change, as the real one does.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from gpuops_sim.k8s import agents_nfd as nfd
from gpuops_sim.k8s import agents_nvidia as nv

if TYPE_CHECKING:  # pragma: no cover
    from gpuops_sim.k8s.agents import Daemon

LOG = logging.getLogger("gpuops_sim.k8s.agents")

Obj = dict[str, Any]
NODEFEATURES = "nodefeatures"
GFD_TIMESTAMP = "nvidia.com/gfd.timestamp"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def replacing_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch that turns ``old`` into ``new`` (removed keys set to null)."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = replacing_patch(before, value)
            if nested:
                patch[key] = nested
        elif before != value:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


class NodeFeatureDiscoveryAgents:
    """GFD's output, the NFD workers and the NFD master (mixed into ``Agents``)."""

    api: Any
    reactor: Any
    settings: Any
    nodes: dict[str, Any]
    pods: dict[tuple[str, str], Obj]
    daemons: dict[tuple[str, str], "Daemon"]
    node_root: Callable[[str], str | None] | None

    def _nfd_init(self) -> None:
        self.nfd_masters: dict[tuple[str, str], Obj] = {}  # nfd-master Deployments
        self.node_features: dict[tuple[str, str], Obj] = {}  # every NodeFeature object
        self._nfd_dirty: set[str] = set()  # nodes whose NodeFeatures changed since the master last looked
        self._nfd_flush_scheduled = False
        self._nfd_worker_timers: dict[tuple[str, str], Any] = {}

    # -- API objects --

    def _nfd_bootstrap(self) -> None:
        for kind in ("deployments", NODEFEATURES):
            try:
                objects = self.api.list(kind)
            except LookupError:  # NFD's CRD is not installed
                continue
            for obj in objects:
                getattr(self, f"_on_{kind}")("ADDED", obj)

    def _on_deployments(self, event_type: str, deployment: Obj) -> None:
        key = (_meta(deployment).get("namespace") or "", _meta(deployment).get("name") or "")
        template = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
        runs_master = nfd.ROLE_NFD_MASTER in nfd.pod_roles(template)
        replicas = int((deployment.get("spec") or {}).get("replicas", 1) or 0)
        if event_type == "DELETED" or not runs_master or replicas < 1:
            self.nfd_masters.pop(key, None)
            return
        started = key not in self.nfd_masters
        self.nfd_masters[key] = deployment
        self._nfd_master_status(key, deployment, replicas)
        if started:
            self._nfd_mark(*self.nodes)

    def _nfd_master_status(self, key: tuple[str, str], deployment: Obj, replicas: int) -> None:
        """The master's pod is not modelled: its Deployment reports it running and ready."""
        status = {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                  "updatedReplicas": replicas, "observedGeneration": _meta(deployment).get("generation", 1)}
        if all((deployment.get("status") or {}).get(k) == v for k, v in status.items()):
            return
        try:
            self.api.merge_patch("deployments", key[0], key[1], {"status": status}, subresource="status")
        except LookupError:
            pass

    def _on_nodefeatures(self, event_type: str, obj: Obj) -> None:
        key = (_meta(obj).get("namespace") or "", _meta(obj).get("name") or "")
        previous = self.node_features.pop(key, None)
        if event_type != "DELETED":
            self.node_features[key] = obj
        nodes = {((_meta(o).get("labels") or {}).get(nfd.NODE_NAME_LABEL)) for o in (previous, obj) if o}
        self._nfd_mark(*(n for n in nodes if n))

    def _nfd_node_added(self, name: str) -> None:
        self._nfd_mark(name)

    # -- nfd-master --

    def _nfd_mark(self, *nodes: str) -> None:
        if not self.nfd_masters or not nodes:
            return
        self._nfd_dirty.update(nodes)
        if not self._nfd_flush_scheduled:
            self._nfd_flush_scheduled = True
            self.reactor.call_later(0, self._nfd_master_flush)

    def _nfd_master_flush(self) -> None:
        self._nfd_flush_scheduled = False
        dirty, self._nfd_dirty = self._nfd_dirty, set()
        if not self.nfd_masters:
            return
        namespace, name = sorted(self.nfd_masters)[0]
        extra_ns = self._nfd_master_extra_ns(namespace, self.nfd_masters[(namespace, name)])
        by_node: dict[str, list[Obj]] = {}
        for obj in self.node_features.values():
            node = (_meta(obj).get("labels") or {}).get(nfd.NODE_NAME_LABEL)
            if node in dirty:
                by_node.setdefault(node, []).append(obj)
        for node in sorted(dirty):
            state = self.nodes.get(node)
            if state is None:
                continue
            labels = nfd.merged_labels(by_node.get(node, []), namespace, extra_ns)
            patch = nfd.node_patch(state.node, labels)
            if patch:
                patched = self._safe_patch("nodes", None, node, patch)
                if patched is not None:
                    self._node_changed(state, state.node, patched)

    def _nfd_master_extra_ns(self, namespace: str, deployment: Obj) -> tuple[str, ...]:
        spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
        container = nfd.pod_roles(spec).get(nfd.ROLE_NFD_MASTER) or {}
        name = nfd.config_map_mounted_at(spec, container, nfd.WORKER_CONFIG_DIR)
        config_map = self.api.get("configmaps", namespace, name) if name else None
        return nfd.master_extra_label_ns(((config_map or {}).get("data") or {}).get("nfd-master.conf"))

    # -- nfd-worker --

    def _nfd_worker_started(self, daemon: "Daemon") -> str:
        """Discover and publish once, then every nfd_interval; returns a crash message or ''."""
        error = self._nfd_worker_run(daemon)
        self._nfd_worker_schedule(daemon, self.settings.nfd_interval)
        return error

    def _nfd_worker_schedule(self, daemon: "Daemon", delay: float) -> None:
        timer = self._nfd_worker_timers.pop(daemon.key, None)
        if timer is not None:
            timer.cancel()
        self._nfd_worker_timers[daemon.key] = self.reactor.call_later(delay, self._nfd_worker_tick, daemon)

    def _nfd_worker_tick(self, daemon: "Daemon") -> None:
        if not daemon.alive:
            return
        self._nfd_worker_run(daemon)
        self._nfd_worker_schedule(daemon, self.settings.nfd_interval)

    def _nfd_worker_stopped(self, daemon: "Daemon") -> None:
        timer = self._nfd_worker_timers.pop(daemon.key, None)
        if timer is not None:
            timer.cancel()

    def _nfd_features_changed(self, node: str) -> None:
        """A feature file of the node changed: its worker rereads soon."""
        for daemon in self.daemons.values():
            if daemon.node == node and daemon.alive and nfd.ROLE_NFD_WORKER in daemon.roles and daemon.timer is None:
                self._nfd_worker_schedule(daemon, 0)

    def _node_file(self, node: str, path: str | None) -> str | None:
        root = self.node_root(node) if self.node_root else None
        if not root or not path:
            return None
        return os.path.join(root, path.lstrip("/"))

    def _nfd_worker_run(self, daemon: "Daemon") -> str:
        state = self.nodes.get(daemon.node)
        if state is None or not daemon.alive:
            return ""
        pod = self.pods.get(daemon.key, daemon.pod)
        spec = pod.get("spec") or {}
        container = daemon.roles[nfd.ROLE_NFD_WORKER]
        namespace = daemon.key[0]
        local = self._read_feature_files(daemon.node, nfd.host_path(spec, container, nfd.FEATURES_DIR))
        config_name = nfd.config_map_mounted_at(spec, container, nfd.WORKER_CONFIG_DIR)
        config_map = self.api.get("configmaps", namespace, config_name) if config_name else None
        classes, fields = nfd.worker_pci_config(((config_map or {}).get("data") or {}).get(nfd.WORKER_CONFIG_FILE))
        try:
            devices = nfd.gpu_pci_devices(self._node_gpus(daemon.node))
        except Exception as exc:  # noqa: BLE001 - the worker publishes what else it found
            # The real worker reads PCI from sysfs, driver or not; the simulator reads the GPUs from
            # the node's state, which a node of another shape may not let it read.
            LOG.warning("nfd-worker on %s could not read the PCI devices: %s", daemon.node, exc)
            devices = []
        labels = {**nfd.pci_labels(devices, classes, fields), **local}
        owner = _owner_daemonset(pod)
        wanted = nfd.node_feature(daemon.node, namespace, daemon.node, labels, nfd.worker_features(devices, local),
                                  [owner] if owner else None)
        return self._publish_node_feature(wanted)

    def _read_feature_files(self, node: str, directory: str | None) -> dict[str, str]:
        """The labels of the node's feature files (nfd-worker's local source); {} without the directory."""
        path = self._node_file(node, directory)
        labels: dict[str, str] = {}
        if not path or not os.path.isdir(path):
            return labels
        for name in sorted(os.listdir(path)):
            file = os.path.join(path, name)
            if name.startswith(".") or not os.path.isfile(file):
                continue
            try:
                with open(file, encoding="utf-8") as handle:
                    labels.update(nfd.parse_feature_file(handle.read()))
            except (OSError, UnicodeDecodeError) as exc:
                LOG.warning("nfd-worker on %s could not read %s: %s", node, file, exc)
        return labels

    def _publish_node_feature(self, wanted: Obj) -> str:
        """Create or update a NodeFeature object; returns the error a real daemon would exit with, or ''."""
        namespace, name = _meta(wanted)["namespace"], _meta(wanted)["name"]
        try:
            current = self.api.get(NODEFEATURES, namespace, name)
        except LookupError:
            current = None
        try:
            if current is None:
                self.api.create(NODEFEATURES, namespace, wanted)
                return ""
            old = {"metadata": {"labels": _meta(current).get("labels") or {},
                                "ownerReferences": _meta(current).get("ownerReferences")},
                   "spec": current.get("spec") or {}}
            new = {"metadata": {"labels": _meta(wanted).get("labels") or {},
                                "ownerReferences": _meta(wanted).get("ownerReferences")},
                   "spec": wanted.get("spec") or {}}
            patch = replacing_patch(old, new)
            if patch:
                self.api.merge_patch(NODEFEATURES, namespace, name, patch)
        except Exception as exc:  # noqa: BLE001 - the daemon reports what the API answered and exits
            return f'failed to publish NodeFeature object "{name}": {exc}'
        return ""

    # -- GPU feature discovery's output --

    def _gfd_publish(self, daemon: "Daemon", labels: Mapping[str, str]) -> str:
        """Hand GFD's labels to NFD as the real daemon does; returns a crash message or ''."""
        state = self.nodes[daemon.node]
        pod = self.pods.get(daemon.key, daemon.pod)
        spec = pod.get("spec") or {}
        container = daemon.roles[nv.ROLE_GFD]
        published = getattr(state, "gfd_published", None)
        # The real GFD rewrites its timestamp on every run; the simulated one keeps it while its labels
        # stay the same, which spares NFD a node write per interval on a large cluster.
        if published is not None and published[0] == dict(labels):
            stamp = published[1]
        else:
            stamp = str(int(time.time()))
        output = {**labels, GFD_TIMESTAMP: stamp}
        if nfd.gfd_uses_node_feature_api(container):
            owner = _owner_daemonset(pod)
            error = self._publish_node_feature(nfd.node_feature(
                nfd.GFD_NODE_FEATURE_PREFIX + daemon.node, daemon.key[0], daemon.node, output,
                owners=[dict(owner, controller=True)] if owner else None))
        else:
            error = self._gfd_write_file(daemon, nfd.host_path(spec, container, nfd.gfd_output_file(container)),
                                         nfd.format_feature_file(output))
        if not error:
            state.gfd_published = (dict(labels), stamp)
        return error

    def _gfd_write_file(self, daemon: "Daemon", host_path: str | None, text: str) -> str:
        path = self._node_file(daemon.node, host_path)
        if path is None:
            # Written inside the container only: no worker on the node ever reads it.
            return ""
        try:
            with open(path, encoding="utf-8") as handle:
                if handle.read() == text:
                    return ""
        except OSError:
            pass
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(temporary, path)
        except OSError as exc:
            return f"error atomically writing file '{host_path}': {exc}"
        self._nfd_features_changed(daemon.node)
        return ""

    def _gfd_stopped(self, daemon: "Daemon") -> None:
        """GFD removes its feature file when it exits (not its NodeFeature object)."""
        state = self.nodes.get(daemon.node)
        if state is not None:
            state.gfd_published = None
        pod = self.pods.get(daemon.key, daemon.pod)
        container = daemon.roles[nv.ROLE_GFD]
        if nfd.gfd_uses_node_feature_api(container):
            return
        path = self._node_file(daemon.node, nfd.host_path(pod.get("spec") or {}, container, nfd.gfd_output_file(container)))
        if path and os.path.exists(path):
            try:
                os.remove(path)
            except OSError as exc:
                LOG.warning("gpu-feature-discovery on %s could not remove %s: %s", daemon.node, path, exc)
                return
            self._nfd_features_changed(daemon.node)

    # provided by Agents
    def _safe_patch(self, kind: str, namespace: str | None, name: str, patch: Obj,
                    subresource: str | None = None) -> Obj | None:  # pragma: no cover - see Agents
        raise NotImplementedError

    def _node_changed(self, state: Any, old: Obj | None, node: Obj) -> None:  # pragma: no cover - see Agents
        raise NotImplementedError

    def _node_gpus(self, node_name: str) -> dict[str, Any]:  # pragma: no cover - see Agents
        raise NotImplementedError


def _owner_daemonset(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pod's DaemonSet as an owner reference of what the daemon publishes. Only the DaemonSet:
    the real daemons add their pod too, but the emulator's garbage collector deletes a dependent
    with its first owner, where Kubernetes waits for the last."""
    for ref in _meta(pod).get("ownerReferences") or []:
        if ref.get("kind") == "DaemonSet":
            return {"apiVersion": ref.get("apiVersion", "apps/v1"), "kind": "DaemonSet", "name": ref.get("name"),
                    "uid": ref.get("uid", ""), "blockOwnerDeletion": False}
    return None
