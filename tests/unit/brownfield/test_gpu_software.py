# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What k8s_gpu_software_info finds in API objects: NVIDIA components by image and by label, who
manages them, the collection's own objects left out, and any object shape read without raising."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s import gpu_software as sw


def daemonset(name, namespace, image, labels=None, annotations=None, owner=None, command=None):
    metadata = {"name": name, "namespace": namespace, "labels": labels or {}, "annotations": annotations or {}}
    if owner:
        metadata["ownerReferences"] = [{"kind": "ClusterPolicy", "name": owner}]
    container = {"name": "c", "image": image}
    if command:
        container["command"] = command
    return {"metadata": metadata, "spec": {"selector": {"matchLabels": {"app": name}},
                                           "template": {"spec": {"containers": [container]}}}}


HELM = {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "nvdp"}


def test_a_helm_device_plugin_and_gfd_under_any_release_name_are_found_with_their_release():
    found = sw.discover([
        daemonset("nvdp-nvidia-device-plugin", "kube-system", "nvcr.io/nvidia/k8s-device-plugin:v0.17.0", HELM,
                  {"meta.helm.sh/release-name": "nvdp", "meta.helm.sh/release-namespace": "kube-system"}),
        daemonset("whatever", "kube-system", "nvcr.io/nvidia/k8s-device-plugin:v0.17.0", HELM,
                  command=["gpu-feature-discovery"]),
    ], [], [], [])
    assert [(w["component"], w["version"], w["manager"]) for w in found["workloads"]] == [
        ("device-plugin", "v0.17.0", {"type": "helm", "name": "nvdp", "namespace": "kube-system"}),
        ("gpu-feature-discovery", "v0.17.0", {"type": "helm", "name": "nvdp", "namespace": "kube-system"}),
    ]


def test_the_collections_own_objects_are_left_out():
    own = daemonset("nvidia-device-plugin-daemonset", "nvidia-device-plugin", "nvcr.io/nvidia/k8s-device-plugin:v0.19.3",
                    {"app.kubernetes.io/managed-by": "gpuops.nvidia.nvidia_device_plugin"})
    assert sw.discover([own], [], [], [])["workloads"] == []


def test_a_workload_of_an_unknown_image_is_found_by_its_chart_label():
    labels = {"app.kubernetes.io/name": "nvidia-device-plugin", "app.kubernetes.io/version": "0.16.2"}
    mirrored = daemonset("plugin", "gpu", "registry.example/mirror/plugin:1", labels)
    assert [(w["component"], w["version"]) for w in sw.discover([mirrored], [], [], [])["workloads"]] == [("device-plugin", "0.16.2")]


def test_config_manager_sidecars_are_not_a_device_plugin_and_a_digest_is_dropped():
    assert sw.container_component({"image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.0", "command": ["config-manager"]}) is None
    assert sw.image_repository_and_tag("nvcr.io/nvidia/k8s-device-plugin:v0.17.0@sha256:ab") == ("nvcr.io/nvidia/k8s-device-plugin", "v0.17.0")
    assert sw.image_repository_and_tag("localhost:5000/k8s-mig-manager") == ("localhost:5000/k8s-mig-manager", "")


def test_a_cluster_policy_lists_the_components_the_operator_manages_with_its_defaults():
    policy = {"metadata": {"name": "cluster-policy", "annotations": {"meta.helm.sh/release-name": "gpu-operator",
                                                                     "meta.helm.sh/release-namespace": "gpu-operator"}},
              "spec": {"driver": {"enabled": False}, "migManager": {"enabled": True}, "mig": {"strategy": "single"}},
              "status": {"state": "ready"}}
    operator = {"metadata": {"name": "gpu-operator", "namespace": "gpu-operator"},
                "spec": {"template": {"spec": {"containers": [{"image": "nvcr.io/nvidia/gpu-operator:v25.3.0"}]}}}}
    mig_manager = daemonset("nvidia-mig-manager", "gpu-operator", "nvcr.io/nvidia/cloud-native/k8s-mig-manager:v0.12.1",
                            owner="cluster-policy")
    found = sw.discover([mig_manager], [operator], [policy], [])
    [finding] = found["cluster_policies"]
    assert finding["manages"] == ["container-toolkit", "device-plugin", "gpu-feature-discovery", "mig-manager", "dcgm-exporter"]
    assert (finding["version"], finding["mig_strategy"], finding["state"]) == ("v25.3.0", "single", "ready")
    assert finding["manager"] == {"type": "helm", "name": "gpu-operator", "namespace": "gpu-operator"}
    assert found["workloads"][0]["manager"] == {"type": "gpu-operator", "name": "cluster-policy"}


def test_nodes_whose_mig_config_label_the_operator_writes_are_found():
    def node(name, labels, managers=()):
        fields = [{"manager": m, "fieldsV1": {"f:metadata": {"f:labels": {"f:nvidia.com/mig.config": {}}}}} for m in managers]
        return {"metadata": {"name": name, "labels": labels, "managedFields": fields}}
    found = sw.node_findings([
        node("by-operator", {"nvidia.com/mig.config": "all-disabled"}, ["gpu-operator"]),
        node("by-kubectl", {"nvidia.com/mig.config": "all-1g.5gb"}, ["kubectl-label"]),
        node("deploy-label", {"nvidia.com/mig.config": "all-balanced", "nvidia.com/gpu.deploy.mig-manager": "true"}),
        node("plain", {}),
    ])
    assert [(f["node"], f["mig_config"]) for f in found] == [("by-operator", "all-disabled"), ("deploy-label", "all-balanced")]
    assert found[0]["managers"] == ["gpu-operator"]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=12)
hostile = st.one_of(json_values, st.fixed_dictionaries({"metadata": json_values, "spec": json_values}),
                    st.fixed_dictionaries({"spec": st.fixed_dictionaries({"template": st.fixed_dictionaries(
                        {"spec": st.fixed_dictionaries({"containers": st.lists(json_values, max_size=2)})})})}))


@settings(max_examples=150, deadline=None)
@given(st.lists(hostile, max_size=3), st.lists(hostile, max_size=2), st.lists(hostile, max_size=2), st.lists(hostile, max_size=2))
def test_objects_of_any_shape_never_crash_discovery(daemonsets, deployments, policies, nodes):
    found = sw.discover(daemonsets, deployments, policies, nodes)
    assert set(found) == {"workloads", "cluster_policies", "nodes"}
