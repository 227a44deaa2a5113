# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pod selection by scope, PDB classification, and the eviction loop against an in-memory API."""

from __future__ import annotations

import pytest
from k8s_unit_helpers import api_error, make_node, make_pod, pdb_refusal

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.evict import (
    EvacuationRequest,
    device_map,
    evacuate,
    gpu_resources,
    is_disruption_budget_refusal,
    matching_pdbs,
    pdb_names_from_refusal,
    select_pods,
    selector_matches,
)

GPU = {"nvidia.com/gpu": "1"}
MIG = {"nvidia.com/mig-1g.5gb": "1"}


def names(entries):
    return [entry["name"] for entry in entries]


# --- selection --------------------------------------------------------------------------------


def test_gpu_resources_cover_requests_limits_and_init_containers():
    assert gpu_resources(make_pod("a", gpus=GPU)) == ["nvidia.com/gpu"]
    assert gpu_resources(make_pod("b", init_gpus=MIG)) == ["nvidia.com/mig-1g.5gb"]
    assert gpu_resources(make_pod("c", gpus={"nvidia.com/gpu": "0", "cpu": "1"})) == []
    assert gpu_resources(make_pod("d")) == []


def test_daemonset_and_mirror_pods_are_always_skipped():
    pods = [
        make_pod("plugin", owner_kind="DaemonSet", gpus=GPU),
        make_pod("static", owner_kind="Node", annotations={"kubernetes.io/config.mirror": "abc"}),
        make_pod("web"),
    ]
    targets, skipped = select_pods(pods, "all")
    assert names(targets) == ["web"]
    assert {entry["name"]: entry["reason"] for entry in skipped} == {
        "plugin": "DaemonSet pod", "static": "mirror pod (managed by the kubelet, cannot be evicted)"}


def test_gpu_scope():
    pods = [make_pod("train", gpus=GPU), make_pod("prep", init_gpus=MIG), make_pod("web"), make_pod("done", gpus=GPU, phase="Succeeded")]
    targets, skipped = select_pods(pods, "gpu")
    assert names(targets) == ["done", "prep", "train"]
    assert [(e["name"], e["reason"]) for e in skipped] == [("web", "requests no nvidia.com/* resource")]
    assert targets[-1]["reason"] == "requests nvidia.com/gpu"


def held(*entries):
    """gpu_pod_devices' result for pods given as (name, devices, gpus)."""
    return {"available": True, "reason": None, "pods": [
        {"namespace": "default", "name": name, "devices": list(devices), "gpus": list(gpus)} for name, devices, gpus in entries]}


def test_devices_scope_selects_from_the_nodes_map():
    pods = [
        make_pod("a", gpus=MIG),
        make_pod("b", gpus=MIG),
        make_pod("c", gpus=GPU),
        make_pod("d", gpus=MIG),
        make_pod("e"),
        make_pod("f", gpus=GPU),
    ]
    node_map = held(("a", ["MIG-1"], ["GPU-0"]), ("b", ["MIG-2", "MIG-3"], ["GPU-1"]), ("c", ["GPU-9"], ["GPU-9"]),
                    ("f", ["GPU-0"], ["GPU-0"]))
    targets, skipped = select_pods(pods, "devices", ["MIG-3", "GPU-0"], device_map(node_map))
    assert [(e["name"], e["reason"]) for e in targets] == [
        ("a", "uses GPU-0"),
        ("b", "uses MIG-3"),
        ("d", "requests nvidia.com/mig-1g.5gb but the node's pod -> device map does not list it (started after the map "
              "was read?), so it counts as holding the devices"),
        ("f", "uses GPU-0"),
    ]
    assert {e["name"]: e["reason"] for e in skipped} == {"c": "uses other devices: GPU-9", "e": "requests no nvidia.com/* resource"}


def test_the_maps_parents_name_the_mig_device_a_gpu_selects():
    node_map = {"available": True, "reason": None, "pods": [
        {"namespace": "default", "name": "a", "devices": ["MIG-1"], "gpus": ["GPU-0"], "parents": {"MIG-1": "GPU-0"}}]}
    targets = select_pods([make_pod("a", gpus=MIG)], "devices", ["GPU-0"], device_map(node_map))[0]
    assert [(e["name"], e["reason"]) for e in targets] == [("a", "uses MIG-1")]
    with pytest.raises(K8sError, match=r"pod_devices.pods\[0\].parents: expected a map"):
        device_map([{"namespace": "n", "name": "x", "parents": ["MIG-1"]}])


def test_device_parents_still_widen_a_gpu_to_its_mig_devices():
    node_map = held(("a", ["MIG-1"], []))
    targets = select_pods([make_pod("a", gpus=MIG)], "devices", ["GPU-0"], device_map(node_map), {"MIG-1": "GPU-0"})[0]
    assert [(e["name"], e["reason"]) for e in targets] == [("a", "uses MIG-1")]


@pytest.mark.parametrize("given, reason", [
    (None, "no pod_devices were given (read them on the node with gpuops.nvidia.gpu_pod_devices)"),
    ({"available": False, "reason": "socket /x does not exist", "pods": []}, "socket /x does not exist"),
])
def test_without_a_map_every_gpu_pod_is_a_target_and_says_why(given, reason):
    pods = [make_pod("a", gpus=MIG), make_pod("b", gpus=GPU), make_pod("web")]
    targets, skipped = select_pods(pods, "devices", ["MIG-3"], device_map(given))
    assert [(e["name"], e["reason"]) for e in targets] == [
        ("a", "requests nvidia.com/mig-1g.5gb; which devices it holds is unknown, so it counts as holding them: " + reason),
        ("b", "requests nvidia.com/gpu; which devices it holds is unknown, so it counts as holding them: " + reason),
    ]
    assert names(skipped) == ["web"]


def test_the_map_may_be_the_pods_list_alone():
    assert device_map([{"namespace": "ml", "name": "t", "devices": ["MIG-1"], "gpus": ["GPU-0"]}]) == {
        "available": True, "reason": None, "pods": {("ml", "t"): {"devices": ["MIG-1"], "gpus": ["GPU-0"], "parents": {}}}}


@pytest.mark.parametrize("given, message", [
    ({"pods": []}, "pod_devices: a mapping must be the result of gpuops.nvidia.gpu_pod_devices"),
    ("GPU-1", "pod_devices: expected gpu_pod_devices' result or its pods list"),
    ([{"name": "x"}], r"pod_devices.pods\[0\]: each pod needs a namespace and a name"),
    ([{"namespace": "n", "name": "x", "devices": "MIG-1"}], r"pod_devices.pods\[0\].devices: expected a list of device UUIDs"),
])
def test_a_malformed_map_is_refused_naming_the_field(given, message):
    with pytest.raises(K8sError, match=message):
        EvacuationRequest("n", scope="devices", device_uuids=["GPU-1"], pod_devices=given)


def test_request_validation_names_the_field():
    with pytest.raises(K8sError, match="device_uuids: at least one"):
        EvacuationRequest("n", scope="devices")
    with pytest.raises(K8sError, match="device_uuids: only used when scope is devices"):
        EvacuationRequest("n", scope="gpu", device_uuids=["GPU-1"])
    with pytest.raises(K8sError, match="pod_devices: only used when scope is devices"):
        EvacuationRequest("n", scope="gpu", pod_devices=[])
    with pytest.raises(K8sError, match="force_reason: required when force is true"):
        EvacuationRequest("n", force=True, force_reason=" ")
    with pytest.raises(K8sError, match="scope: 'some'"):
        EvacuationRequest("n", scope="some")
    assert EvacuationRequest("n", pod_selectors=["app=a", "tier!=db"]).label_selector == "app=a,tier!=db"


# --- PDBs -------------------------------------------------------------------------------------


def test_selector_matching():
    labels = {"app": "web", "tier": "front"}
    assert selector_matches({}, labels)
    assert not selector_matches(None, labels)
    assert selector_matches({"matchLabels": {"app": "web"}}, labels)
    assert not selector_matches({"matchLabels": {"app": "db"}}, labels)
    assert selector_matches({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, labels)
    assert selector_matches({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, labels)
    assert selector_matches({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "x", "operator": "Gt", "values": ["1"]}]}, labels)


def pdb(name, namespace="default", **selector):
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"selector": selector}}


def test_matching_pdbs_by_namespace_and_selector():
    pod = make_pod("w", labels={"app": "web"})
    pdbs = [pdb("web", matchLabels={"app": "web"}), pdb("all"), pdb("db", matchLabels={"app": "db"}), pdb("elsewhere", "other")]
    assert matching_pdbs(pod, pdbs) == ["all", "web"]


def test_refusal_classification():
    body = {"message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "details": {"causes": [{"reason": "DisruptionBudget", "message": "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}]}}
    assert is_disruption_budget_refusal(429, body)
    assert pdb_names_from_refusal(body) == ["web-pdb"]
    assert not is_disruption_budget_refusal(429, {"message": "too many requests, please try again later"})
    assert not is_disruption_budget_refusal(500, body)


# --- the eviction loop ------------------------------------------------------------------------


def cluster(fake_kube, pods, **kwargs):
    return fake_kube(nodes=[make_node(unschedulable=True)], pods=pods, **kwargs)


def test_evicts_each_target_once_and_waits_until_gone(fake_kube):
    kube = cluster(fake_kube, [make_pod("train", gpus=GPU), make_pod("web"), make_pod("plugin", owner_kind="DaemonSet", gpus=GPU)])
    result = evacuate(kube, EvacuationRequest("gpu-node-1", scope="gpu", grace_period=5), check_mode=False)
    assert [call for call in kube.calls if call[0] == "evict_pod"] == [("evict_pod", "default", "train", "uid-default-train", 5)]
    assert result["changed"] is True
    assert names(result["evicted"]) == ["train"]
    assert {e["name"] for e in result["skipped"]} == {"web", "plugin"}
    assert result["blocked"] == [] and result["remaining"] == [] and result["forced"] == []
    assert result["diff"] == {"before": ["default/plugin", "default/train", "default/web"], "after": ["default/plugin", "default/web"]}
    assert result["warnings"] == []
    assert kube.count("delete_pod") == 0


def test_check_mode_evicts_nothing(fake_kube):
    kube = cluster(fake_kube, [make_pod("train", gpus=GPU)])
    result = evacuate(kube, EvacuationRequest("gpu-node-1"), check_mode=True)
    assert kube.count("evict_pod") == 0
    assert result["changed"] is True and names(result["evicted"]) == ["train"]
    assert result["diff"]["after"] == []


def test_check_mode_lists_every_gpu_pod_and_why_when_the_map_is_unavailable(fake_kube):
    kube = cluster(fake_kube, [make_pod("train", gpus=GPU), make_pod("serve", gpus=MIG), make_pod("web")])
    unavailable = {"available": False, "reason": "the kubelet at /s answered PodResources v1 List with gRPC UNIMPLEMENTED"}
    request = EvacuationRequest("gpu-node-1", scope="devices", device_uuids=["MIG-1"], pod_devices=unavailable)
    result = evacuate(kube, request, check_mode=True)
    assert kube.count("evict_pod") == 0
    assert result["device_map"] == {"available": False, "reason": unavailable["reason"]}
    assert [(e["name"], e["reason"].endswith(unavailable["reason"])) for e in result["evicted"]] == [("serve", True), ("train", True)]
    assert any("every GPU pod of node gpu-node-1 is evicted, 2 pod(s)" in warning for warning in result["warnings"])


def test_the_map_narrows_the_eviction_to_the_pods_on_changing_devices(fake_kube):
    kube = cluster(fake_kube, [make_pod("a", gpus=MIG), make_pod("b", gpus=MIG)])
    request = EvacuationRequest("gpu-node-1", scope="devices", device_uuids=["MIG-1"],
                                pod_devices=held(("a", ["MIG-1"], ["GPU-0"]), ("b", ["MIG-2"], ["GPU-0"])))
    result = evacuate(kube, request, check_mode=False)
    assert names(result["evicted"]) == ["a"] and kube.count("evict_pod") == 1
    assert result["device_map"] == {"available": True, "reason": None}


def test_nothing_to_do_is_not_a_change(fake_kube):
    kube = cluster(fake_kube, [make_pod("web")])
    result = evacuate(kube, EvacuationRequest("gpu-node-1"), check_mode=False)
    assert result["changed"] is False and kube.count("evict_pod") == 0


def test_pdb_refusals_are_retried_until_accepted(fake_kube, clock):
    kube = cluster(fake_kube, [make_pod("serve", gpus=GPU, labels={"app": "serve"})])
    kube.failures["evict_pod:serve"] = [pdb_refusal("serve"), pdb_refusal("serve")]
    result = evacuate(kube, EvacuationRequest("gpu-node-1", timeout=60), check_mode=False)
    assert kube.count("evict_pod") == 3
    assert names(result["evicted"]) == ["serve"] and result["blocked"] == []
    assert clock.sleeps[:2] == [0.25, 0.5]


def test_pdb_refusal_until_the_deadline_fails_and_names_the_budget(fake_kube):
    serve = make_pod("serve", gpus=GPU, labels={"app": "serve"})
    kube = cluster(fake_kube, [make_pod("train", gpus=GPU), serve], pdbs=[pdb("serve-pdb", matchLabels={"app": "serve"})])
    kube.failures["evict_pod:serve"] = [pdb_refusal("serve-pdb")] * 1000
    with pytest.raises(K8sError) as raised:
        evacuate(kube, EvacuationRequest("gpu-node-1", timeout=30), check_mode=False)
    error = raised.value
    assert "could not evict 1 pod(s) from node gpu-node-1 within 30s" in error.msg
    assert "default/serve blocked by PodDisruptionBudget serve-pdb" in error.msg
    assert "The node was left as it is (taints and cordon unchanged)" in error.msg
    assert error.details["blocked"] == [{"namespace": "default", "name": "serve", "uid": "uid-default-serve", "pdbs": ["serve-pdb"],
                                         "message": "Cannot evict pod as it would violate the pod's disruption budget."}]
    assert names(error.details["evicted"]) == ["train"]
    assert names(error.details["remaining"]) == ["serve"]
    assert kube.count("patch_node") == 0 and kube.count("delete_pod") == 0
    # train was evicted exactly once although serve kept the loop going.
    assert sum(1 for call in kube.calls if call[:3] == ("evict_pod", "default", "train")) == 1


def test_force_deletes_only_after_the_eviction_deadline(fake_kube, clock):
    kube = cluster(fake_kube, [make_pod("serve", gpus=GPU)])
    kube.failures["evict_pod:serve"] = [pdb_refusal()] * 1000
    start = clock.now
    result = evacuate(kube, EvacuationRequest("gpu-node-1", timeout=20, force=True, force_reason="maintenance window"), check_mode=False)
    delete_index = next(i for i, call in enumerate(kube.calls) if call[0] == "delete_pod")
    assert all(call[0] != "evict_pod" for call in kube.calls[delete_index:])
    assert clock.now - start >= 20
    assert names(result["forced"]) == ["serve"] and names(result["blocked"]) == ["serve"]
    assert any("maintenance window" in warning for warning in result["warnings"])


def test_transient_errors_are_retried_and_a_lost_answer_is_not_evicted_twice(fake_kube):
    kube = cluster(fake_kube, [make_pod("a", gpus=GPU), make_pod("b", gpus=GPU)])
    kube.failures["evict_pod:a"] = [api_error(500, "boom", "InternalError")]

    # b's eviction is carried out but its answer is lost.
    def lost_answer(pod):
        del kube.pods[pod["metadata"]["uid"]]
        if pod["metadata"]["name"] == "b":
            raise ConnectionResetError("connection reset by peer")

    kube.on_evict = lost_answer
    result = evacuate(kube, EvacuationRequest("gpu-node-1"), check_mode=False)
    assert sorted(names(result["evicted"])) == ["a", "b"]
    assert sum(1 for call in kube.calls if call[:3] == ("evict_pod", "default", "b")) == 1
    assert sum(1 for call in kube.calls if call[:3] == ("evict_pod", "default", "a")) == 2


def test_permanent_errors_fail_at_once(fake_kube):
    kube = cluster(fake_kube, [make_pod("a", gpus=GPU)])
    kube.failures["evict_pod:a"] = [api_error(403, "evictions are forbidden", "Forbidden")]
    with pytest.raises(K8sError, match="evicting pod default/a failed: HTTP 403 Forbidden: evictions are forbidden"):
        evacuate(kube, EvacuationRequest("gpu-node-1"), check_mode=False)


def test_pods_that_do_not_go_away_fail_the_wait(fake_kube):
    kube = cluster(fake_kube, [make_pod("stuck", gpus=GPU)])
    kube.on_evict = lambda pod: pod["metadata"].update(deletionTimestamp="2024-01-01T00:00:00Z")
    with pytest.raises(K8sError, match="1 evicted pod\\(s\\) still on node gpu-node-1 after 15s: default/stuck") as raised:
        evacuate(kube, EvacuationRequest("gpu-node-1", wait_timeout=15), check_mode=False)
    assert names(raised.value.details["remaining"]) == ["stuck"]


def test_unfenced_node_gets_a_warning(fake_kube):
    kube = fake_kube(nodes=[make_node()], pods=[make_pod("a", gpus=GPU)])
    result = evacuate(kube, EvacuationRequest("gpu-node-1"), check_mode=False)
    assert "cordon it first with gpuops.nvidia.k8s_node_taint" in result["warnings"][0]


def test_missing_node_fails_before_touching_pods(fake_kube):
    kube = fake_kube(nodes=[], pods=[make_pod("a", gpus=GPU)])
    with pytest.raises(K8sError, match="node 'gpu-node-1' not found"):
        evacuate(kube, EvacuationRequest("gpu-node-1"), check_mode=False)
    assert kube.count("evict_pod") == 0
