"""Clusters that already run NVIDIA software installed by other tools, as users start from:

* ``helm``: NVIDIA's nvidia-device-plugin chart (device plugin + GFD) installed with helm in its
  own namespace, with the release's labels and annotations;
* ``gpu-operator``: the GPU Operator: its Deployment, a ClusterPolicy (CRD included) and the
  operands it owns (device plugin, GFD, MIG manager), the nodes labelled ``nvidia.com/mig.config``
  by the operator, and a MIG manager that writes its own value of that label back whenever anyone
  else changes it, for as long as the ClusterPolicy's ``migManager.enabled`` is true (switched
  off, the operator deletes the MIG manager's DaemonSet);
* ``mig-parted``: NVIDIA DeepOps' bare-metal MIG setup on each node: mig-parted's
  ``nvidia-mig-manager.service`` installed and enabled under the node's root, which applies its
  named config at every boot (``python -m gpuops_sim node mig-parted-apply``, standing in for
  mig-parted's service script).

Pure builders plus the MIG manager's agent; ``cluster.py`` creates them.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any

from gpuops_sim.k8s import workload as manifests

WORLDS = ("helm", "gpu-operator", "mig-parted")
HELM_NAMESPACE = "nvidia-device-plugin-helm"
HELM_RELEASE = "nvdp"
CHART = "nvidia-device-plugin-0.17.0"
OPERATOR_VERSION = "v25.3.0"
OPERATOR_IMAGE = "nvcr.io/nvidia/gpu-operator:" + OPERATOR_VERSION
MIG_MANAGER_IMAGE = "nvcr.io/nvidia/cloud-native/k8s-mig-manager:v0.12.1-ubuntu20.04"
CLUSTER_POLICY = "cluster-policy"
MIG_CONFIG_LABEL = "nvidia.com/mig.config"
MIG_PARTED_UNIT = "nvidia-mig-manager.service"

Obj = dict[str, Any]


def _helm_metadata(obj: Obj, release: str, namespace: str, name: str) -> Obj:
    meta = obj["metadata"]
    meta.setdefault("labels", {}).update({
        "app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": release,
        "app.kubernetes.io/name": name, "app.kubernetes.io/version": "0.17.0", "helm.sh/chart": CHART})
    meta.setdefault("annotations", {}).update({"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace})
    return obj


def helm_device_plugin(strategy: str, replicas: int = 1, namespace: str = HELM_NAMESPACE,
                       release: str = HELM_RELEASE) -> list[tuple[str, Obj]]:
    """(plural kind, object) of ``helm install nvdp nvdp/nvidia-device-plugin --set gfd.enabled=true``:
    release-named objects, no ``nvidia.com/gpu.deploy.*`` node selector (the chart selects GPU nodes
    by ``nvidia.com/gpu.present``)."""
    config_map = release + "-nvidia-device-plugin-configs"
    objects: list[tuple[str, Obj]] = [
        ("configmaps", _helm_metadata(manifests.plugin_config_map({"default": manifests.plugin_config(strategy, replicas)},
                                                                  namespace, config_map), release, namespace, "nvidia-device-plugin"))]
    for name, builder, app in ((release + "-nvidia-device-plugin", manifests.device_plugin_daemonset, "nvidia-device-plugin"),
                               (release + "-gpu-feature-discovery", manifests.gfd_daemonset, "gpu-feature-discovery")):
        ds = builder(namespace, config_map=config_map, default_config="default")
        ds["metadata"]["name"] = name
        selector = {"app.kubernetes.io/name": app, "app.kubernetes.io/instance": release}
        ds["metadata"]["labels"] = dict(selector)
        ds["spec"]["selector"] = {"matchLabels": dict(selector)}
        ds["spec"]["template"]["metadata"]["labels"] = dict(selector)
        ds["spec"]["template"]["spec"]["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
        objects.append(("daemonsets", _helm_metadata(ds, release, namespace, app)))
    return objects


CLUSTER_POLICY_CRD: Obj = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "clusterpolicies.nvidia.com"},
    "spec": {"group": "nvidia.com", "scope": "Cluster",
             "names": {"plural": "clusterpolicies", "singular": "clusterpolicy", "kind": "ClusterPolicy", "listKind": "ClusterPolicyList"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}


def cluster_policy(strategy: str, namespace: str = manifests.GPU_OPERATOR_NAMESPACE) -> Obj:
    """The ClusterPolicy the GPU Operator chart creates for preinstalled drivers (driver and toolkit off)."""
    return {"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy",
            "metadata": {"name": CLUSTER_POLICY, "labels": {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "gpu-operator"},
                         "annotations": {"meta.helm.sh/release-name": "gpu-operator", "meta.helm.sh/release-namespace": namespace}},
            "spec": {"operator": {"defaultRuntime": "containerd"}, "driver": {"enabled": False}, "toolkit": {"enabled": False},
                     "devicePlugin": {"enabled": True}, "gfd": {"enabled": True}, "dcgmExporter": {"enabled": False},
                     "migManager": {"enabled": True, "config": {"name": "default-mig-parted-config", "default": "all-disabled"}},
                     "mig": {"strategy": strategy}},
            "status": {"state": "ready", "namespace": namespace}}


def operator_objects(strategy: str, policy_uid: str, namespace: str = manifests.GPU_OPERATOR_NAMESPACE) -> list[tuple[str, Obj]]:
    """The operator's Deployment and the operands its ClusterPolicy owns."""
    owner = [{"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "name": CLUSTER_POLICY, "uid": policy_uid,
              "controller": True, "blockOwnerDeletion": True}]
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "gpu-operator", "namespace": namespace,
                               "labels": {"app": "gpu-operator", "app.kubernetes.io/managed-by": "Helm",
                                          "app.kubernetes.io/instance": "gpu-operator"},
                               "annotations": {"meta.helm.sh/release-name": "gpu-operator", "meta.helm.sh/release-namespace": namespace}},
                  "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "gpu-operator"}},
                           "template": {"metadata": {"labels": {"app": "gpu-operator"}},
                                        "spec": {"containers": [{"name": "gpu-operator", "image": OPERATOR_IMAGE}]}}}}
    objects: list[tuple[str, Obj]] = [
        ("configmaps", manifests.plugin_config_map({"default": manifests.plugin_config(strategy)}, namespace)),
        ("deployments", deployment)]
    operands = [manifests.device_plugin_daemonset(namespace), manifests.gfd_daemonset(namespace)]
    mig_manager = {"apiVersion": "apps/v1", "kind": "DaemonSet",
                   "metadata": {"name": "nvidia-mig-manager", "namespace": namespace, "labels": {"app": "nvidia-mig-manager"}},
                   "spec": {"selector": {"matchLabels": {"app": "nvidia-mig-manager"}},
                            "template": {"metadata": {"labels": {"app": "nvidia-mig-manager"}},
                                         "spec": {"nodeSelector": {"nvidia.com/gpu.deploy.mig-manager": "true"},
                                                  "containers": [{"name": "nvidia-mig-manager", "image": MIG_MANAGER_IMAGE}]}}}}
    for ds in operands + [mig_manager]:
        ds["metadata"]["ownerReferences"] = owner
        objects.append(("daemonsets", ds))
    return objects


def operator_node_labels(config: str) -> Obj:
    """What the operator writes on a MIG-capable GPU node (as a patch of its metadata)."""
    return {"labels": {MIG_CONFIG_LABEL: config, "nvidia.com/gpu.deploy.mig-manager": "true"},
            "managedFields": [{"manager": "gpu-operator", "operation": "Update", "apiVersion": "v1",
                               "fieldsV1": {"f:metadata": {"f:labels": {"f:" + MIG_CONFIG_LABEL: {},
                                                                        "f:nvidia.com/gpu.deploy.mig-manager": {}}}}}]}


def mig_parted_unit(config: str, python: str, state: str,
                    config_file: str = "/etc/nvidia-mig-manager/config.yml") -> str:
    """mig-parted's service as DeepOps leaves it: enabled, before the kubelet, applying ``config`` at boot."""
    return f"""[Unit]
Description=Apply the MIG configuration of nvidia-mig-parted
After=nvidia-persistenced.service
Before=kubelet.service

[Service]
Type=oneshot
RemainAfterExit=yes
Environment="MIG_PARTED_CONFIG_FILE={config_file}"
Environment="MIG_PARTED_SELECTED_CONFIG={config}"
ExecStart={python} -m gpuops_sim node mig-parted-apply --state {state} --config {config}

[Install]
WantedBy=multi-user.target
"""


def install_mig_parted(root: str, unit_text: str) -> None:
    """Install and enable the unit under the node's root, as DeepOps' role and ``systemctl enable`` do."""
    units = os.path.join(root, "etc/systemd/system")
    os.makedirs(os.path.join(units, "multi-user.target.wants"), exist_ok=True)
    with open(os.path.join(units, MIG_PARTED_UNIT), "w", encoding="utf-8") as handle:
        handle.write(unit_text)
    link = os.path.join(units, "multi-user.target.wants", MIG_PARTED_UNIT)
    if not os.path.lexists(link):
        os.symlink(os.path.join("..", MIG_PARTED_UNIT), link)


def apply_named_config(path: str, name: str) -> None:
    """What mig-parted's service applies for ``name``: all-disabled (MIG off), or all-<profile>
    (every GPU filled with that profile); other names raise ValueError."""
    from gpuops_sim.k8s.cluster import layout_node  # pylint: disable=import-outside-toplevel
    from gpuops_sim.nvml import mig, state  # pylint: disable=import-outside-toplevel
    if name == "all-disabled":
        layout_node(path, [])
        return
    profile = name[len("all-"):] if name.startswith("all-") else ""
    gpus = state.read_state(path).get("gpus") or []
    found = next((p for p in mig.model_of(gpus[0]).gi_profiles if p.name == profile), None) if gpus else None
    if found is None:
        raise ValueError(f"config {name!r} is not one the simulated service knows (all-disabled, all-<profile>)")
    layout_node(path, [profile] * found.instance_count)


class OperatorMigManager:
    """The GPU Operator's MIG manager as the API sees it: while the ClusterPolicy's
    ``migManager.enabled`` is true, a ``nvidia.com/mig.config`` label another writer changes on a node
    it manages is written back to the value it applied; switched off, its DaemonSet is deleted.
    Events are handled on a thread of its own (the store notifies under its lock)."""

    def __init__(self, api: Any, configs: dict[str, str], namespace: str = manifests.GPU_OPERATOR_NAMESPACE) -> None:
        self.api = api
        self.configs = dict(configs)
        self.namespace = namespace
        self.reverted: list[tuple[str, str]] = []
        self._events: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="gpuops-sim-mig-manager", daemon=True)
        self._unsubscribe = None

    def start(self) -> None:
        self._unsubscribe = self.api.subscribe(lambda kind, event, obj: self._events.put((kind, event, obj)))
        self._thread.start()

    def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        self._events.put(None)
        self._thread.join(timeout=5)

    def enabled(self) -> bool:
        policy = self.api.get("clusterpolicies", None, CLUSTER_POLICY) or {}
        value = ((policy.get("spec") or {}).get("migManager") or {}).get("enabled", True)
        return value is not False

    def _run(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            kind, event, obj = item
            try:
                self._handle(kind, event, obj)
            except (LookupError, ValueError):  # the object went away meanwhile
                pass

    def _handle(self, kind: str, event: str, obj: Obj) -> None:
        if kind == "clusterpolicies" and event == "MODIFIED" and not self.enabled():
            if self.api.get("daemonsets", self.namespace, "nvidia-mig-manager") is not None:
                self.api.delete("daemonsets", self.namespace, "nvidia-mig-manager")
            return
        if kind != "nodes" or event == "DELETED":
            return
        name = (obj.get("metadata") or {}).get("name")
        wanted = self.configs.get(name)
        if wanted is None:
            return
        node = self.api.get("nodes", None, name) or {}  # the node now, not as this (maybe old) event saw it
        current = ((node.get("metadata") or {}).get("labels") or {}).get(MIG_CONFIG_LABEL)
        if node and current != wanted and self.enabled():
            self.reverted.append((name, str(current)))
            self.api.merge_patch("nodes", None, name, {"metadata": {"labels": {MIG_CONFIG_LABEL: wanted}}})
