"""The rollout's filters: plan × node state → what to evict, pause, resume and wait for."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ansible.errors import AnsibleFilterError

from ansible_collections.gpuops.nvidia.plugins.callback.mig_rollout import batch_sizes, summary_lines
from ansible_collections.gpuops.nvidia.plugins.filter import mig as f
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.node_plan import desired_layout


def gpu(index, instances=(), enabled=True):
    return {
        "index": index,
        "uuid": "GPU-%d" % index,
        "name": "NVIDIA A100-SXM4-40GB",
        "mig": {"capable": True, "current": enabled, "pending": enabled, "instances": list(instances), "profiles": []},
    }


def gi(gi_id, profile, *device_uuids):
    return {"gi_id": gi_id, "profile": profile, "devices": [{"uuid": u, "ci_id": 0} for u in device_uuids]}


def gpu_plan(index, changed=True, mode_change=False, destroy=(), layout=None, enabled=True):
    return {
        "index": index,
        "uuid": "GPU-%d" % index,
        "targeted": True,
        "changed": changed,
        "mode_change": mode_change,
        "set_mode": None,
        "destroy": [{"gi_id": g} for g in destroy],
        "after": {"mig_enabled": enabled, "layout": layout or {}},
    }


def test_desired_layout_takes_counts_from_the_plan_after_state():
    plan = {"gpus": [gpu_plan(0, layout={"1g.5gb": {"count": 7, "placements": []}}),
                     dict(gpu_plan(1), targeted=False)]}
    assert desired_layout(plan) == {0: {"mig_enabled": True, "devices": {"1g.5gb": 7}}}


def test_changing_devices_are_only_the_destroyed_instances():
    gpus = [gpu(0, [gi(1, "3g.20gb", "MIG-a"), gi(2, "3g.20gb", "MIG-b")]), gpu(1, [gi(1, "7g.40gb", "MIG-c")])]
    plan = {"gpus": [gpu_plan(0, destroy=[2]), gpu_plan(1, changed=False)]}
    assert f.mig_changing_devices(gpus, plan) == ["MIG-b"]


def test_a_mode_change_moves_everything_on_that_gpu():
    gpus = [gpu(0, [gi(1, "7g.40gb", "MIG-a")])]
    plan = {"gpus": [gpu_plan(0, mode_change=True, enabled=False)]}
    assert f.mig_changing_devices(gpus, plan) == ["GPU-0", "MIG-a"]


def test_node_plan_keeps_what_the_rollout_needs_and_no_reading():
    gpus = [gpu(0, [gi(1, "3g.20gb", "MIG-a"), gi(2, "3g.20gb", "MIG-b")]), gpu(1, [gi(1, "7g.40gb", "MIG-c")])]
    plan = {"gpus": [gpu_plan(0, destroy=[2], layout={"3g.20gb": {"count": 1, "placements": []},
                                                      "2g.10gb": {"count": 1, "placements": []}}),
                     gpu_plan(1, changed=False, layout={"7g.40gb": {"count": 1, "placements": []}})]}
    result = {"changed": True, "config": {"version": "v1"}, "boot_record": {"config_name": "old"}, "plan": plan,
              "observed": {"driver_version": "550.54.15", "gpus": gpus}}
    kept = f.mig_node_plan(result, strategy="mixed", node="n1")
    assert kept == {
        "driver_version": "550.54.15",
        "gpu_count": 2,
        "changed": True,
        "config": {"version": "v1"},
        "boot_record": {"config_name": "old"},
        "before": "2x3g.20gb on GPU 0, 1x7g.40gb on GPU 1",
        "after": "1x2g.10gb+1x3g.20gb on GPU 0, 1x7g.40gb on GPU 1",
        "expected": f.mig_expected_resources(gpus, plan, "mixed", node="n1"),
        "changing_devices": ["MIG-b"],
        "nvml_unavailable": "",
    }
    # What mig_config read with the record is kept too: the last boot-time apply, the files' digests,
    # whether the unit is enabled.
    status = {"result": "failed", "reason": "GPU 0: create failed", "exit_code": 1}
    read = dict(result, boot_status=status, boot_files=["ab" * 32, None], boot_unit_enabled=False)
    assert f.mig_node_plan(read, strategy="mixed", node="n1") == dict(
        kept, boot_status=status, boot_files=["ab" * 32, None], boot_unit_enabled=False)


def test_node_plan_of_a_node_without_config_or_driver():
    kept = f.mig_node_plan({"observed": {"gpus": []}})
    assert kept["gpu_count"] == 0 and kept["driver_version"] == "" and kept["changed"] is False
    assert kept["config"] is None and kept["boot_record"] is None and kept["changing_devices"] == []
    assert kept["before"] == kept["after"] == "no GPUs"
    assert kept["nvml_unavailable"] == ""


def test_node_plan_keeps_why_nvml_could_not_be_opened():
    reason = "NVML is not available: Driver Not Loaded"
    # From gpu_info (no config) and from mig_config's driver_missing=report.
    assert f.mig_node_plan({"observed": {"gpus": [], "nvml_unavailable": reason}})["nvml_unavailable"] == reason
    assert f.mig_node_plan({"observed": {"gpus": []}, "nvml_unavailable": reason, "changed": False})["nvml_unavailable"] == reason


def test_advertised_diff_compares_resources_and_labels():
    node = {"metadata": {"labels": {"nvidia.com/mig.strategy": "mixed"}},
            "status": {"allocatable": {"nvidia.com/mig-1g.5gb": "7", "nvidia.com/mig-3g.20gb": "2", "cpu": "8"}}}
    expected = {"allocatable": {"nvidia.com/mig-1g.5gb": 7}, "labels": {"nvidia.com/mig.strategy": "mixed"}}
    assert f.mig_advertised_diff(node, expected) == ["allocatable nvidia.com/mig-3g.20gb is 2, expected 0"]


@pytest.mark.parametrize("replicas", [-1, "x"])
def test_bad_time_slicing_replicas_are_refused(replicas):
    with pytest.raises(AnsibleFilterError, match="replicas"):
        f.mig_expected_resources([], strategy="none", time_slicing_replicas=replicas)


@pytest.mark.parametrize("serial,total,sizes", [
    (1, 3, [1, 1, 1]),
    ("50%", 4, [2, 2]),
    ([1, 5, "25%"], 20, [1, 5, 5, 5, 4]),
    ([], 2, [2]),
])
def test_batch_sizes_follow_ansible_serial(serial, total, sizes):
    assert batch_sizes(serial, total) == sizes


def test_summary_names_failed_nodes_and_why():
    lines = summary_lines(
        {"a": {"node": "gpu-1", "before": "x", "after": "y", "evicted": ["p"], "seconds": 2, "result": "success"}},
        {"b": "PDB blocked eviction"},
    )
    assert lines == ["gpu-1: x -> y; 1 pod(s) evicted; 2.0s; success", "b: ? -> ?; 0 pod(s) evicted; -; failed: PDB blocked eviction"]


def test_summary_says_why_a_node_was_skipped():
    skipped = {"host": "c", "node": "gpu-3", "before": "x", "after": "x", "evicted": [], "result": "skipped",
               "message": "node gpu-3 is labelled gpuops.io/mig-reconfigure.skip=true: left out of the rollout"}
    assert summary_lines({"c": skipped}, {}) == [
        "gpu-3: x -> x; 0 pod(s) evicted; -; skipped: node gpu-3 is labelled gpuops.io/mig-reconfigure.skip=true: "
        "left out of the rollout"]


def test_summary_says_when_the_device_map_was_unavailable_and_lists_the_pods():
    pods = [{"namespace": "ml", "name": "a", "reason": "requests nvidia.com/gpu; ... socket /s does not exist"},
            {"namespace": "ml", "name": "b", "reason": "requests nvidia.com/gpu; ... socket /s does not exist"}]
    report = {"node": "gpu-1", "before": "x", "after": "y", "evicted": pods, "seconds": 2, "result": "success",
              "device_map": {"available": False, "reason": "socket /s does not exist"}}
    assert summary_lines({"a": report}, {}) == [
        "gpu-1: x -> y; 2 pod(s) evicted; 2.0s; success; which pod holds which device was unknown, so every GPU pod "
        "of the node was a target: socket /s does not exist",
        "  evicted ml/a: its devices are unknown",
        "  evicted ml/b: its devices are unknown",
    ]


def test_summary_in_check_mode_lists_the_pods_each_node_would_lose_and_why():
    report = {"node": "gpu-1", "before": "x", "after": "y", "seconds": 1, "result": "success", "evicted": [],
              "would_evict": [{"namespace": "ml", "name": "a", "reason": "uses MIG-1"}],
              "device_map": {"available": True, "reason": None}}
    assert summary_lines({"a": report}, {}, check_mode=True) == [
        "gpu-1: x -> y; 1 pod(s) to evict; 1.0s; success", "  would evict ml/a: uses MIG-1"]


def node_object(labels=None, taints=None, allocatable=None):
    return {"metadata": {"name": "n1", "labels": labels or {}}, "spec": {"taints": taints or []},
            "status": {"allocatable": allocatable or {}}}


def test_node_decision_of_a_converged_node_needs_nothing():
    plan = {"changed": False, "expected": {"allocatable": {"nvidia.com/mig-1g.5gb": 7}, "labels": {"nvidia.com/mig.strategy": "mixed"}}}
    node = node_object(
        labels={"nvidia.com/gpu.deploy.device-plugin": "true", "nvidia.com/mig.strategy": "mixed",
                "nvidia.com/mig.config": "all-1g.5gb", "nvidia.com/mig.config.state": "success"},
        allocatable={"nvidia.com/mig-1g.5gb": "7", "cpu": "8"})
    assert f.mig_node_decision(node, plan, "all-1g.5gb") == {
        "layout_changes": False, "advertised_diff": [], "advertised_current": True, "tainted": False,
        "labels_current": True, "reboot": False, "disruptive": False, "plan_after_driver": False, "driver_upgrade": None,
        "driver_by_rollout": False, "refusal": "",
        "skipped": False}
    # A driver installed earlier in the run waits for the rollout's reboot: the node goes through a change.
    pending = f.mig_node_decision(node, plan, "all-1g.5gb", reboot_pending=True)
    assert pending["reboot"] is True and pending["disruptive"] is True
    # Another config recorded: only the labels are behind.
    assert f.mig_node_decision(node, plan, "all-3g.20gb")["labels_current"] is False
    assert f.mig_node_decision(node, plan, "all-3g.20gb")["disruptive"] is False


@given(changed=st.booleans(), stale=st.booleans(), tainted=st.booleans(), reboot=st.booleans(), no_driver=st.booleans(),
       unadvertisable=st.booleans(), config=st.sampled_from([None, "all-1g.5gb", "all-3g.20gb"]))
def test_a_node_labelled_skip_is_left_alone_whatever_it_runs(changed, stale, tainted, reboot, no_driver, unadvertisable, config):
    plan = {"changed": changed, "nvml_unavailable": "no driver" if no_driver else "",
            "expected": {"allocatable": {"nvidia.com/mig-1g.5gb": 7}, "labels": {},
                         "errors": ["cannot"] if unadvertisable else []}}
    labels = {"nvidia.com/gpu.deploy.device-plugin": "true", f.SKIP_LABEL: "true"}
    node = node_object(labels, [{"key": "gpuops.io/mig-reconfigure", "effect": "NoSchedule"}] if tainted else [],
                       {"nvidia.com/mig-1g.5gb": "3" if stale else "7"})
    decision = f.mig_node_decision(node, plan, config, reboot_pending=reboot, settings={"k8s_gpu_mig_strategy": "mixed"})
    assert decision["skipped"] is True
    assert decision["disruptive"] is False and decision["labels_current"] is True and decision["reboot"] is False
    assert decision["refusal"] == ""
    # Bad settings refuse the whole run, a skipped node included.
    assert f.mig_node_decision(node, plan, config, settings={"k8s_gpu_mig_strategy": "hybrid"})["refusal"]
    # Any other value of the label skips nothing.
    labels[f.SKIP_LABEL] = "false"
    assert f.mig_node_decision(node, dict(plan, changed=True), config)["skipped"] is False


def test_node_decision_is_disruptive_for_a_layout_change_a_stale_advertisement_or_the_rollout_taint():
    plan = {"changed": False, "expected": {"allocatable": {"nvidia.com/mig-1g.5gb": 7}, "labels": {}}}
    running = {"nvidia.com/gpu.deploy.device-plugin": "true"}
    current = {"nvidia.com/mig-1g.5gb": "7"}
    assert f.mig_node_decision(node_object(running, allocatable=current), dict(plan, changed=True))["disruptive"] is True
    stale = f.mig_node_decision(node_object(running, allocatable={"nvidia.com/mig-1g.5gb": "3"}), plan)
    assert stale["disruptive"] is True and stale["advertised_diff"] == ["allocatable nvidia.com/mig-1g.5gb is 3, expected 7"]
    # No device plugin on the node: nothing is advertised yet.
    assert f.mig_node_decision(node_object({}, allocatable=current), plan)["advertised_current"] is False
    tainted = f.mig_node_decision(node_object(running, [{"key": "gpuops.io/mig-reconfigure", "effect": "NoSchedule"}], current), plan)
    assert tainted["tainted"] is True and tainted["disruptive"] is True
    # No config set: the labels record nothing, so they are never behind.
    assert f.mig_node_decision(node_object(running, allocatable=current), plan)["labels_current"] is True


GOOD_SETTINGS = {"k8s_gpu_mig_strategy": "mixed", "device_plugin_time_slicing_replicas": None, "gpu_stack": "standalone",
                 "mig_reconfigure_evacuate_scope": "changed"}


@pytest.mark.parametrize("name, value", [
    ("k8s_gpu_mig_strategy", "hybrid"), ("device_plugin_time_slicing_replicas", 0),
    ("device_plugin_time_slicing_replicas", "two"), ("gpu_stack", "both"), ("mig_reconfigure_evacuate_scope", "node"),
])
def test_node_decision_refuses_each_bad_setting_naming_it_and_its_value(name, value):
    plan = {"changed": True, "expected": {"errors": ["never reached"]}}
    decision = f.mig_node_decision(None, plan, "all-1g.5gb", settings=dict(GOOD_SETTINGS, **{name: value}))
    assert decision["refusal"].startswith("Invalid settings: %s=%s (" % (name, value))
    assert "never reached" not in decision["refusal"] and "not found" not in decision["refusal"]


@pytest.mark.parametrize("replicas", [None, "", "None", 1, "4"])
def test_node_decision_accepts_time_slicing_replicas_unset_or_positive(replicas):
    settings = dict(GOOD_SETTINGS, device_plugin_time_slicing_replicas=replicas)
    assert f.mig_node_decision(node_object(), {"changed": False}, settings=settings)["refusal"] == ""


def test_node_decision_refuses_a_node_missing_from_the_cluster_then_a_layout_that_cannot_be_advertised():
    plan = {"changed": True, "expected": {"allocatable": {}, "errors": ["GPU 0: 1g.5gb and 3g.20gb mixed", "GPU 1: too"]}}
    missing = f.mig_node_decision(None, plan, "all-balanced", node_name="gpu-7", host="host-7", settings=GOOD_SETTINGS)
    assert missing["refusal"] == "Node gpu-7 (host host-7) was not found in the cluster."
    assert missing["disruptive"] is True
    found = f.mig_node_decision(node_object(), plan, "all-balanced", settings=dict(GOOD_SETTINGS, k8s_gpu_mig_strategy="single"))
    assert found["refusal"] == ("Node n1: config all-balanced cannot be advertised with k8s_gpu_mig_strategy=single: "
                                "GPU 0: 1g.5gb and 3g.20gb mixed; GPU 1: too")
    # Without settings the message does not guess the strategy.
    assert f.mig_node_decision(node_object(), plan, "x")["refusal"].startswith("Node n1: config x cannot be advertised: ")


DRIVERLESS = {"changed": False, "gpu_count": 0, "expected": {"allocatable": {}, "labels": {}, "errors": []},
              "nvml_unavailable": "NVML is not available: Driver Not Loaded"}


@pytest.mark.parametrize("stack, driver_install, operator_driver, labels", list(itertools.product(
    ["standalone", "operator"], [True, False, "true", "false", "yes", "no"], [True, False, "true", "no"],
    [{}, {"nvidia.com/gpu.deploy.device-plugin": "true", "nvidia.com/mig.config": "all-1g.5gb",
          "nvidia.com/mig.config.state": "success"}])))
def test_a_node_without_a_driver_is_planned_after_the_driver_or_refused_when_nothing_installs_one(
        stack, driver_install, operator_driver, labels):
    settings = dict(GOOD_SETTINGS, gpu_stack=stack, nvidia_driver_install=driver_install,
                    gpu_operator_driver_enabled=operator_driver)
    decision = f.mig_node_decision(node_object(labels), DRIVERLESS, "all-1g.5gb", settings=settings)
    installs = (str(driver_install).lower() in ("true", "yes")) if stack == "standalone" else (str(operator_driver).lower() in ("true", "yes"))
    # Whatever its labels say, the node goes through the rollout, which plans it once NVML opens.
    assert decision["plan_after_driver"] is True and decision["disruptive"] is True
    if installs:
        assert decision["refusal"] == ""
    else:
        setting = "nvidia_driver_install" if stack == "standalone" else "gpu_operator_driver_enabled"
        assert decision["refusal"].startswith("Node n1 has no usable NVIDIA driver (NVML is not available: Driver Not Loaded)")
        assert "%s=false" % setting in decision["refusal"]


def test_a_node_with_a_driver_is_never_refused_for_the_driver_settings():
    plan = {"changed": False, "expected": {"allocatable": {}, "labels": {}, "errors": []}, "nvml_unavailable": ""}
    settings = dict(GOOD_SETTINGS, gpu_stack="operator", gpu_operator_driver_enabled=False, nvidia_driver_install=False)
    decision = f.mig_node_decision(node_object(), plan, None, settings=settings)
    assert decision["refusal"] == "" and decision["plan_after_driver"] is False


@pytest.mark.parametrize("rehearsal", [False, True])
def test_a_node_whose_python_lacks_pynvml_is_refused_naming_node_prepare_but_in_a_rehearsal(rehearsal):
    plan = dict(DRIVERLESS, nvml_unavailable="the Python library pynvml (PyPI nvidia-ml-py) is not installed")
    decision = f.mig_node_decision(node_object(), plan, "all-1g.5gb", settings=GOOD_SETTINGS, rehearsal=rehearsal)
    assert decision["plan_after_driver"] is True
    if rehearsal:
        assert decision["refusal"] == ""
    else:
        assert decision["refusal"].startswith("Node n1: the Python library pynvml (PyPI nvidia-ml-py) is not installed in the Python")
        assert "node_prepare" in decision["refusal"]
    # A missing driver is never refused for a library.
    assert f.mig_node_decision(node_object(), DRIVERLESS, "all-1g.5gb", settings=GOOD_SETTINGS, rehearsal=rehearsal)["refusal"] == ""
