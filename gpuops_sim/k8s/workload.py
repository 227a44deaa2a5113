"""Manifests of the simulated cluster: nodes, NVIDIA's DaemonSets and their ConfigMap, workloads.

Pure builders returning plain API dicts; ``cluster.py`` and the tests create them in the emulator.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import yaml

GPU_OPERATOR_NAMESPACE = "gpu-operator"
PLUGIN_CONFIG_MAP = "nvidia-device-plugin-config"
PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"
DCGM_EXPORTER_IMAGE = "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.5-3.4.0-ubuntu22.04"
DEPLOY_LABEL = "nvidia.com/gpu.deploy."
NFD_NAMESPACE = "node-feature-discovery"
NFD_IMAGE = "registry.k8s.io/nfd/node-feature-discovery:v0.18.3"
NFD_FEATURES_DIR = "/etc/kubernetes/node-feature-discovery/features.d"
# App labels the GPU Operator gives its daemon pods (mig-manager waits on these).
APP_LABELS = {"device-plugin": "nvidia-device-plugin-daemonset", "gpu-feature-discovery": "gpu-feature-discovery",
              "dcgm-exporter": "nvidia-dcgm-exporter"}
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

Obj = dict[str, Any]


def node_manifest(name: str, instance_type: str, gpu: bool = True, control_plane: bool = False,
                  cpu: str = "96", memory: str = "1056345612Ki", pods: str = "110", deploy_labels: bool = True) -> Obj:
    """A Node. ``deploy_labels`` switches NVIDIA's daemons on (nvidia.com/gpu.deploy.*=true) up front;
    without them the node waits for whoever installs the stack to switch them on, as a new node does."""
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "node.kubernetes.io/instance-type": instance_type}
    taints = []
    if gpu:
        labels["nvidia.com/gpu.present"] = "true"
        for component in APP_LABELS if deploy_labels else ():
            labels[DEPLOY_LABEL + component] = "true"
    if control_plane:
        labels["node-role.kubernetes.io/control-plane"] = ""
        taints.append({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"})
    resources = {"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": "1845102756Ki"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints} if taints else {},
        "status": {
            "capacity": dict(resources), "allocatable": dict(resources),
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status"}],
            "nodeInfo": {"kubeletVersion": "v1.30.0", "osImage": "Ubuntu 22.04.4 LTS", "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "containerd://1.7.13"},
            "addresses": [{"type": "Hostname", "address": name}],
        },
    }


def plugin_config(strategy: str, replicas: int = 1, rename_by_default: bool = False) -> str:
    """A device plugin config file (``version: v1``)."""
    doc: Obj = {"version": "v1", "flags": {"migStrategy": strategy}}
    if replicas > 1:
        resources = ["nvidia.com/gpu"] if strategy != "mixed" else []
        doc["sharing"] = {"timeSlicing": {"renameByDefault": rename_by_default,
                                          "resources": [{"name": r, "replicas": replicas} for r in resources]}}
    return yaml.safe_dump(doc, sort_keys=False)


def plugin_config_map(configs: dict[str, str], namespace: str = GPU_OPERATOR_NAMESPACE,
                      name: str = PLUGIN_CONFIG_MAP) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": dict(configs)}


def _daemonset(name: str, component: str, container: Obj, namespace: str, config_map: str | None) -> Obj:
    app = APP_LABELS[component]
    spec: Obj = {
        "nodeSelector": {DEPLOY_LABEL + component: "true"},
        # The rollout's own taint must not keep a resumed daemon off the node it is reconfiguring.
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "gpuops.io/mig-reconfigure", "operator": "Exists"}],
        "priorityClassName": "system-node-critical",
        "containers": [container],
    }
    if config_map:
        container["volumeMounts"] = [{"name": "config", "mountPath": "/config"}]
        container.setdefault("env", []).append({"name": "CONFIG_FILE", "value": "/config/config.yaml"})
        spec["volumes"] = [{"name": "config", "configMap": {"name": config_map}}]
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {
            "selector": {"matchLabels": {"app": app}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {"metadata": {"labels": {"app": app}}, "spec": spec},
        },
    }


def device_plugin_daemonset(namespace: str = GPU_OPERATOR_NAMESPACE, strategy: str | None = None,
                            config_map: str | None = PLUGIN_CONFIG_MAP, default_config: str | None = None) -> Obj:
    env = [{"name": "MIG_STRATEGY", "value": strategy}] if strategy else []
    if default_config:
        env.append({"name": "DEFAULT_CONFIG", "value": default_config})
    container = {"name": "nvidia-device-plugin", "image": PLUGIN_IMAGE, "command": ["nvidia-device-plugin"], "env": env}
    return _daemonset("nvidia-device-plugin-daemonset", "device-plugin", container, namespace, config_map)


def gfd_daemonset(namespace: str = GPU_OPERATOR_NAMESPACE, strategy: str | None = None,
                  config_map: str | None = PLUGIN_CONFIG_MAP, default_config: str | None = None) -> Obj:
    env = [{"name": "MIG_STRATEGY", "value": strategy}] if strategy else []
    if default_config:
        env.append({"name": "DEFAULT_CONFIG", "value": default_config})
    container = {"name": "gpu-feature-discovery", "image": PLUGIN_IMAGE, "command": ["gpu-feature-discovery"],
                 "env": env}
    ds = _daemonset("gpu-feature-discovery", "gpu-feature-discovery", container, namespace, config_map)
    # GFD hands its labels to NFD through its node's feature directory, as NVIDIA's chart mounts it.
    spec = ds["spec"]["template"]["spec"]
    container.setdefault("volumeMounts", []).append({"name": "output-dir", "mountPath": NFD_FEATURES_DIR})
    output_dir = {"name": "output-dir", "hostPath": {"path": NFD_FEATURES_DIR, "type": "DirectoryOrCreate"}}
    spec.setdefault("volumes", []).append(output_dir)
    return ds


def _crd(plural: str, kind: str) -> Obj:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.nfd.k8s-sigs.io"},
            "spec": {"group": "nfd.k8s-sigs.io", "scope": "Cluster" if kind == "NodeFeatureRule" else "Namespaced",
                     "names": {"kind": kind, "listKind": kind + "List", "plural": plural, "singular": kind.lower()},
                     "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {
                         "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}


def nfd_objects(namespace: str = NFD_NAMESPACE) -> list[tuple[str, Obj]]:
    """Node Feature Discovery as a cluster that has it runs it (NFD v0.18's default deployment, with
    the GPU Operator's pci settings: feature.node.kubernetes.io/pci-10de.present on GPU nodes):
    (resource, object) pairs to create in order."""
    image = NFD_IMAGE
    worker_conf = yaml.safe_dump({"sources": {"pci": {"deviceClassWhitelist": ["02", "0200", "0207", "0300", "0302"],
                                                      "deviceLabelFields": ["vendor"]}}})
    labels = {"app": "nfd"}
    env = [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
           {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    worker = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "nfd-worker", "namespace": namespace, "labels": labels},
        "spec": {"selector": {"matchLabels": {"app": "nfd-worker"}}, "template": {
            "metadata": {"labels": {"app": "nfd-worker"}},
            "spec": {"serviceAccountName": "nfd-worker",
                     # The worker must keep running on a node whose GPUs are being reconfigured.
                     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                                     {"key": "gpuops.io/mig-reconfigure", "operator": "Exists"}],
                     "containers": [{"name": "nfd-worker", "image": image, "command": ["nfd-worker"], "env": env,
                                     "volumeMounts": [
                                         {"name": "features-d", "mountPath": NFD_FEATURES_DIR, "readOnly": True},
                                         {"name": "nfd-worker-conf", "mountPath": "/etc/kubernetes/node-feature-discovery",
                                          "readOnly": True}]}],
                     "volumes": [{"name": "features-d", "hostPath": {"path": NFD_FEATURES_DIR}},
                                 {"name": "nfd-worker-conf", "configMap": {"name": "nfd-worker-conf"}}]}}}}
    master = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nfd-master", "namespace": namespace, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "nfd-master"}}, "template": {
            "metadata": {"labels": {"app": "nfd-master"}},
            "spec": {"serviceAccountName": "nfd-master",
                     "containers": [{"name": "nfd-master", "image": image, "command": ["nfd-master"], "env": env}]}}}}
    return [("customresourcedefinitions", _crd("nodefeatures", "NodeFeature")),
            ("customresourcedefinitions", _crd("nodefeaturerules", "NodeFeatureRule")),
            ("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            ("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "nfd-worker-conf", "namespace": namespace},
                            "data": {"nfd-worker.conf": worker_conf}}),
            ("deployments", master),
            ("daemonsets", worker)]


def dcgm_exporter_daemonset(namespace: str = GPU_OPERATOR_NAMESPACE) -> Obj:
    container = {"name": "nvidia-dcgm-exporter", "image": DCGM_EXPORTER_IMAGE}
    return _daemonset("nvidia-dcgm-exporter", "dcgm-exporter", container, namespace, None)


@dataclasses.dataclass(frozen=True)
class WorkloadSpec:
    name: str
    resource: str
    count: int
    per_pod: int = 1
    namespace: str = "default"
    node: str | None = None
    recreate: bool = True
    pdb_min_available: str | None = None
    pdb_max_unavailable: str | None = None

    def validate(self) -> None:
        if not _NAME_RE.match(self.name) or len(self.name) > 57:
            raise ValueError(f"name: {self.name!r} is not a valid pod name prefix")
        if not self.resource.startswith("nvidia.com/"):
            raise ValueError(f"resource: {self.resource!r} is not an nvidia.com/ resource")
        if self.count < 0:
            raise ValueError(f"count: must be >= 0, got {self.count}")
        if self.per_pod < 1:
            raise ValueError(f"per_pod: must be >= 1, got {self.per_pod}")
        if self.pdb_min_available is not None and self.pdb_max_unavailable is not None:
            raise ValueError("pdb_min_available and pdb_max_unavailable are mutually exclusive")


def _pod_template(spec: WorkloadSpec) -> Obj:
    pod_spec: Obj = {
        "containers": [{"name": "cuda", "image": "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04",
                        "command": ["sleep", "infinity"],
                        "resources": {"limits": {spec.resource: str(spec.per_pod)}}}],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 5,
    }
    if spec.node:
        pod_spec["nodeSelector"] = {"kubernetes.io/hostname": spec.node}
    return {"metadata": {"labels": {"app": spec.name}}, "spec": pod_spec}


def workload_objects(spec: WorkloadSpec) -> list[tuple[str, Obj]]:
    """(plural kind, manifest) to create, in order: the PDB, then a ReplicaSet or bare pods."""
    spec.validate()
    objects: list[tuple[str, Obj]] = []
    if spec.pdb_min_available is not None or spec.pdb_max_unavailable is not None:
        budget: Obj = {"selector": {"matchLabels": {"app": spec.name}}}
        if spec.pdb_min_available is not None:
            budget["minAvailable"] = _int_or_string(spec.pdb_min_available)
        else:
            budget["maxUnavailable"] = _int_or_string(spec.pdb_max_unavailable)
        objects.append(("poddisruptionbudgets", {
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": spec.name, "namespace": spec.namespace}, "spec": budget}))
    template = _pod_template(spec)
    if spec.recreate:
        objects.append(("replicasets", {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": {"app": spec.name}},
            "spec": {"replicas": spec.count, "selector": {"matchLabels": {"app": spec.name}}, "template": template}}))
        return objects
    for i in range(spec.count):
        objects.append(("pods", {"apiVersion": "v1", "kind": "Pod",
                                 "metadata": {"name": f"{spec.name}-{i}", "namespace": spec.namespace,
                                              "labels": dict(template["metadata"]["labels"])},
                                 "spec": dict(template["spec"])}))
    return objects


def _int_or_string(value: str) -> int | str:
    text = str(value)
    return int(text) if text.isdigit() else text
