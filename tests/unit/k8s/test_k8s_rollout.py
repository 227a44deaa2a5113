# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The batch steps of a rolling change (module_utils/k8s/rollout.py): what each step writes, and each
phase against an in-memory API, in check mode and for real."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s import rollout as r
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError

from k8s_unit_helpers import make_node, make_pod

TAINT = "gpuops.io/mig-reconfigure"
PLUGIN = "nvidia.com/gpu.deploy.device-plugin"
GFD = "nvidia.com/gpu.deploy.gpu-feature-discovery"
CLIENTS = ["device-plugin", "gpu-feature-discovery", "dcgm-exporter"]
PLAN = {"changing_devices": ["MIG-a"], "expected": {"allocatable": {"nvidia.com/mig-3g.20gb": "2"}, "labels": {}}}
DECISION = {"layout_changes": True, "advertised_current": True, "reboot": False}


def settings(**overrides):
    options = dict(gpu_clients=CLIENTS, gpu_clients_enable=["device-plugin", "gpu-feature-discovery"])
    options.update(overrides)
    return r.RolloutSettings(**options)


def held(*pods):
    """gpu_pod_devices' result: each (name, device) pair."""
    return {"available": True, "reason": None,
            "pods": [{"namespace": "default", "name": name, "devices": [device], "gpus": []} for name, device in pods]}


def entry(name, **extra):
    values = {"name": name, "plan": PLAN, "decision": DECISION, "config_name": "all-3g.20gb",
              "pod_devices": held(("on-a", "MIG-a"), ("on-b", "MIG-b"))}
    values.update(extra)
    return values


def mig_pod(name, node="gpu-node-1", **kwargs):
    return make_pod(name, node=node, gpus={"nvidia.com/mig-1g.5gb": "1"}, **kwargs)


def pdb(name, allowed, app):
    return {"metadata": {"name": name, "namespace": "default"}, "spec": {"selector": {"matchLabels": {"app": app}}},
            "status": {"disruptionsAllowed": allowed}}


def ready(pod):
    pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return pod


# --- what each step writes (pure) --------------------------------------------------------------

@pytest.mark.parametrize("setting, decision, scope", [
    ("changed", {"layout_changes": True}, "changed"),
    ("changed", {"layout_changes": False, "advertised_current": False}, "gpu"),
    ("changed", {"layout_changes": False, "advertised_current": True}, "changed"),
    ("gpu", {"layout_changes": True}, "gpu"),
    ("changed", {"layout_changes": True, "reboot": True}, "all"),
])
def test_the_scope_follows_the_setting_and_what_changes(setting, decision, scope):
    assert r.evacuation_scope(setting, decision) == scope


def test_no_evacuation_when_no_device_changes_and_the_map_goes_with_the_devices():
    assert r.evacuation("n", {"changing_devices": []}, DECISION, None, settings()) is None
    request = r.evacuation("n", PLAN, DECISION, None, settings())
    assert request["scope"] == "devices" and request["device_uuids"] == ["MIG-a"]
    assert request["pod_devices"]["available"] is False and "not read" in request["pod_devices"]["reason"]


def test_a_mode_change_may_reboot_only_when_reboots_are_allowed():
    mode = {"changing_devices": ["GPU-0", "MIG-a"]}
    assert r.may_reboot(mode, {}, True) and not r.may_reboot(mode, {}, False)
    assert not r.may_reboot(PLAN, {}, True)
    assert r.may_reboot(PLAN, {"reboot": True}, False)


deploy_values = st.sampled_from([None, "true", "false", r.PAUSED])


@given(st.dictionaries(st.sampled_from(CLIENTS + ["nvsm"]), deploy_values))
def test_resuming_restores_exactly_what_pausing_paused_and_never_a_client_switched_off(state):
    labels = {r.DEPLOY_LABEL_PREFIX + client: value for client, value in state.items() if value is not None}
    node = {"metadata": {"labels": labels}}
    paused = r.pause_labels(node, CLIENTS)
    assert set(paused) == {key for key, value in labels.items() if value == "true" and key[len(r.DEPLOY_LABEL_PREFIX):] in CLIENTS}
    after = {"metadata": {"labels": dict(labels, **paused)}}
    resumed = r.resume_labels(after)
    # Every client paused now or by an interrupted run comes back; none labelled "false" is touched.
    assert set(resumed) == {key for key, value in after["metadata"]["labels"].items() if value == r.PAUSED}
    assert all(value == "true" for value in resumed.values())
    first_install = r.resume_labels(after, ["device-plugin"], "nvidia.com/device-plugin.config", "mixed")
    assert first_install["nvidia.com/device-plugin.config"] == "mixed"
    assert (PLUGIN in first_install) == (labels.get(PLUGIN) in (None, "true", r.PAUSED))


def test_begin_and_finish_write_state_taint_and_cordon_by_the_record():
    begin = r.node_write(r.begin_change("all-3g.20gb", settings(cordon=True)))
    node = make_node(labels={PLUGIN: "true"}, unschedulable=True)
    patch = begin(node)
    assert patch["spec"]["taints"] == [{"key": TAINT, "value": "all-3g.20gb", "effect": "NoSchedule"}]
    assert patch["metadata"]["labels"] == {r.STATE_LABEL: "pending", r.CONFIG_LABEL: "all-3g.20gb"}
    assert patch["metadata"]["annotations"][r.CORDON_RECORD] == "true"
    finish = r.node_write(r.finish_change("all-3g.20gb", settings()))
    fenced = make_node(taints=[{"key": TAINT, "value": "x", "effect": "NoSchedule"}, {"key": "site/own", "effect": "NoSchedule"}],
                       unschedulable=True)
    fenced["metadata"]["annotations"] = {r.CORDON_RECORD: "true"}
    patch = finish(fenced)
    # Someone else's cordon and taint stay; the record goes.
    assert "unschedulable" not in patch["spec"] and patch["spec"]["taints"] == [{"key": "site/own", "effect": "NoSchedule"}]
    assert patch["metadata"]["annotations"] == {r.CORDON_RECORD: None}
    fenced["metadata"]["annotations"] = {r.CORDON_RECORD: "false"}
    assert finish(fenced)["spec"]["unschedulable"] is False


def test_bad_settings_are_refused_naming_the_field():
    with pytest.raises(K8sError, match="evacuate_scope"):
        r.RolloutSettings(evacuate_scope="some")
    with pytest.raises(K8sError, match="wait_timeout"):
        r.RolloutSettings(wait_timeout=-1)
    with pytest.raises(K8sError, match="phase"):
        r.run_phase(None, "drain", [], settings(), False)


# --- the phases against an in-memory API -------------------------------------------------------

def cluster(fake_kube, blocked_on_second=False):
    nodes = [make_node("gpu-node-1", labels={PLUGIN: "true", GFD: "false"}), make_node("gpu-node-2", labels={PLUGIN: "true"})]
    pods = [mig_pod("on-a", labels={"app": "a"}), mig_pod("on-b", labels={"app": "b"}), make_pod("web"),
            ready(mig_pod("held", node="gpu-node-2", labels={"app": "held"}))]
    pdbs = [pdb("held", 0 if blocked_on_second else 1, "held")]
    return fake_kube(nodes=nodes, pods=pods, pdbs=pdbs)


def test_fence_takes_each_node_as_far_as_it_goes_and_a_failure_stops_only_its_node(fake_kube):
    kube = cluster(fake_kube, blocked_on_second=True)
    second = entry("gpu-node-2", pod_devices=held(("held", "MIG-a")))
    results = r.fence(kube, [entry("gpu-node-1"), second], settings(), check_mode=False)
    first = results["gpu-node-1"]
    assert not first["failed"] and first["step"] is None
    assert [pod["name"] for pod in first["evicted"]] == ["on-a"] and first["would_evict"] == []
    assert first["paused"] == [PLUGIN]
    node = kube.nodes["gpu-node-1"]
    assert node["metadata"]["labels"][PLUGIN] == r.PAUSED and node["metadata"]["labels"][GFD] == "false"
    assert node["metadata"]["labels"][r.STATE_LABEL] == "pending" and node["spec"]["taints"][0]["key"] == TAINT
    assert first["diff"]["before"]["taints"] == [] and first["diff"]["after"]["labels"][PLUGIN] == r.PAUSED
    # The second node is fenced, nothing is evicted from it, its clients are not paused.
    failed = results["gpu-node-2"]
    assert failed["failed"] and failed["step"] == r.EVACUATE
    assert failed["msg"].startswith(r.EVACUATE + ": ") and "held" in failed["msg"]
    assert kube.nodes["gpu-node-2"]["metadata"]["labels"][PLUGIN] == "true"
    assert {pod["metadata"]["name"] for pod in kube.pods.values()} == {"on-b", "web", "held"}


def test_fence_in_check_mode_writes_nothing_and_lists_what_it_would_evict(fake_kube):
    kube = cluster(fake_kube)
    results = r.fence(kube, [entry("gpu-node-1"), entry("gpu-node-2", pod_devices=held(("held", "MIG-a")))], settings(),
                      check_mode=True)
    assert kube.count("patch_node") == 0 and kube.count("evict_pod") == 0
    first = results["gpu-node-1"]
    assert first["evicted"] == [] and [pod["name"] for pod in first["would_evict"]] == ["on-a"]
    assert first["changed"] and first["paused"] == [PLUGIN]
    # The predicted writes build on each other: pending, tainted, then paused.
    after = first["diff"]["after"]
    assert after["labels"][r.STATE_LABEL] == "pending" and after["labels"][PLUGIN] == r.PAUSED
    assert not first["warnings"]
    assert [pod["name"] for pod in results["gpu-node-2"]["would_evict"]] == ["held"]
    assert "would_evict_before_reboot" not in first


def test_check_mode_fails_a_node_only_where_the_real_run_would(fake_kube):
    kube = cluster(fake_kube, blocked_on_second=True)
    results = r.fence(kube, [entry("gpu-node-1"), entry("gpu-node-2", pod_devices=held(("held", "MIG-a")))], settings(),
                      check_mode=True)
    assert not results["gpu-node-1"]["failed"]
    assert results["gpu-node-2"]["failed"] and results["gpu-node-2"]["step"] == r.EVACUATE
    assert "PodDisruptionBudget held" in results["gpu-node-2"]["msg"]
    assert kube.count("patch_node") == 0 and kube.count("evict_pod") == 0


def test_check_mode_lists_the_drain_before_a_reboot_a_mode_change_may_need(fake_kube):
    kube = cluster(fake_kube)
    plan = dict(PLAN, changing_devices=["GPU-0", "MIG-a"])
    results = r.fence(kube, [entry("gpu-node-1", plan=plan)], settings(reboot_allowed=True), check_mode=True)
    result = results["gpu-node-1"]
    assert [pod["name"] for pod in result["would_evict"]] == ["on-a"]
    assert sorted(pod["name"] for pod in result["would_evict_before_reboot"]) == ["on-b", "web"]
    assert all("reboot" in pod["reason"] for pod in result["would_evict_before_reboot"])
    assert kube.count("evict_pod") == 0


def test_release_resumes_waits_and_finishes_keeping_someone_elses_cordon(fake_kube):
    kube = cluster(fake_kube)
    r.fence(kube, [entry("gpu-node-1")], settings(cordon=True), check_mode=False)
    kube.nodes["gpu-node-1"]["status"]["allocatable"] = {"nvidia.com/mig-3g.20gb": "2"}
    # Someone else's node: cordoned before the rollout fenced it.
    other = kube.nodes["gpu-node-2"]
    other["spec"]["unschedulable"] = True
    r.fence(kube, [entry("gpu-node-2", pod_devices=held())], settings(cordon=True), check_mode=False)
    kube.nodes["gpu-node-2"]["status"]["allocatable"] = {"nvidia.com/mig-3g.20gb": "2"}
    results = r.release(kube, [entry("gpu-node-1", plugin_config="mixed"), entry("gpu-node-2")], settings(), check_mode=False)
    assert not any(result["failed"] for result in results.values()), results
    node = kube.nodes["gpu-node-1"]
    labels = node["metadata"]["labels"]
    assert labels[PLUGIN] == "true" and labels[GFD] == "false" and labels["nvidia.com/device-plugin.config"] == "mixed"
    assert labels[r.STATE_LABEL] == "success" and not node["spec"].get("taints") and node["spec"]["unschedulable"] is False
    assert r.CORDON_RECORD not in node["metadata"]["annotations"]
    assert kube.nodes["gpu-node-2"]["spec"]["unschedulable"] is True
    assert results["gpu-node-1"]["resumed"] == [PLUGIN]


def test_release_fails_a_node_that_does_not_advertise_its_plan_and_finishes_the_others(fake_kube, clock):
    kube = cluster(fake_kube)
    r.fence(kube, [entry("gpu-node-1"), entry("gpu-node-2", pod_devices=held())], settings(), check_mode=False)
    kube.nodes["gpu-node-1"]["status"]["allocatable"] = {"nvidia.com/mig-3g.20gb": "2"}
    results = r.release(kube, [entry("gpu-node-1"), entry("gpu-node-2")], settings(wait_timeout=5), check_mode=False)
    assert not results["gpu-node-1"]["failed"]
    assert results["gpu-node-2"]["failed"] and results["gpu-node-2"]["step"] == r.WAIT
    stuck = kube.nodes["gpu-node-2"]
    assert stuck["spec"]["taints"][0]["key"] == TAINT and stuck["metadata"]["labels"][r.STATE_LABEL] == "pending"
    # Its clients were resumed before the wait: they publish what the node advertises.
    assert stuck["metadata"]["labels"][PLUGIN] == "true"


def test_release_in_check_mode_predicts_the_writes_and_waits_for_nothing(fake_kube):
    kube = cluster(fake_kube)
    r.fence(kube, [entry("gpu-node-1")], settings(), check_mode=False)
    patches = kube.count("patch_node")
    results = r.release(kube, [entry("gpu-node-1")], settings(), check_mode=True)
    assert kube.count("patch_node") == patches and kube.count("watch") == 0
    after = results["gpu-node-1"]["diff"]["after"]
    assert after["labels"][r.STATE_LABEL] == "success" and after["taints"] == [] and after["labels"][PLUGIN] == "true"


def test_fail_resumes_the_paused_clients_and_marks_the_node_failed_in_one_write(fake_kube):
    kube = cluster(fake_kube)
    r.fence(kube, [entry("gpu-node-1")], settings(), check_mode=False)
    patches = kube.count("patch_node")
    results = r.fail(kube, [{"name": "gpu-node-1", "reason": "apply: NVML refused"}], settings(), check_mode=False)
    assert not results["gpu-node-1"]["failed"] and kube.count("patch_node") == patches + 1
    node = kube.nodes["gpu-node-1"]
    assert node["metadata"]["labels"][PLUGIN] == "true" and node["metadata"]["labels"][r.STATE_LABEL] == "failed"
    assert node["metadata"]["annotations"][r.MESSAGE_ANNOTATION] == "apply: NVML refused"
    assert node["spec"]["taints"][0]["key"] == TAINT


# --- the unavailability budget -----------------------------------------------------------------

def fleet_with_one_cordoned(fake_kube):
    kube = cluster(fake_kube)
    kube.nodes["gpu-node-3"] = make_node("gpu-node-3", unschedulable=True)
    return kube


def test_the_budget_shrinks_the_batch_to_what_it_allows_counting_nodes_already_out(fake_kube):
    kube = fleet_with_one_cordoned(fake_kube)
    fleet = ["gpu-node-1", "gpu-node-2", "gpu-node-3"]
    results = r.fence(kube, [entry("gpu-node-1"), entry("gpu-node-2", pod_devices=held())],
                      settings(max_unavailable=2, fleet=fleet), check_mode=False)
    assert not results["gpu-node-1"]["failed"] and kube.nodes["gpu-node-1"]["spec"]["taints"][0]["key"] == TAINT
    deferred = results["gpu-node-2"]
    assert deferred["deferred"] and not deferred["failed"] and "gpu-node-3 (cordoned)" in deferred["msg"]
    # Nothing was done to the deferred node.
    assert not kube.nodes["gpu-node-2"]["spec"].get("taints") and r.STATE_LABEL not in kube.nodes["gpu-node-2"]["metadata"]["labels"]


def test_the_budget_waits_bounded_then_fails_the_batch_saying_why(fake_kube, clock):
    kube = fleet_with_one_cordoned(fake_kube)
    fleet = ["gpu-node-1", "gpu-node-2", "gpu-node-3"]
    results = r.fence(kube, [entry("gpu-node-1")], settings(max_unavailable="33%", fleet=fleet, unavailable_timeout=30),
                      check_mode=False)
    failed = results["gpu-node-1"]
    assert failed["failed"] and failed["step"] == r.BUDGET and "allows 2" not in failed["msg"]
    assert "max_unavailable allows 1 GPU node(s)" in failed["msg"] and "waited 30s" in failed["msg"]
    assert kube.count("patch_node") == 0
    # In check mode the node that would wait is reported deferred, without waiting.
    kube.calls.clear()
    checked = r.fence(kube, [entry("gpu-node-1")], settings(max_unavailable=1, fleet=fleet), check_mode=True)
    assert checked["gpu-node-1"]["deferred"] and not checked["gpu-node-1"]["failed"] and kube.count("watch") == 0


def test_a_budget_without_the_fleet_or_with_a_bad_value_is_refused():
    with pytest.raises(K8sError, match="fleet"):
        settings(max_unavailable=1)
    with pytest.raises(K8sError, match="max_unavailable"):
        settings(max_unavailable="0%", fleet=["a"])
