# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Which findings are conflicts for the settings, and what each message names."""

from __future__ import annotations

from ansible_collections.gpuops.nvidia.plugins.module_utils import software_conflicts as sc

HELM_PLUGIN = {"kind": "DaemonSet", "namespace": "kube-system", "name": "nvdp-nvidia-device-plugin", "component": "device-plugin",
               "version": "v0.17.0", "manager": {"type": "helm", "name": "nvdp", "namespace": "kube-system"},
               "nodes": ["gpu-node-1", "gpu-node-2"]}
POLICY = {"kind": "ClusterPolicy", "namespace": "", "name": "cluster-policy", "component": "gpu-operator", "version": "v25.3.0",
          "manager": {"type": "helm", "name": "gpu-operator", "namespace": "gpu-operator"},
          "manages": ["device-plugin", "mig-manager"]}
STANDALONE = {"gpu_stack": "standalone", "device_plugin_namespace": "nvidia-device-plugin"}
OPERATOR = {"gpu_stack": "operator", "gpu_operator_release_name": "gpu-operator", "gpu_operator_namespace": "gpu-operator"}


def test_a_helm_device_plugin_is_one_conflict_naming_kind_name_version_nodes_and_the_fix():
    [conflict] = sc.cluster_conflicts({"workloads": [HELM_PLUGIN]}, STANDALONE)
    for text in ("DaemonSet kube-system/nvdp-nvidia-device-plugin", "v0.17.0", "gpu-node-1, gpu-node-2",
                 "helm release nvdp", "helm uninstall nvdp -n kube-system"):
        assert text in conflict["message"]


def test_the_operators_own_plugin_is_reported_through_its_cluster_policy_only():
    operand = dict(HELM_PLUGIN, manager={"type": "gpu-operator", "name": "cluster-policy"})
    conflicts = sc.cluster_conflicts({"workloads": [operand], "cluster_policies": [POLICY]}, STANDALONE)
    assert [c["kind"] for c in conflicts] == ["ClusterPolicy"]
    assert "gpu_stack: operator" in conflicts[0]["message"]


def test_with_the_operator_stack_its_mig_manager_is_refused_unless_switching_it_off_is_allowed():
    cluster = {"cluster_policies": [POLICY], "nodes": [{"node": "gpu-node-1"}]}
    [conflict] = sc.cluster_conflicts(cluster, OPERATOR)
    assert sc.DISABLE_OPERATOR_MIG_MANAGER in conflict["message"] and "gpu-node-1" in conflict["message"]
    allowed = dict(OPERATOR, disable_operator_mig_manager=True)
    assert sc.cluster_conflicts(cluster, allowed) == []
    assert sc.operator_mig_managers_to_disable(cluster, allowed) == ["cluster-policy"]


def test_an_operator_of_another_release_is_refused_naming_the_release_settings():
    other = dict(POLICY, manages=[], manager={"type": "helm", "name": "nvidia-gpu-operator", "namespace": "ops"})
    [conflict] = sc.cluster_conflicts({"cluster_policies": [other]}, OPERATOR)
    assert "gpu_operator_release_name: nvidia-gpu-operator" in conflict["message"]


def test_a_mig_parted_service_is_refused_unless_taking_it_over_is_allowed():
    node = {"mig_manager_services": [{"name": "nvidia-mig-manager.service", "enabled": True, "active": "active",
                                      "selected_config": "all-1g.5gb", "config_file": "/etc/nvidia-mig-manager/config.yml"}]}
    [conflict] = sc.node_conflicts("gpu-node-1", node, {})
    assert "mig_config_name: all-1g.5gb" in conflict["message"] and sc.TAKE_OVER_MIG_SERVICE in conflict["message"]
    assert sc.node_conflicts("gpu-node-1", node, {"take_over_mig_parted_service": True}) == []
    assert sc.mig_services_to_take_over(node, {"take_over_mig_parted_service": True}) == ["nvidia-mig-manager.service"]
    stopped = {"mig_manager_services": [dict(node["mig_manager_services"][0], enabled=False, active="inactive")]}
    assert sc.node_conflicts("gpu-node-1", stopped, {}) == []


def test_a_runfile_driver_is_refused_only_where_the_driver_role_installs_one():
    node = {"driver_runfile": ["/usr/bin/nvidia-uninstall"]}
    assert len(sc.node_conflicts("n", node, {"nvidia_driver_install": True})) == 1
    assert sc.node_conflicts("n", node, {"nvidia_driver_install": False}) == []


def test_a_foreign_dcgm_exporter_is_refused_only_when_the_collection_deploys_one():
    exporter = dict(HELM_PLUGIN, component="dcgm-exporter", name="dcgm-exporter")
    assert sc.cluster_conflicts({"workloads": [exporter]}, STANDALONE) == []
    [conflict] = sc.cluster_conflicts({"workloads": [exporter]}, dict(STANDALONE, dcgm_exporter_enabled=True))
    assert "dcgm_exporter_enabled: false" in conflict["message"]


def test_a_helm_device_plugin_is_taken_over_instead_of_refused_where_allowed():
    gfd = dict(HELM_PLUGIN, name="nvdp-gpu-feature-discovery", component="gpu-feature-discovery")
    cluster = {"workloads": [HELM_PLUGIN, gfd]}
    refused = sc.cluster_conflicts(cluster, STANDALONE)
    assert len(refused) == 2 and all(sc.TAKE_OVER_DEVICE_PLUGIN in c["message"] for c in refused)
    assert sc.device_plugins_to_take_over(cluster, STANDALONE) == []
    allowed = dict(STANDALONE, take_over_device_plugin=True)
    assert sc.cluster_conflicts(cluster, allowed) == []
    assert [(t["name"], t["deploy_label"], t["release"], t["release_namespace"])
            for t in sc.device_plugins_to_take_over(cluster, allowed)] == [
        ("nvdp-gpu-feature-discovery", "nvidia.com/gpu.deploy.gpu-feature-discovery", "nvdp", "kube-system"),
        ("nvdp-nvidia-device-plugin", "nvidia.com/gpu.deploy.device-plugin", "nvdp", "kube-system")]


def test_a_device_plugin_of_no_helm_release_is_still_refused_when_taking_over_is_allowed():
    plain = dict(HELM_PLUGIN, manager={"type": "unknown", "name": ""})
    allowed = dict(STANDALONE, take_over_device_plugin=True)
    [conflict] = sc.cluster_conflicts({"workloads": [plain]}, allowed)
    assert sc.TAKE_OVER_DEVICE_PLUGIN not in conflict["message"]
    assert sc.device_plugins_to_take_over({"workloads": [plain]}, allowed) == []


def test_the_fence_keeps_what_the_daemonset_required_and_adds_the_absent_label_to_every_term():
    gpu = {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}
    pci = {"key": "feature.node.kubernetes.io/pci-10de.present", "operator": "In", "values": ["true"]}
    daemonset = {"spec": {"template": {"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [gpu]}, {"matchExpressions": [pci]}]}}}}}}}
    fence = {"key": "nvidia.com/gpu.deploy.device-plugin", "operator": "DoesNotExist"}
    affinity = sc.fenced_affinity(daemonset, fence["key"])
    assert affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchExpressions": [gpu, fence]}, {"matchExpressions": [pci, fence]}]
    # Fencing twice writes the same affinity: a re-run changes nothing.
    fenced = {"spec": {"template": {"spec": {"affinity": affinity}}}}
    assert sc.fenced_affinity(fenced, fence["key"]) == affinity
    assert sc.fenced_affinity({}, fence["key"]) == {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [fence]}]}}}


def test_a_take_over_that_would_change_the_strategy_or_sharing_is_refused_naming_both():
    plugin = dict(HELM_PLUGIN, settings={"mig_strategy": "single", "time_slicing_replicas": 4})
    allowed = dict(STANDALONE, take_over_device_plugin=True, mig_strategy="mixed", time_slicing_replicas=1)
    strategy, replicas = sc.cluster_conflicts({"workloads": [plugin]}, allowed)
    assert "mig strategy single" in strategy["message"] and "k8s_gpu_mig_strategy: mixed" in strategy["message"]
    assert "time slicing replicas 4" in replicas["message"] and "device_plugin_time_slicing_replicas: 1" in replicas["message"]
    same = dict(allowed, mig_strategy="single", time_slicing_replicas=4)
    assert sc.cluster_conflicts({"workloads": [plugin]}, same) == []
