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
