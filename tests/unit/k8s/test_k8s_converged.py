# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A converged node confirmed from the API: the record, the comparison and when it is rewritten."""

from __future__ import annotations

import copy
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s import converged as cv

NOW = 1_800_000_000.0
BOUND = 3600
TAINT = "gpuops.io/mig-reconfigure"
SETTINGS = cv.settings_digest({"mig_config_name": "all-1g.5gb", "k8s_gpu_mig_strategy": "mixed"}, "shared")


def node(name="gpu-1", labels=None, allocatable=None, annotations=None, taints=None):
    return {
        "metadata": {"name": name, "labels": dict(labels if labels is not None else {
            "nvidia.com/mig.config": "all-1g.5gb", "nvidia.com/mig.config.state": "success",
            "nvidia.com/mig.strategy": "mixed", "nvidia.com/mig-1g.5gb.count": "14",
            "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB", "nvidia.com/cuda.driver.major": "550",
            "kubernetes.io/hostname": name}),
            "annotations": dict(annotations or {})},
        "spec": {"taints": list(taints or [])},
        "status": {"allocatable": dict(allocatable if allocatable is not None else {
            "cpu": "64", "nvidia.com/mig-1g.5gb": "14"})},
    }


def recorded(n, settings_digest=SETTINGS, read_at=NOW - 60):
    n = copy.deepcopy(n)
    n["metadata"]["annotations"][cv.ANNOTATION] = cv.record_text(settings_digest, n, read_at)
    return n


def test_a_recorded_node_whose_settings_labels_and_allocatable_stand_is_confirmed():
    assert cv.unconfirmed_reason(recorded(node()), SETTINGS, NOW, BOUND, TAINT) == ""


def test_a_zero_bound_confirms_no_node():
    assert "bound is 0" in cv.unconfirmed_reason(recorded(node()), SETTINGS, NOW, 0, TAINT)


def test_why_a_node_is_not_confirmed():
    base = recorded(node())
    assert "not found" in cv.unconfirmed_reason(None, SETTINGS, NOW, BOUND, TAINT)
    assert "no record" in cv.unconfirmed_reason(node(), SETTINGS, NOW, BOUND, TAINT)
    assert "settings changed" in cv.unconfirmed_reason(base, "other", NOW, BOUND, TAINT)
    # A layout changed by hand: GFD relabels the node from NVML.
    relabelled = copy.deepcopy(base)
    relabelled["metadata"]["labels"]["nvidia.com/mig-1g.5gb.count"] = "13"
    assert "Feature Discovery" in cv.unconfirmed_reason(relabelled, SETTINGS, NOW, BOUND, TAINT)
    fewer = copy.deepcopy(base)
    fewer["status"]["allocatable"]["nvidia.com/mig-1g.5gb"] = "7"
    assert "allocatable" in cv.unconfirmed_reason(fewer, SETTINGS, NOW, BOUND, TAINT)
    assert "last read" in cv.unconfirmed_reason(recorded(node(), read_at=NOW - BOUND), SETTINGS, NOW, BOUND, TAINT)
    assert "future" in cv.unconfirmed_reason(recorded(node(), read_at=NOW + 3600), SETTINGS, NOW, BOUND, TAINT)
    tainted = copy.deepcopy(base)
    tainted["spec"]["taints"] = [{"key": TAINT, "value": "all-1g.5gb", "effect": "NoSchedule"}]
    assert "tainted" in cv.unconfirmed_reason(tainted, SETTINGS, NOW, BOUND, TAINT)
    failed = copy.deepcopy(base)
    failed["metadata"]["labels"][cv.STATE_LABEL] = "failed"
    assert "failed" in cv.unconfirmed_reason(failed, SETTINGS, NOW, BOUND, TAINT)
    skipped = copy.deepcopy(base)
    skipped["metadata"]["labels"][cv.SKIP_LABEL] = "true"
    assert "skip" in cv.unconfirmed_reason(skipped, SETTINGS, NOW, BOUND, TAINT)
    edited = copy.deepcopy(base)
    edited["metadata"]["annotations"][cv.ANNOTATION] = "{not json"
    assert "no record" in cv.unconfirmed_reason(edited, SETTINGS, NOW, BOUND, TAINT)


def test_labels_the_publishers_do_not_own_do_not_matter():
    other = recorded(node())
    other["metadata"]["labels"]["team"] = "vision"
    other["metadata"]["labels"]["nvidia.com/gfd.timestamp"] = "1800000123"
    other["status"]["allocatable"]["memory"] = "1Ti"
    assert cv.unconfirmed_reason(other, SETTINGS, NOW, BOUND, TAINT) == ""


_label_keys = st.sampled_from(["nvidia.com/mig.strategy", "nvidia.com/mig-1g.5gb.count", "nvidia.com/gpu.product",
                               "nvidia.com/gpu.count", "nvidia.com/cuda.driver.major", "nvidia.com/cuda.driver.rev",
                               "nvidia.com/gpu.deploy.device-plugin", "team", "nvidia.com/gfd.timestamp"])
_resource_keys = st.sampled_from(["nvidia.com/gpu", "nvidia.com/mig-1g.5gb", "nvidia.com/mig-3g.20gb", "cpu", "pods"])
_values = st.text(alphabet="0123456789abc.-", max_size=6)


@settings(max_examples=200, deadline=None)
@given(labels=st.dictionaries(_label_keys, _values), allocatable=st.dictionaries(_resource_keys, _values),
       new_labels=st.dictionaries(_label_keys, _values), new_allocatable=st.dictionaries(_resource_keys, _values),
       age=st.integers(min_value=-10, max_value=2 * BOUND))
def test_confirmed_exactly_when_what_the_publishers_say_and_the_age_stand(labels, allocatable, new_labels, new_allocatable, age):
    before = recorded(node(labels=labels, allocatable=allocatable), read_at=NOW - age)
    after = copy.deepcopy(before)
    after["metadata"]["labels"] = dict(new_labels)
    after["status"]["allocatable"] = dict(new_allocatable)

    def owned(n):
        return ({k: v for k, v in n["metadata"]["labels"].items() if k.startswith("nvidia.com/") and k != "nvidia.com/gfd.timestamp"},
                {k: v for k, v in n["status"]["allocatable"].items() if k.startswith("nvidia.com/")})

    reason = cv.unconfirmed_reason(after, SETTINGS, NOW, BOUND, TAINT)
    state_ok = new_labels.get(cv.STATE_LABEL, "success") == "success"
    assert (reason == "") == (owned(before) == owned(after) and age < BOUND and state_ok)


@settings(max_examples=100, deadline=None)
@given(age=st.integers(min_value=0, max_value=2 * BOUND), same_settings=st.booleans(), relabelled=st.booleans())
def test_a_record_is_rewritten_only_when_it_changes_or_is_half_way_to_the_bound(age, same_settings, relabelled):
    current = recorded(node(), read_at=NOW - age)
    if relabelled:
        current["metadata"]["labels"]["nvidia.com/mig-1g.5gb.count"] = "13"
    wanted = cv.record_update(current, SETTINGS if same_settings else "other", NOW, NOW, BOUND)
    assert (wanted is None) == (same_settings and not relabelled and age < BOUND / 2)
    if wanted is not None:
        rewritten = copy.deepcopy(current)
        rewritten["metadata"]["annotations"][cv.ANNOTATION] = wanted
        assert cv.unconfirmed_reason(rewritten, SETTINGS if same_settings else "other", NOW, BOUND, TAINT) == ""
        assert json.loads(wanted)["read_at"] == int(NOW)


def test_confirm_splits_the_fleet_from_one_node_list():
    nodes = [recorded(node("gpu-1")), node("gpu-2")]
    result = cv.confirm(nodes, {"gpu-1": SETTINGS, "gpu-2": SETTINGS, "gpu-3": SETTINGS}, NOW, BOUND, TAINT)
    assert result["confirmed"] == ["gpu-1"]
    assert set(result["unconfirmed"]) == {"gpu-2", "gpu-3"}


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(st.integers(), st.text(max_size=8), st.none())))
def test_the_settings_digest_does_not_depend_on_their_order(values):
    assert cv.settings_digest(dict(reversed(list(values.items())))) == cv.settings_digest(values)


def test_which_variables_are_settings_and_the_driver_only_where_the_collection_installs_it():
    variables = {"mig_config_name": "all-1g.5gb", "nvidia_driver_version": "550", "ansible_host": "10.0.0.1",
                 "k8s_node_name": "gpu-1", "k8s_kubeconfig": "/root/.kube/config", "gpu_stack": "standalone"}
    assert set(cv.node_settings(variables)) == {"mig_config_name", "nvidia_driver_version", "k8s_node_name", "gpu_stack"}
    operator = dict(variables, gpu_stack="operator")
    assert "nvidia_driver_version" not in cv.node_settings(operator)
    not_installed = dict(variables, nvidia_driver_install=False)
    assert "nvidia_driver_version" not in cv.node_settings(not_installed)


def test_the_filter_digests_each_hosts_settings_and_names_its_node(tmp_path):
    from ansible_collections.gpuops.nvidia.plugins.filter.converged import node_settings_digests

    config = tmp_path / "configs.yaml"
    config.write_text("version: v1\n")
    hostvars = {
        "localhost": {"nvidia_device_plugin_namespace": "nvidia"},
        "a": {"mig_config_name": "all-1g.5gb", "ansible_host": "10.0.0.1", "k8s_node_name": "node-a"},
        "b": {"mig_config_name": "all-1g.5gb", "ansible_host": "10.0.0.2"},
        "c": {"mig_config_name": "all-1g.5gb", "mig_config_file": str(config)},
    }
    first = node_settings_digests(hostvars, ["a", "b", "c"], "localhost")
    assert {host: one["name"] for host, one in first.items()} == {"a": "node-a", "b": "b", "c": "c"}
    # What is not a setting (the address) does not count; the config file's content does; so do the API host's settings.
    assert node_settings_digests(dict(hostvars, b=dict(hostvars["b"], ansible_host="10.9.9.9")), ["b"], "localhost") == {"b": first["b"]}
    config.write_text("version: v1\nmig-configs: {}\n")
    assert node_settings_digests(hostvars, ["c"], "localhost")["c"] != first["c"]
    other_api = dict(hostvars, localhost={"nvidia_device_plugin_namespace": "gpu"})
    assert node_settings_digests(other_api, ["b"], "localhost")["b"] != first["b"]


def test_the_nodes_recorded_are_those_read_and_found_converged():
    from ansible_collections.gpuops.nvidia.plugins.filter.converged import converged_nodes

    digests = {host: {"name": "node-" + host, "settings": "s-" + host} for host in "abcdefg"}
    decided = {"skipped": False}
    hostvars = {
        "a": {"mig_reconfigure_decision": decided, "mig_reconfigure_started": "1800000000.5"},  # needed nothing
        "b": {"mig_reconfigure_decision": decided, "mig_reconfigure_report": {"result": "success"}},
        "c": {"mig_reconfigure_decision": decided, "mig_reconfigure_report": {"result": "deferred"}},
        # The rollout stopped (max_fail_percentage) before this node's batch: still the validating play's result.
        "d": {"mig_reconfigure_decision": decided},
        "e": {"mig_reconfigure_decision": {"skipped": True}},
        "f": {},  # never planned (unreachable in the node preparation, or a rehearsal)
        "g": {"mig_reconfigure_decision": decided, "mig_reconfigure_report": {"result": "recorded"}},
        "h": {"mig_reconfigure_decision": decided},  # not in the digests: not a GPU node of the first play
    }
    nodes = converged_nodes(hostvars, list(hostvars), digests, ["b", "c", "d", "g"])
    assert [n["name"] for n in nodes] == ["node-a", "node-b", "node-g"]
    assert nodes[0] == {"name": "node-a", "settings": "s-a", "read_at": 1800000000.5}
    assert nodes[1]["read_at"] is None


@given(pending=st.booleans(), decided=st.booleans(), skipped=st.booleans(),
       result=st.sampled_from([None, "success", "unchanged", "recorded", "failed", "deferred", "skipped"]))
def test_found_converged(pending, decided, skipped, result):
    expected = decided and not skipped and (not pending or result in ("success", "unchanged", "recorded"))
    assert cv.found_converged(pending, decided, skipped, result) == expected
