# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Waiting for jobs before the eviction (module_utils/k8s/jobs.py) and the validation pod before the
release (module_utils/k8s/validation.py): the pure parts, and the fence and release phases that use
them, against an in-memory API."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s import jobs as j
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s import rollout as r
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s import validation as v
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError

from k8s_unit_helpers import make_node, make_pod

TAINT = "gpuops.io/mig-reconfigure"
PLUGIN = "nvidia.com/gpu.deploy.device-plugin"
PLAN = {"changing_devices": ["MIG-a"],
        "expected": {"allocatable": {"nvidia.com/mig-3g.20gb": "2", "nvidia.com/mig-1g.5gb": "0", "cpu": "8"}, "labels": {}}}
DECISION = {"layout_changes": True, "advertised_current": True, "reboot": False}
NODES = ("gpu-node-1", "gpu-node-2")


def settings(**overrides):
    options = dict(gpu_clients=["device-plugin"], gpu_clients_enable=["device-plugin"])
    options.update(overrides)
    return r.RolloutSettings(**options)


def entry(name, **extra):
    values = {"name": name, "plan": PLAN, "decision": DECISION, "config_name": "all-3g.20gb",
              "pod_devices": {"available": True, "reason": None,
                              "pods": [{"namespace": "default", "name": "train-" + name[-1], "devices": ["MIG-a"], "gpus": []}]}}
    values.update(extra)
    return values


def job(name, node, phase="Running"):
    pod = make_pod(name, node=node, gpus={"nvidia.com/mig-1g.5gb": "1"}, labels={"app": "training"}, owner_kind="Job", phase=phase)
    return pod


def cluster(fake_kube, pods=()):
    nodes = [make_node(name, labels={PLUGIN: "true"}, allocatable=PLAN["expected"]["allocatable"]) for name in NODES]
    return fake_kube(nodes=nodes, pods=list(pods))


def modified(pod, phase):
    changed = copy.deepcopy(pod)
    changed["status"]["phase"] = phase
    return {"type": "MODIFIED", "object": changed}


# --- pure ----------------------------------------------------------------------------------------

PHASES = st.sampled_from(["Pending", "Running", "Succeeded", "Failed", "Unknown"])


@given(st.lists(st.tuples(st.sampled_from(NODES + ("cpu-node",)), PHASES), max_size=12))
def test_unfinished_jobs_are_those_on_the_nodes_that_have_not_ended(placements):
    pods = [job("job-{0}".format(i), node, phase) for i, (node, phase) in enumerate(placements)]
    found = j.unfinished_jobs(pods, NODES)
    assert set(found) == set(NODES)
    for node in NODES:
        wanted = sorted("default/job-{0}".format(i) for i, (on, phase) in enumerate(placements)
                        if on == node and phase not in ("Succeeded", "Failed"))
        assert found[node] == wanted


def test_a_timeout_of_0_waits_for_ever_and_a_negative_one_is_refused():
    assert j.jobs_deadline_seconds(0) == math.inf and j.jobs_deadline_seconds(30) == 30
    with pytest.raises(K8sError, match="wait_for_jobs_timeout: .* -1"):
        settings(wait_for_jobs_timeout=-1)
    assert settings(wait_for_jobs_selector="  ").wait_for_jobs_selector is None


@given(st.dictionaries(st.sampled_from(["nvidia.com/gpu", "nvidia.com/mig-1g.5gb", "nvidia.com/mig-3g.20gb.shared",
                                        "cpu", "memory", "example.com/fpga"]),
                       st.one_of(st.integers(-1, 16).map(str), st.just("16Gi"))))
def test_the_validation_pod_asks_for_one_of_each_nvidia_resource_advertised(allocatable):
    wanted = v.validation_resources(allocatable)
    assert all(value == "1" for value in wanted.values())
    assert set(wanted) == {name for name, count in allocatable.items()
                           if name.startswith("nvidia.com/") and count.lstrip("-").isdigit() and int(count) > 0}


def test_the_validation_pod_is_pinned_tolerates_the_taint_and_ends_on_its_own():
    pod = v.validation_pod("gpu-node-1", {"nvidia.com/gpu": "1"}, v.ValidationSettings(True, namespace="gpu-checks", timeout=90), TAINT)
    spec = pod["spec"]
    assert pod["metadata"]["name"] == "gpuops-validate-gpu-node-1" and pod["metadata"]["namespace"] == "gpu-checks"
    assert spec["nodeName"] == "gpu-node-1" and spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] == 90
    assert spec["tolerations"] == [{"key": TAINT, "operator": "Exists"}]
    container = spec["containers"][0]
    assert container["command"] == ["nvidia-smi", "-L"] and container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert container["image"].startswith("nvcr.io/nvidia/cuda:")


@pytest.mark.parametrize("field, options", [
    ("validation_image", {"image": " "}),
    ("validation_command", {"command": []}),
    ("validation_namespace", {"namespace": ""}),
    ("validation_timeout", {"timeout": 0}),
])
def test_bad_validation_settings_are_refused_naming_the_field(field, options):
    with pytest.raises(K8sError, match=field):
        v.ValidationSettings(True, **options)
    v.ValidationSettings(False, **options)  # not used, not checked


def test_the_outcome_of_a_failed_pod_names_its_reason_exit_code_and_output():
    pod = {"status": {"phase": "Failed", "containerStatuses": [{"name": "validate", "state": {"terminated": {
        "exitCode": 15, "reason": "Error", "message": "Unable to determine the device handle for MIG-x: GPU is lost"}}}]}}
    phase, why = v.pod_outcome(pod)
    assert phase == "Failed" and "exited 15 (Error)" in why and "GPU is lost" in why
    assert v.pod_outcome(None)[0] == "Missing"
    assert v.pod_outcome({"status": {"phase": "Failed", "reason": "DeadlineExceeded"}}) == ("Failed", "reason DeadlineExceeded")


# --- fence: wait for jobs, then evict -----------------------------------------------------------

def test_fence_waits_for_the_jobs_in_one_watch_for_the_batch_then_evicts_the_rest(fake_kube):
    first, second = job("train-1", "gpu-node-1"), job("train-2", "gpu-node-2")
    kube = cluster(fake_kube, [first, second])
    # The first job ends while the fence waits; the second ends later in the same watch.
    kube.watch_events = [[modified(first, "Succeeded"), modified(second, "Failed")]]
    results = r.fence(kube, [entry(name) for name in NODES], settings(wait_for_jobs_selector="app=training"), check_mode=False)
    assert results["gpu-node-1"]["waited_for_jobs"] == ["default/train-1"]
    assert results["gpu-node-2"]["waited_for_jobs"] == ["default/train-2"]
    assert not any(result["failed"] or result.get("jobs_left") for result in results.values())
    # One list and one watch of the selected pods for both nodes, not a request per pod or node.
    job_lists = [call for call in kube.calls if call[0] == "list_pods" and call[2] == "app=training"]
    assert len(job_lists) == 1 and kube.count("watch") == 1


def test_past_the_timeout_the_jobs_still_running_are_evicted(fake_kube, clock):
    kube = cluster(fake_kube, [job("train-1", "gpu-node-1")])
    started = clock.now
    results = r.fence(kube, [entry("gpu-node-1")], settings(wait_for_jobs_selector="app=training", wait_for_jobs_timeout=30),
                      check_mode=False)
    result = results["gpu-node-1"]
    assert not result["failed"] and result["jobs_left"] == ["default/train-1"]
    assert any("still running after 30s" in warning for warning in result["warnings"])
    assert [pod["name"] for pod in result["evicted"]] == ["train-1"]
    assert 30 <= clock.now - started < 60


def test_fence_in_check_mode_lists_the_jobs_it_would_wait_for_and_waits_for_none(fake_kube, clock):
    kube = cluster(fake_kube, [job("train-1", "gpu-node-1"), job("done", "gpu-node-1", phase="Succeeded")])
    started = clock.now
    results = r.fence(kube, [entry("gpu-node-1")], settings(wait_for_jobs_selector="app=training"), check_mode=True)
    result = results["gpu-node-1"]
    assert result["would_wait_for_jobs"] == ["default/train-1"] and "waited_for_jobs" not in result
    assert "jobs_left" not in result and kube.count("watch") == 0 and clock.now == started
    assert kube.count("patch_node") == 0 and kube.count("evict_pod") == 0


def test_without_a_selector_nothing_is_waited_for(fake_kube):
    kube = cluster(fake_kube, [job("train-1", "gpu-node-1")])
    results = r.fence(kube, [entry("gpu-node-1")], settings(), check_mode=False)
    assert "waited_for_jobs" not in results["gpu-node-1"]
    assert not [call for call in kube.calls if call[0] == "list_pods" and call[2]]


# --- release: validate, then let pods back -------------------------------------------------------

def kubelet(outcomes):
    """A kubelet that ends each validation pod as ``outcomes`` says for its node (default Succeeded)."""
    def run(pod):
        node = pod["spec"]["nodeName"]
        phase, code = outcomes.get(node, ("Succeeded", 0))
        pod["status"] = {"phase": phase, "containerStatuses": [{"name": "validate", "state": {"terminated": {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error",
            "message": "" if code == 0 else "Unable to determine the device handle: GPU is lost"}}}]}
    return run


def fenced(kube, names=NODES):
    r.fence(kube, [entry(name) for name in names], settings(), check_mode=False)


def test_release_validates_each_node_before_removing_the_taint_and_deletes_the_pods(fake_kube):
    kube = cluster(fake_kube)
    fenced(kube)
    kube.on_create = kubelet({})
    results = r.release(kube, [entry(name) for name in NODES], settings(validation=True, validation_namespace="gpu-checks"),
                        check_mode=False)
    for name in NODES:
        result = results[name]
        assert not result["failed"], result
        assert result["validation"]["passed"] and result["validation"]["phase"] == "Succeeded"
        assert result["validation"]["resources"] == {"nvidia.com/mig-3g.20gb": "1"}
        assert not kube.nodes[name]["spec"].get("taints")
    created = [call[2] for call in kube.calls if call[0] == "create_pod"]
    assert sorted(pod["spec"]["nodeName"] for pod in created) == list(NODES)
    assert all(call[1] == "gpu-checks" for call in kube.calls if call[0] == "create_pod")
    assert not [pod for pod in kube.pods.values() if v.VALIDATION_LABEL in pod["metadata"]["labels"]]


def test_a_failed_validation_keeps_its_node_fenced_and_the_others_are_released(fake_kube):
    kube = cluster(fake_kube)
    fenced(kube)
    kube.on_create = kubelet({"gpu-node-2": ("Failed", 15)})
    results = r.release(kube, [entry(name) for name in NODES], settings(validation=True), check_mode=False)
    assert not results["gpu-node-1"]["failed"] and not kube.nodes["gpu-node-1"]["spec"].get("taints")
    failed = results["gpu-node-2"]
    assert failed["failed"] and failed["step"] == r.VALIDATE
    assert "default/gpuops-validate-gpu-node-2 Failed" in failed["msg"] and "exited 15" in failed["msg"]
    assert "GPU is lost" in failed["msg"]
    node = kube.nodes["gpu-node-2"]
    assert node["spec"]["taints"][0]["key"] == TAINT and node["metadata"]["labels"][r.STATE_LABEL] == "pending"
    # Deleted either way: the outcome is in the message.
    assert not [pod for pod in kube.pods.values() if v.VALIDATION_LABEL in pod["metadata"]["labels"]]


def test_a_validation_pod_that_does_not_end_fails_its_node_at_the_timeout(fake_kube, clock):
    kube = cluster(fake_kube)
    fenced(kube, ["gpu-node-1"])
    results = r.release(kube, [entry("gpu-node-1")], settings(validation=True, validation_timeout=40), check_mode=False)
    result = results["gpu-node-1"]
    assert result["failed"] and result["step"] == r.VALIDATE and "Pending after 40s" in result["msg"]
    assert kube.nodes["gpu-node-1"]["spec"]["taints"][0]["key"] == TAINT
    assert not kube.pods or not [pod for pod in kube.pods.values() if v.VALIDATION_LABEL in pod["metadata"]["labels"]]


def test_a_pod_left_by_an_interrupted_run_is_replaced(fake_kube):
    kube = cluster(fake_kube)
    fenced(kube, ["gpu-node-1"])
    stale = v.validation_pod("gpu-node-1", {"nvidia.com/gpu": "1"}, v.ValidationSettings(True), TAINT)
    stale["metadata"]["uid"] = "stale"
    stale["status"] = {"phase": "Failed"}
    kube.pods["stale"] = stale
    kube.on_create = kubelet({})
    results = r.release(kube, [entry("gpu-node-1")], settings(validation=True), check_mode=False)
    assert not results["gpu-node-1"]["failed"], results
    assert results["gpu-node-1"]["validation"]["resources"] == {"nvidia.com/mig-3g.20gb": "1"}


def test_release_in_check_mode_names_the_pod_it_would_run_and_creates_none(fake_kube):
    kube = cluster(fake_kube)
    fenced(kube, ["gpu-node-1"])
    results = r.release(kube, [entry("gpu-node-1")], settings(validation=True), check_mode=True)
    result = results["gpu-node-1"]
    assert not result["failed"] and kube.count("create_pod") == 0 and "validation" not in result
    assert result["would_validate"]["pod"] == "default/gpuops-validate-gpu-node-1"
    assert result["would_validate"]["resources"] == {"nvidia.com/mig-3g.20gb": "1"}
