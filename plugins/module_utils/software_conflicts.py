# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""Where the collection would run beside another manager of the same thing (pure).

Input: what ``k8s_gpu_software_info`` found on the cluster, what ``gpu_node_software_info`` found
on each GPU node, and the settings (the stack, and what the user allows the collection to take
over). Output: one conflict per thing found, each with a message that names its kind,
namespace/name, version and nodes and the settings that resolve it; and the take-overs the
settings allow, as data for the tasks that carry them out.
"""

from __future__ import annotations

from typing import Any, Mapping

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s import gpu_software as sw

TAKE_OVER_MIG_SERVICE = "existing_software_take_over_mig_parted_service"
DISABLE_OPERATOR_MIG_MANAGER = "existing_software_disable_operator_mig_manager"
TAKE_OVER_DEVICE_PLUGIN = "existing_software_take_over_device_plugin"

_NAMES = {
    sw.DEVICE_PLUGIN: "the NVIDIA device plugin", sw.GFD: "GPU Feature Discovery", sw.MIG_MANAGER: "NVIDIA's MIG manager",
    sw.DCGM_EXPORTER: "the DCGM exporter",
}


def _where(finding: Mapping[str, Any]) -> str:
    namespace = finding.get("namespace") or ""
    return "{0} {1}{2}".format(finding.get("kind"), namespace + "/" if namespace else "", finding.get("name"))


def _version(finding: Mapping[str, Any]) -> str:
    return " " + finding["version"] if finding.get("version") else ""


def _manager(finding: Mapping[str, Any]) -> str:
    manager = finding.get("manager") or {}
    if manager.get("type") == "helm":
        return "helm release {0} in namespace {1}".format(manager.get("name"), manager.get("namespace"))
    if manager.get("type") == "gpu-operator":
        return "the GPU Operator's ClusterPolicy {0}".format(manager.get("name"))
    if manager.get("type") not in (None, "", "unknown"):
        return "managed by {0}".format(manager.get("type"))
    return "installed by an unknown tool"


def _nodes(finding: Mapping[str, Any]) -> str:
    nodes = finding.get("nodes") or []
    return " on node(s) " + ", ".join(nodes) if nodes else ""


def _removal(finding: Mapping[str, Any]) -> str:
    manager = finding.get("manager") or {}
    if manager.get("type") == "helm":
        return "uninstall it (helm uninstall {0} -n {1})".format(manager.get("name"), manager.get("namespace"))
    return "delete it (kubectl -n {0} delete {1} {2})".format(
        finding.get("namespace"), str(finding.get("kind")).lower(), finding.get("name"))


def _conflict(component: str, finding: Mapping[str, Any], message: str, node: str = "") -> dict[str, Any]:
    return {"component": component, "kind": finding.get("kind", ""), "namespace": finding.get("namespace", ""),
            "name": finding.get("name", ""), "version": finding.get("version", ""), "node": node, "message": message}


def _helm_release(finding: Mapping[str, Any]) -> bool:
    """Whether the workload is a DaemonSet of a helm release (the objects a take-over can find and remove)."""
    manager = finding.get("manager") or {}
    return finding.get("kind") == "DaemonSet" and manager.get("type") == "helm" and bool(manager.get("name"))


def _takes_over(finding: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    return (bool(settings.get("take_over_device_plugin")) and settings.get("gpu_stack", "standalone") == "standalone"
            and finding.get("component") in (sw.DEVICE_PLUGIN, sw.GFD) and _helm_release(finding))


def _advertising_conflicts(finding: Mapping[str, Any], settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A device plugin taken over must advertise what the collection's will: the same MIG strategy and
    time-slicing replicas, or GPU pods would see their node's resources renamed under them."""
    found = finding.get("settings") or {}
    wanted = {"mig_strategy": (str(settings.get("mig_strategy") or "none"), "k8s_gpu_mig_strategy"),
              "time_slicing_replicas": (int(settings.get("time_slicing_replicas") or 1), "device_plugin_time_slicing_replicas")}
    conflicts = []
    for key, (value, setting) in wanted.items():
        if key in found and found[key] != value:
            conflicts.append(_conflict(finding["component"], finding, (
                "{0} runs {1}{2} ({3}) with {4} {5}, and the collection's would use {6}: {7}. Taking it over would change "
                "what every node advertises. Set {6}: {5} to keep it, or uninstall the release first.").format(
                    _where(finding), _NAMES[finding["component"]], _version(finding), _manager(finding),
                    key.replace("_", " "), found[key], setting, value)))
    return conflicts


def cluster_conflicts(cluster: Mapping[str, Any], settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Conflicts with what runs on the cluster (one per workload or ClusterPolicy)."""
    standalone = settings.get("gpu_stack", "standalone") == "standalone"
    conflicts: list[dict[str, Any]] = []
    policies = cluster.get("cluster_policies") or []
    foreign = [w for w in cluster.get("workloads") or [] if (w.get("manager") or {}).get("type") != "gpu-operator"]
    if standalone:
        for policy in policies:
            conflicts.append(_conflict(sw.OPERATOR, policy, (
                "{0} (GPU Operator{1}) manages {2}: the standalone stack (gpu_stack: standalone) would run a second "
                "copy of them. Set gpu_stack: operator to manage the cluster through the operator, or uninstall the "
                "GPU Operator.").format(_where(policy), _version(policy), ", ".join(policy.get("manages") or []) or "no component")))
        for finding in foreign:
            if finding["component"] in (sw.DEVICE_PLUGIN, sw.GFD):
                if _takes_over(finding, settings):
                    conflicts.extend(_advertising_conflicts(finding, settings))
                    continue
                take_over = ""
                if _helm_release(finding):
                    take_over = " Or set {0}: true to replace it with the collection's node by node.".format(TAKE_OVER_DEVICE_PLUGIN)
                conflicts.append(_conflict(finding["component"], finding, (
                    "{0} runs {1}{2} ({3}){4}, beside the collection's in namespace {5}: two of them would advertise "
                    "and label the same GPUs. Then {6}, and run again.{7}").format(
                        _where(finding), _NAMES[finding["component"]], _version(finding), _manager(finding), _nodes(finding),
                        settings.get("device_plugin_namespace", "nvidia-device-plugin"), _removal(finding), take_over)))
    else:
        release, namespace = settings.get("gpu_operator_release_name"), settings.get("gpu_operator_namespace")
        for policy in policies:
            manager = policy.get("manager") or {}
            if manager.get("type") == "helm" and (manager.get("name"), manager.get("namespace")) != (release, namespace):
                conflicts.append(_conflict(sw.OPERATOR, policy, (
                    "{0} (GPU Operator{1}) belongs to {2}, not to gpu_operator_release_name {3} in gpu_operator_namespace "
                    "{4}: the collection would install a second operator. Set gpu_operator_release_name: {5} and "
                    "gpu_operator_namespace: {6} to manage that release.").format(
                        _where(policy), _version(policy), _manager(policy), release, namespace, manager.get("name"),
                        manager.get("namespace"))))
            if sw.MIG_MANAGER in (policy.get("manages") or []) and not settings.get("disable_operator_mig_manager"):
                nodes = [n["node"] for n in cluster.get("nodes") or []]
                conflicts.append(_conflict(sw.MIG_MANAGER, policy, (
                    "{0} (GPU Operator{1}) runs its MIG manager (migManager.enabled){2}, which applies nvidia.com/mig.config "
                    "itself: two MIG managers would partition the same GPUs. Set {3}: true to switch it off "
                    "(migManager.enabled=false) before the first MIG change.").format(
                        _where(policy), _version(policy), " on node(s) " + ", ".join(nodes) if nodes else "",
                        DISABLE_OPERATOR_MIG_MANAGER)))
    for finding in foreign:
        if finding["component"] == sw.MIG_MANAGER:
            conflicts.append(_conflict(sw.MIG_MANAGER, finding, (
                "{0} runs NVIDIA's MIG manager{1} ({2}){3}: it applies nvidia.com/mig.config itself, and two MIG managers "
                "would partition the same GPUs. Then {4}, and run again.").format(
                    _where(finding), _version(finding), _manager(finding), _nodes(finding), _removal(finding))))
        elif finding["component"] == sw.DCGM_EXPORTER and settings.get("dcgm_exporter_enabled"):
            conflicts.append(_conflict(sw.DCGM_EXPORTER, finding, (
                "{0} runs the DCGM exporter{1} ({2}){3}, and dcgm_exporter_enabled would deploy a second one. Set "
                "dcgm_exporter_enabled: false to keep it, or {4}.").format(
                    _where(finding), _version(finding), _manager(finding), _nodes(finding), _removal(finding))))
    return conflicts


def node_conflicts(host: str, node: Mapping[str, Any], settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Conflicts with what runs on one GPU node (``node``: gpu_node_software_info's result)."""
    conflicts = []
    for service in node.get("mig_manager_services") or []:
        if not (service.get("enabled") or service.get("active") == "active"):
            continue
        if settings.get("take_over_mig_parted_service"):
            continue
        keep = ""
        if service.get("selected_config"):
            keep = " Set mig_config_name: {0} to keep the geometry it applies.".format(service["selected_config"])
        state = "enabled" if service.get("enabled") else service.get("active")
        conflicts.append({
            "component": "mig-parted-service", "kind": "systemd service", "namespace": "", "name": service.get("name"),
            "version": "", "node": host, "message": (
                "Node {0}: systemd service {1} ({2}; mig-parted, config {3} of {4}) applies its own MIG geometry at "
                "every boot. Set {5}: true to stop and disable it where the collection installs its own boot-time "
                "service.{6}").format(
                    host, service.get("name"), state, service.get("selected_config") or "?",
                    service.get("config_file") or "?", TAKE_OVER_MIG_SERVICE, keep)})
    if node.get("driver_runfile") and settings.get("nvidia_driver_install") and settings.get("gpu_stack", "standalone") == "standalone":
        conflicts.append({
            "component": "driver", "kind": "driver", "namespace": "", "name": "runfile", "version": "", "node": host,
            "message": ("Node {0}: the NVIDIA driver was installed with NVIDIA's runfile ({1}), and the driver role would "
                        "install packages beside it. Set nvidia_driver_install: false to keep that driver.").format(
                            host, ", ".join(node["driver_runfile"]))})
    return conflicts


def mig_services_to_take_over(node: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    """The mig-parted services of a node to stop and disable, where the settings allow it."""
    if not settings.get("take_over_mig_parted_service"):
        return []
    return [s["name"] for s in node.get("mig_manager_services") or [] if s.get("enabled") or s.get("active") == "active"]


def operator_mig_managers_to_disable(cluster: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    """The ClusterPolicies whose MIG manager to switch off, where the settings allow it."""
    if settings.get("gpu_stack") != "operator" or not settings.get("disable_operator_mig_manager"):
        return []
    return [p["name"] for p in cluster.get("cluster_policies") or [] if sw.MIG_MANAGER in (p.get("manages") or [])]


def device_plugins_to_take_over(cluster: Mapping[str, Any], settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The device plugin and GFD DaemonSets of helm releases the collection replaces, where the settings allow it:
    namespace, name, component, the nvidia.com/gpu.deploy.<client> label whose presence keeps it off a node,
    and its release (name, namespace)."""
    clients = {sw.DEVICE_PLUGIN: "device-plugin", sw.GFD: "gpu-feature-discovery"}
    taken = []
    for finding in cluster.get("workloads") or []:
        if _takes_over(finding, settings):
            manager = finding.get("manager") or {}
            taken.append({"namespace": finding.get("namespace"), "name": finding.get("name"), "component": finding["component"],
                          "deploy_label": "nvidia.com/gpu.deploy." + clients[finding["component"]],
                          "release": manager.get("name"), "release_namespace": manager.get("namespace") or finding.get("namespace")})
    return sorted(taken, key=lambda t: (t["namespace"], t["name"]))


def fenced_affinity(daemonset: Mapping[str, Any], deploy_label: str) -> dict[str, Any]:
    """The pod affinity of a DaemonSet being taken over: what it requires already, and, in every term
    (terms are ORed, expressions ANDed), that the node carries no ``deploy_label``. The collection's
    DaemonSet runs only where that label is "true": one label write moves a node from one to the other."""
    spec = ((daemonset.get("spec") or {}).get("template") or {}).get("spec") or {}
    affinity = dict(spec.get("affinity") or {})
    node_affinity = dict(affinity.get("nodeAffinity") or {})
    required = dict(node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    fence = {"key": deploy_label, "operator": "DoesNotExist"}
    terms = []
    for term in required.get("nodeSelectorTerms") or [{}]:
        term = dict(term)
        expressions = [e for e in term.get("matchExpressions") or [] if e.get("key") != deploy_label]
        term["matchExpressions"] = expressions + [fence]
        terms.append(term)
    required["nodeSelectorTerms"] = terms
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = required
    affinity["nodeAffinity"] = node_affinity
    return affinity


def found_lines(cluster: Mapping[str, Any], nodes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What was found, one line per thing, for the run's report (conflicting or not)."""
    lines = []
    for policy in cluster.get("cluster_policies") or []:
        lines.append("{0} (GPU Operator{1}, {2}): manages {3}".format(
            _where(policy), _version(policy), _manager(policy), ", ".join(policy.get("manages") or []) or "nothing"))
    for finding in cluster.get("workloads") or []:
        lines.append("{0}: {1}{2} ({3}){4}".format(
            _where(finding), finding.get("component"), _version(finding), _manager(finding), _nodes(finding)))
    for node in cluster.get("nodes") or []:
        lines.append("Node {0}: nvidia.com/mig.config={1} written by {2}".format(
            node.get("node"), node.get("mig_config"), ", ".join(node.get("managers") or [])))
    for host, software in sorted(nodes.items()):
        for service in software.get("mig_manager_services") or []:
            lines.append("Node {0}: systemd service {1} ({2}, {3}; config {4})".format(
                host, service.get("name"), "enabled" if service.get("enabled") else "disabled", service.get("active"),
                service.get("selected_config") or "?"))
        if software.get("driver_runfile"):
            lines.append("Node {0}: driver installed with NVIDIA's runfile".format(host))
        containerd = software.get("containerd") or {}
        if containerd.get("present"):
            lines.append("Node {0}: containerd runtimes {1} (default {2}), registry mirrors {3}".format(
                host, ", ".join(sorted(containerd.get("runtimes") or {})) or "none", containerd.get("default_runtime") or "?",
                ", ".join(containerd.get("registry_mirrors") or []) or "none"))
    return lines
