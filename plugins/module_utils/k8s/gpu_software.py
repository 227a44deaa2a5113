# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""Which NVIDIA software already runs on a cluster, from the API objects alone (pure).

The input is what the API lists (DaemonSets, Deployments, ClusterPolicies, nodes) as plain
dictionaries; the output is a list of findings, one per workload or ClusterPolicy, and one entry per
node whose ``nvidia.com/mig.config`` label another manager writes. An object of any shape is read
without raising: a field of the wrong type counts as absent.

A workload is recognised by its images first (whatever its release or object name), then by the
labels NVIDIA's charts and the GPU Operator give it. Objects the collection deploys itself carry
``app.kubernetes.io/managed-by: gpuops.nvidia.<role>`` and are left out.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

OWN_MANAGED_BY_PREFIX = "gpuops.nvidia."
MIG_CONFIG_LABEL = "nvidia.com/mig.config"
MIG_MANAGER_DEPLOY_LABEL = "nvidia.com/gpu.deploy.mig-manager"

DEVICE_PLUGIN = "device-plugin"
GFD = "gpu-feature-discovery"
MIG_MANAGER = "mig-manager"
DCGM_EXPORTER = "dcgm-exporter"
DCGM = "dcgm"
DRIVER = "driver"
TOOLKIT = "container-toolkit"
NFD = "node-feature-discovery"
OPERATOR = "gpu-operator"

#: The last path element of an image repository → the component it runs.
_IMAGE_COMPONENTS = {
    "k8s-device-plugin": DEVICE_PLUGIN,
    "gpu-feature-discovery": GFD,
    "k8s-mig-manager": MIG_MANAGER,
    "dcgm-exporter": DCGM_EXPORTER,
    "dcgm": DCGM,
    "driver": DRIVER,
    "container-toolkit": TOOLKIT,
    "node-feature-discovery": NFD,
    "gpu-operator": OPERATOR,
}

#: ``app`` / ``app.kubernetes.io/name`` values of NVIDIA's charts and the GPU Operator's operands.
_LABEL_COMPONENTS = {
    "nvidia-device-plugin": DEVICE_PLUGIN,
    "nvidia-device-plugin-daemonset": DEVICE_PLUGIN,
    "gpu-feature-discovery": GFD,
    "nvidia-mig-manager": MIG_MANAGER,
    "nvidia-dcgm-exporter": DCGM_EXPORTER,
    "dcgm-exporter": DCGM_EXPORTER,
    "nvidia-dcgm": DCGM,
    "nvidia-driver-daemonset": DRIVER,
    "nvidia-container-toolkit-daemonset": TOOLKIT,
    "node-feature-discovery": NFD,
    "gpu-operator": OPERATOR,
}

#: ClusterPolicy ``spec`` keys → component, with the operator's default when ``enabled`` is unset.
CLUSTER_POLICY_COMPONENTS = (
    ("driver", DRIVER, True),
    ("toolkit", TOOLKIT, True),
    ("devicePlugin", DEVICE_PLUGIN, True),
    ("gfd", GFD, True),
    ("migManager", MIG_MANAGER, True),
    ("dcgm", DCGM, False),
    ("dcgmExporter", DCGM_EXPORTER, True),
)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def image_repository_and_tag(image: str) -> tuple[str, str]:
    """``nvcr.io/nvidia/k8s-device-plugin:v0.17.0`` → (``nvcr.io/nvidia/k8s-device-plugin``, ``v0.17.0``);
    a digest is dropped, a missing tag is ``""``."""
    image = image.split("@", 1)[0]
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1:]
    return image, ""


def container_component(container: Mapping[str, Any]) -> str | None:
    """The NVIDIA component a container runs, from its image (and command, for the plugin image,
    which also runs GFD and the config-manager sidecars)."""
    repository, _tag = image_repository_and_tag(_str(container.get("image")))
    component = _IMAGE_COMPONENTS.get(repository.rsplit("/", 1)[-1])
    words = " ".join(_str(w) for w in _list(container.get("command")) + _list(container.get("args")))
    if component == DEVICE_PLUGIN:
        if "gpu-feature-discovery" in words:
            return GFD
        if "config-manager" in words:
            return None
    return component


def _containers(workload: Mapping[str, Any]) -> list[dict[str, Any]]:
    pod_spec = _dict(_dict(_dict(workload.get("spec")).get("template")).get("spec"))
    return [c for c in _list(pod_spec.get("containers")) if isinstance(c, dict)]


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return {k: v for k, v in _dict(_dict(obj.get("metadata")).get("labels")).items()
            if isinstance(k, str) and isinstance(v, str)}


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return {k: v for k, v in _dict(_dict(obj.get("metadata")).get("annotations")).items()
            if isinstance(k, str) and isinstance(v, str)}


def is_own(obj: Mapping[str, Any]) -> bool:
    """Deployed by this collection (its roles label every object they write)."""
    return _labels(obj).get("app.kubernetes.io/managed-by", "").startswith(OWN_MANAGED_BY_PREFIX)


def workload_components(workload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(component, image tag) for each NVIDIA component a workload runs: by image, else by label."""
    found: list[tuple[str, str]] = []
    for container in _containers(workload):
        component = container_component(container)
        if component and component not in [c for c, _t in found]:
            found.append((component, image_repository_and_tag(_str(container.get("image")))[1]))
    if found:
        return found
    labels = _labels(workload)
    for key in ("app.kubernetes.io/name", "app"):
        component = _LABEL_COMPONENTS.get(labels.get(key, ""))
        if component:
            return [(component, labels.get("app.kubernetes.io/version", ""))]
    return []


def manager_of(obj: Mapping[str, Any]) -> dict[str, str]:
    """Who manages a workload: the GPU Operator (owned by a ClusterPolicy), a helm release, or unknown."""
    for owner in _list(_dict(obj.get("metadata")).get("ownerReferences")):
        if isinstance(owner, dict) and owner.get("kind") == "ClusterPolicy":
            return {"type": "gpu-operator", "name": _str(owner.get("name"))}
    labels, annotations = _labels(obj), _annotations(obj)
    release = annotations.get("meta.helm.sh/release-name") or (
        labels.get("app.kubernetes.io/instance", "") if labels.get("app.kubernetes.io/managed-by") == "Helm" else "")
    if release:
        return {"type": "helm", "name": release,
                "namespace": annotations.get("meta.helm.sh/release-namespace", _str(_dict(obj.get("metadata")).get("namespace")))}
    managed_by = labels.get("app.kubernetes.io/managed-by", "")
    if managed_by:
        return {"type": managed_by, "name": labels.get("app.kubernetes.io/instance", "")}
    return {"type": "unknown", "name": ""}


def workload_findings(kind: str, workloads: Iterable[Any]) -> list[dict[str, Any]]:
    """One finding per NVIDIA component a foreign DaemonSet or Deployment runs."""
    findings = []
    for workload in workloads:
        if not isinstance(workload, dict) or is_own(workload):
            continue
        metadata = _dict(workload.get("metadata"))
        pod_spec = _dict(_dict(_dict(workload.get("spec")).get("template")).get("spec"))
        node_selector = {k: v for k, v in _dict(pod_spec.get("nodeSelector")).items() if isinstance(k, str) and isinstance(v, str)}
        for component, version in workload_components(workload):
            findings.append({
                "kind": kind, "namespace": _str(metadata.get("namespace")), "name": _str(metadata.get("name")),
                "component": component, "version": version, "manager": manager_of(workload),
                "node_selector": dict(node_selector),
            })
    return findings


def _enabled(section: Any, default: bool) -> bool:
    value = _dict(section).get("enabled")
    return value if isinstance(value, bool) else default


def cluster_policy_findings(policies: Iterable[Any], operator_versions: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One finding per ClusterPolicy, with the components the GPU Operator manages through it."""
    findings = []
    for policy in policies:
        if not isinstance(policy, dict):
            continue
        spec = _dict(policy.get("spec"))
        components = [component for key, component, default in CLUSTER_POLICY_COMPONENTS if _enabled(spec.get(key), default)]
        findings.append({
            "kind": "ClusterPolicy", "namespace": "", "name": _str(_dict(policy.get("metadata")).get("name")),
            "component": OPERATOR, "version": (operator_versions or {}).get("version", ""),
            "manager": manager_of(policy), "manages": components,
            "mig_strategy": _str(_dict(spec.get("mig")).get("strategy")),
            "state": _str(_dict(policy.get("status")).get("state")),
        })
    return findings


def _label_managers(node: Mapping[str, Any], label: str) -> list[str]:
    """Field managers that own ``metadata.labels[label]`` (server-side apply / update bookkeeping)."""
    managers = []
    for entry in _list(_dict(node.get("metadata")).get("managedFields")):
        if not isinstance(entry, dict):
            continue
        labels = _dict(_dict(_dict(entry.get("fieldsV1")).get("f:metadata")).get("f:labels"))
        if "f:" + label in labels:
            manager = _str(entry.get("manager"))
            if manager and manager not in managers:
                managers.append(manager)
    return managers


def is_foreign_mig_manager(manager: str) -> bool:
    """A field manager name that is the GPU Operator or its MIG manager."""
    lowered = manager.lower()
    return "gpu-operator" in lowered or "mig-manager" in lowered


def node_findings(nodes: Iterable[Any]) -> list[dict[str, Any]]:
    """GPU nodes whose ``nvidia.com/mig.config`` label the GPU Operator or its MIG manager writes:
    named as a field manager of the label, or the node is labelled for the operator's MIG manager."""
    findings = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        labels = _labels(node)
        if MIG_CONFIG_LABEL not in labels and labels.get(MIG_MANAGER_DEPLOY_LABEL) != "true":
            continue
        managers = _label_managers(node, MIG_CONFIG_LABEL)
        foreign = [m for m in managers if is_foreign_mig_manager(m)]
        if not foreign and labels.get(MIG_MANAGER_DEPLOY_LABEL) != "true":
            continue
        findings.append({
            "node": _str(_dict(node.get("metadata")).get("name")),
            "mig_config": labels.get(MIG_CONFIG_LABEL, ""),
            "managers": foreign or ["gpu-operator (" + MIG_MANAGER_DEPLOY_LABEL + "=true)"],
        })
    return findings


def discover(daemonsets: Iterable[Any], deployments: Iterable[Any], cluster_policies: Iterable[Any],
             nodes: Iterable[Any]) -> dict[str, Any]:
    """Everything found: ``workloads`` (DaemonSets and Deployments), ``cluster_policies``, ``nodes``."""
    workloads = workload_findings("DaemonSet", daemonsets) + workload_findings("Deployment", deployments)
    operator = next((w for w in workloads if w["component"] == OPERATOR), None)
    policies = cluster_policy_findings(cluster_policies, {"version": operator["version"]} if operator else None)
    return {"workloads": workloads, "cluster_policies": policies, "nodes": node_findings(nodes)}


# --- reading the cluster (I/O) ----------------------------------------------------------------

#: Seconds the reads of one run may take, retries included.
READ_DEADLINE = 60.0
CLUSTER_POLICIES_PATH = "/apis/nvidia.com/v1/clusterpolicies"


def _read_list(client: Any, path: str, label_selector: str | None = None, missing_ok: bool = False) -> list[Any]:
    # Imported here, not at the top: the existing_software filters import this module, and Ansible
    # imports every filter file of the collection to find one of its filters, in each templating
    # worker; the Kubernetes client would cost every task of every host that uses one about 0.2 s.
    from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError  # pylint: disable=import-outside-toplevel

    def read() -> list[Any]:
        return client.list_path(path, label_selector)
    try:
        return client.retry.run(read, client.retry.deadline(READ_DEADLINE), "GET " + path)
    except K8sError as error:
        if missing_ok and error.details.get("status") == 404:
            return []
        raise


def selector_text(workload: Mapping[str, Any]) -> str | None:
    """A DaemonSet's ``matchLabels`` as a label selector; None when it has none usable."""
    labels = _dict(_dict(_dict(workload.get("spec")).get("selector")).get("matchLabels"))
    pairs = ["{0}={1}".format(k, v) for k, v in sorted(labels.items()) if isinstance(k, str) and isinstance(v, str)]
    return ",".join(pairs) or None


def _env(container: Mapping[str, Any]) -> dict[str, str]:
    return {_str(_dict(e).get("name")): _str(_dict(e).get("value")) for e in _list(container.get("env"))}


def plugin_settings(workload: Mapping[str, Any], config_maps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """How a device plugin DaemonSet advertises: ``mig_strategy`` and ``time_slicing_replicas`` (1 without
    sharing), from its config file (the ConfigMap of its pods' volumes, the key its DEFAULT_CONFIG names or
    the only one) or else from its MIG_STRATEGY environment. Empty where neither says."""
    import yaml  # pylint: disable=import-outside-toplevel  # only a device plugin's config needs it

    pod_spec = _dict(_dict(_dict(workload.get("spec")).get("template")).get("spec"))
    containers = [_dict(c) for c in _list(pod_spec.get("initContainers")) + _list(pod_spec.get("containers"))]
    env: dict[str, str] = {}
    for container in containers:
        env.update({k: v for k, v in _env(container).items() if v})
    settings: dict[str, Any] = {}
    for volume in _list(pod_spec.get("volumes")):
        data = _dict(_dict(config_maps.get(_str(_dict(_dict(volume).get("configMap")).get("name")))).get("data"))
        key = env.get("DEFAULT_CONFIG") if env.get("DEFAULT_CONFIG") in data else (next(iter(data)) if len(data) == 1 else None)
        if not key:
            continue
        try:
            config = _dict(yaml.safe_load(data[key]))
        except yaml.YAMLError:
            continue
        strategy = _str(_dict(config.get("flags")).get("migStrategy"))
        if strategy:
            settings["mig_strategy"] = strategy
        replicas = [r.get("replicas") for r in _list(_dict(_dict(config.get("sharing")).get("timeSlicing")).get("resources"))
                    if isinstance(r, dict) and isinstance(r.get("replicas"), int)]
        settings["time_slicing_replicas"] = max(replicas) if replicas else 1
        break
    if "mig_strategy" not in settings and env.get("MIG_STRATEGY"):
        settings["mig_strategy"] = env["MIG_STRATEGY"]
    return settings


def read_cluster(client: Any) -> dict[str, Any]:
    """List what ``discover`` reads, and add the nodes each foreign DaemonSet's pods run on."""
    daemonsets = _read_list(client, "/apis/apps/v1/daemonsets")
    found = discover(daemonsets, _read_list(client, "/apis/apps/v1/deployments"),
                     _read_list(client, CLUSTER_POLICIES_PATH, missing_ok=True), _read_list(client, "/api/v1/nodes"))
    by_name = {(_str(_dict(d.get("metadata")).get("namespace")), _str(_dict(d.get("metadata")).get("name"))): d
               for d in daemonsets if isinstance(d, dict)}
    config_maps: dict[str, dict[str, Any]] = {}
    for finding in found["workloads"]:
        workload = by_name.get((finding["namespace"], finding["name"])) if finding["kind"] == "DaemonSet" else None
        if workload and finding["component"] == DEVICE_PLUGIN:
            if finding["namespace"] not in config_maps:
                config_maps[finding["namespace"]] = {
                    _str(_dict(c.get("metadata")).get("name")): c
                    for c in _read_list(client, "/api/v1/namespaces/{0}/configmaps".format(finding["namespace"]))
                    if isinstance(c, dict)}
            finding["settings"] = plugin_settings(workload, config_maps[finding["namespace"]])
        selector = selector_text(workload) if workload else None
        if not selector:
            continue
        pods = _read_list(client, "/api/v1/namespaces/{0}/pods".format(finding["namespace"]), selector)
        finding["nodes"] = sorted({_str(_dict(p.get("spec")).get("nodeName")) for p in pods if isinstance(p, dict)} - {""})
    return found
