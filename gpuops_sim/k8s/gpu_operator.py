"""The GPU Operator's reconcile loop, for a ClusterPolicy created by any means (the chart, kubectl):

* the operands the policy enables, owned by it, in the operator's namespace (that of its
  ``gpu-operator`` Deployment): with ``driver.enabled``, a driver DaemonSet on the GPU nodes; the
  device plugin and GFD (with the policy's ``mig.strategy``); the MIG manager while
  ``migManager.enabled`` (switched off, its DaemonSet is deleted);
* the driver pod of a node, once running, builds and loads the kernel module: the node's NVML opens
  with the driver's version, without a reboot (``gpuops_sim.nvml.state.load_driver``);
* the operands of a node wait for its driver, as the real ones wait for the operator's validator:
  the node gets its ``nvidia.com/gpu.deploy.<operand>=true`` labels (only those not set already: a
  ``false`` set by someone else stays) once NVML opens there, and the node agents then run the
  device plugin and GFD pods as they run any other (``agents.py``).

* the chart's Node Feature Discovery subchart (``nfd.enabled``, on by default) comes with the
  operator: where the cluster has no NFD, NFD starts in the operator's namespace once its
  Deployment is there (GFD's labels reach the nodes through it, as everywhere in the simulator).

The brownfield world (``cluster up --installed-by gpu-operator``) starts from an operator that has
already reconciled; this agent runs on the other clusters. Events are handled on a thread of its own
(the store notifies under its lock).
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

from gpuops_sim.k8s import brownfield
from gpuops_sim.k8s import workload as manifests
from gpuops_sim.nvml import state as nvml_state

Obj = dict[str, Any]

DRIVER_DAEMONSET = "nvidia-driver-daemonset"
DRIVER_IMAGE = "nvcr.io/nvidia/driver"
# The chart's default driver.version (the simulator's fresh nodes get this one from the operator).
DEFAULT_DRIVER_VERSION = "570.86.15"
OPERAND_DEPLOY_LABELS = ("device-plugin", "gpu-feature-discovery")
MIG_MANAGER_DAEMONSET = "nvidia-mig-manager"


def driver_daemonset(namespace: str, version: str, owner: list[Obj]) -> Obj:
    """The operator's driver DaemonSet: one pod per GPU node labelled nvidia.com/gpu.deploy.driver=true."""
    labels = {"app": DRIVER_DAEMONSET}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": DRIVER_DAEMONSET, "namespace": namespace, "labels": dict(labels), "ownerReferences": owner},
            "spec": {"selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels)},
                                  "spec": {"nodeSelector": {manifests.DEPLOY_LABEL + "driver": "true"},
                                           "tolerations": [{"operator": "Exists"}],
                                           "containers": [{"name": "nvidia-driver-ctr", "image": f"{DRIVER_IMAGE}:{version}-ubuntu22.04",
                                                           "env": [{"name": "DRIVER_VERSION", "value": version}]}]}}}}


def policy_driver_version(policy: Obj) -> str:
    return str(((policy.get("spec") or {}).get("driver") or {}).get("version") or DEFAULT_DRIVER_VERSION)


def enabled(policy: Obj, component: str, default: bool = True) -> bool:
    value = ((policy.get("spec") or {}).get(component) or {}).get("enabled", default)
    return value is not False


class GpuOperator:
    """The operator's controller; ``state_path(node)`` is the node's NVML state file (None: no GPUs)."""

    def __init__(self, api: Any, state_path: Callable[[str], str | None]) -> None:
        self.api = api
        self.state_path = state_path
        self.loaded: list[str] = []  # nodes whose driver a driver pod loaded, in order
        self._events: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="gpuops-sim-gpu-operator", daemon=True)
        self._unsubscribe = None

    def start(self) -> None:
        self._unsubscribe = self.api.subscribe(self._notify)
        self._thread.start()
        self._events.put(("clusterpolicies", "SYNC", {}))

    def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        self._events.put(None)
        self._thread.join(timeout=5)

    def _notify(self, kind: str, event: str, obj: Obj) -> None:
        if kind in ("clusterpolicies", "deployments", "nodes", "pods"):
            self._events.put((kind, event, obj))

    def _run(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            kind, _event, obj = item
            try:
                if kind == "pods":
                    self._driver_pod(obj)
                elif kind in ("clusterpolicies", "deployments"):
                    self.reconcile()
                else:
                    self._label_node((obj.get("metadata") or {}).get("name"))
            except (LookupError, ValueError, OSError):  # the object went away meanwhile, or a state file did
                pass

    # -- the operator's view --

    def policy(self) -> Obj | None:
        policies = self.api.list("clusterpolicies") if self._has_crd() else []
        return policies[0] if policies else None

    def _has_crd(self) -> bool:
        return self.api.get("customresourcedefinitions", None, brownfield.CLUSTER_POLICY_CRD["metadata"]["name"]) is not None

    def namespace(self) -> str | None:
        """The operator's namespace: that of its Deployment (the chart's release namespace)."""
        for deployment in self.api.list("deployments"):
            if ((deployment.get("metadata") or {}).get("labels") or {}).get("app") == "gpu-operator":
                return deployment["metadata"]["namespace"]
        return None

    def reconcile(self) -> None:
        policy = self.policy()
        namespace = self.namespace()
        if policy is None or namespace is None:
            return
        strategy = str(((policy.get("spec") or {}).get("mig") or {}).get("strategy") or "single")
        wanted: list[tuple[str, Obj]] = [
            (kind, obj) for kind, obj in brownfield.operator_objects(strategy, policy["metadata"]["uid"], namespace)
            if kind != "deployments" and (obj["metadata"]["name"] != MIG_MANAGER_DAEMONSET or enabled(policy, "migManager"))]
        if enabled(policy, "driver"):
            owner = wanted[-1][1]["metadata"]["ownerReferences"]
            wanted.append(("daemonsets", driver_daemonset(namespace, policy_driver_version(policy), owner)))
        for kind, obj in wanted:
            if self.api.get(kind, namespace, obj["metadata"]["name"]) is None:
                self.api.create(kind, namespace, obj)
        self._nfd(namespace)
        for name, on in ((MIG_MANAGER_DAEMONSET, enabled(policy, "migManager")), (DRIVER_DAEMONSET, enabled(policy, "driver"))):
            if not on and self.api.get("daemonsets", namespace, name) is not None:
                self.api.delete("daemonsets", namespace, name)
        for node in self.api.list("nodes"):
            self._label_node(node["metadata"]["name"])

    def _nfd(self, namespace: str) -> None:
        if self.api.get("customresourcedefinitions", None, "nodefeatures.nfd.k8s-sigs.io") is not None:
            return
        for kind, obj in manifests.nfd_objects(namespace):
            if kind == "namespaces":
                continue  # the subchart shares its release's namespace
            self.api.create(kind, obj["metadata"].get("namespace"), obj)

    def _label_node(self, name: str | None) -> None:
        """The deploy labels of a GPU node: the driver's at once (where the policy installs it), the
        operands' once its driver is loaded; a label already set, to any value, is left alone."""
        policy = self.policy()
        if name is None or policy is None or self.namespace() is None:
            return
        node = self.api.get("nodes", None, name) or {}
        labels = (node.get("metadata") or {}).get("labels") or {}
        path = self.state_path(name)
        if labels.get("nvidia.com/gpu.present") != "true" or not path:
            return
        wanted = {}
        if enabled(policy, "driver"):
            wanted["driver"] = "true"
        if nvml_state.read_state(path).get("driver_version"):
            wanted.update({component: "true" for component in OPERAND_DEPLOY_LABELS})
        patch = {manifests.DEPLOY_LABEL + key: value for key, value in wanted.items() if manifests.DEPLOY_LABEL + key not in labels}
        if patch:
            self.api.merge_patch("nodes", None, name, {"metadata": {"labels": patch}})

    def _driver_pod(self, pod: Obj) -> None:
        """A running driver pod loads its driver on its node (a containerized driver needs no reboot)."""
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get("app") != DRIVER_DAEMONSET or (pod.get("status") or {}).get("phase") != "Running":
            return
        node = (pod.get("spec") or {}).get("nodeName")
        path = self.state_path(node) if node else None
        if not path:
            return
        container = ((pod.get("spec") or {}).get("containers") or [{}])[0]
        version = next((e["value"] for e in container.get("env") or [] if e.get("name") == "DRIVER_VERSION"), DEFAULT_DRIVER_VERSION)
        if nvml_state.read_state(path).get("driver_version") != version:
            nvml_state.load_driver(path, version)
            self.loaded.append(node)
        self._label_node(node)
