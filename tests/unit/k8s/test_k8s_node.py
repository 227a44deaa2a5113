# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Taint, cordon and label maths, and the guarded read-modify-write of a node."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from k8s_unit_helpers import api_error, make_node

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.node import (
    apply_patch_locally,
    change_node,
    combine_patches,
    cordon_with_record,
    label_patch,
    merge_patch,
    merge_taints,
    metadata_changes,
    normalize_metadata_changes,
    normalize_taints,
    previous_values,
    taint_patch,
)

MIG = {"key": "gpuops.io/mig-reconfigure", "value": "all-1g.5gb", "effect": "NoSchedule"}
OTHER = {"key": "dedicated", "value": "ml", "effect": "NoSchedule"}
OTHER_EXEC = {"key": "dedicated", "value": "ml", "effect": "NoExecute", "timeAdded": "2024-01-01T00:00:00Z"}


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "taints, message",
    [
        ([{"key": "a"}], r"taints\[0\].effect: required to add a taint"),
        ([{"key": "a", "effect": "Sometimes"}], r"taints\[0\].effect: 'Sometimes' is not one of"),
        ([{"key": "bad key!", "effect": "NoSchedule"}], r"taints\[0\].key: 'bad key!'"),
        ([{"key": "a", "effect": "NoSchedule", "colour": "red"}], r"taints\[0\]: unknown field\(s\) colour"),
        ([{"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule", "value": "x"}], "a:NoSchedule is given twice"),
        ("a=b:NoSchedule", "taints: expected a list"),
    ],
)
def test_invalid_taints_name_the_field(taints, message):
    with pytest.raises(K8sError, match=message):
        normalize_taints(taints, "present")


def test_removal_needs_only_the_key():
    assert normalize_taints([{"key": "a", "value": None, "effect": None}], "absent") == [{"key": "a"}]


def test_label_values_are_strings_and_validated():
    assert normalize_metadata_changes("labels", {"a": True, "b": 3, "c": None, "d": "x"}, is_label=True) == {
        "a": "true", "b": "3", "c": None, "d": "x"}
    with pytest.raises(K8sError, match=r"labels.a: value 'has space' must be at most 63"):
        normalize_metadata_changes("labels", {"a": "has space"}, is_label=True)
    with pytest.raises(K8sError, match=r"labels: key 'Bad_Prefix/x' prefix 'Bad_Prefix'"):
        normalize_metadata_changes("labels", {"Bad_Prefix/x": "1"}, is_label=True)
    with pytest.raises(K8sError, match=r"annotations.a: expected a string, got list"):
        normalize_metadata_changes("annotations", {"a": [1]}, is_label=False)
    # Annotation values are free text.
    assert normalize_metadata_changes("annotations", {"m": "failed: bad things"}, is_label=False) == {"m": "failed: bad things"}


# --- taints -----------------------------------------------------------------------------------


def test_present_appends_a_missing_taint_and_keeps_the_others_in_order():
    assert merge_taints([OTHER_EXEC, OTHER], [MIG], "present") == [OTHER_EXEC, OTHER, MIG]


def test_present_updates_the_value_of_the_same_key_and_effect():
    current = [dict(MIG, value="old"), OTHER]
    assert merge_taints(current, [MIG], "present") == [MIG, OTHER]


def test_present_with_another_effect_is_another_taint():
    merged = merge_taints([MIG], [dict(MIG, effect="NoExecute")], "present")
    assert merged == [MIG, dict(MIG, effect="NoExecute")]


def test_absent_by_key_removes_every_effect_and_value():
    current = [OTHER, MIG, OTHER_EXEC]
    assert merge_taints(current, [{"key": "dedicated"}], "absent") == [MIG]


def test_absent_by_key_and_effect_removes_only_that_one():
    current = [OTHER, OTHER_EXEC]
    assert merge_taints(current, [{"key": "dedicated", "effect": "NoExecute"}], "absent") == [OTHER]


def test_absent_with_a_value_that_does_not_match_removes_nothing():
    assert merge_taints([MIG], [{"key": MIG["key"], "value": "other"}], "absent") == [MIG]


def test_taint_patch_is_the_full_list_with_the_resource_version():
    node = make_node(taints=[OTHER], rv="42")
    patch = taint_patch(node, [MIG], "present", None)
    assert patch == {"metadata": {"resourceVersion": "42"}, "spec": {"taints": [OTHER, MIG]}}


def test_taint_patch_is_none_when_nothing_changes():
    node = make_node(taints=[MIG], unschedulable=True)
    assert taint_patch(node, [MIG], "present", True) is None
    assert taint_patch(node, [{"key": "absent-key"}], "absent", None) is None


def test_cordon_and_uncordon():
    assert taint_patch(make_node(), [], "present", True) == {"metadata": {"resourceVersion": "100"}, "spec": {"unschedulable": True}}
    assert taint_patch(make_node(unschedulable=True), [], "present", False)["spec"] == {"unschedulable": False}
    assert taint_patch(make_node(unschedulable=True), [], "present", None) is None


RECORD = "gpuops.io/mig-reconfigure.cordoned-before"


def recorded(node, value):
    node["metadata"]["annotations"][RECORD] = value
    return node


def test_cordon_records_whether_the_node_was_cordoned_before():
    assert cordon_with_record(make_node(), True, RECORD) == (True, {RECORD: "false"})
    assert cordon_with_record(make_node(unschedulable=True), True, RECORD) == (True, {RECORD: "true"})


def test_a_record_from_an_interrupted_run_is_kept_rather_than_the_cordon_that_run_made():
    assert cordon_with_record(recorded(make_node(unschedulable=True), "false"), True, RECORD) == (True, {})
    assert cordon_with_record(recorded(make_node(unschedulable=True), "true"), True, RECORD) == (True, {})


def test_uncordon_only_a_node_the_caller_cordoned():
    assert cordon_with_record(recorded(make_node(unschedulable=True), "false"), False, RECORD) == (False, {RECORD: None})
    assert cordon_with_record(recorded(make_node(unschedulable=True), "true"), False, RECORD) == (None, {RECORD: None})
    # Nothing says the cordon was the caller's: it stays.
    assert cordon_with_record(make_node(unschedulable=True), False, RECORD) == (None, {})
    assert cordon_with_record(recorded(make_node(unschedulable=True), "garbage"), False, RECORD) == (None, {RECORD: None})


def test_without_a_record_or_a_cordon_nothing_is_decided():
    assert cordon_with_record(make_node(unschedulable=True), False, None) == (False, {})
    assert cordon_with_record(make_node(), True, None) == (True, {})
    assert cordon_with_record(recorded(make_node(), "false"), None, RECORD) == (None, {})


def _write(node, cordon, record):
    """The node after the write k8s_node_taint makes for ``cordon`` with ``record``."""
    wanted, annotations = cordon_with_record(node, cordon, record)
    patch = combine_patches(taint_patch(node, [], "present", wanted), label_patch(node, {}, annotations))
    return apply_patch_locally(node, patch) if patch else node


@given(before=st.booleans(), fences=st.integers(min_value=1, max_value=4), cordoned_between=st.booleans())
def test_fencing_any_number_of_times_then_releasing_restores_the_cordon_the_node_had(before, fences, cordoned_between):
    """Interrupted runs fence again (the node then already cordoned by the rollout); the release
    restores what the node was before the first fencing, whatever happened in between."""
    node = make_node(unschedulable=before)
    for index in range(fences):
        node = _write(node, True, RECORD)
        assert node["spec"]["unschedulable"] is True
        if cordoned_between and index == 0:
            # Someone cordons the already fenced node again: it changes nothing the record says.
            node["spec"]["unschedulable"] = True
    node = _write(node, False, RECORD)
    assert bool(node["spec"].get("unschedulable")) is before
    assert RECORD not in node["metadata"]["annotations"]
    # A second release changes nothing.
    assert _write(node, False, RECORD) == node


def test_removing_the_last_taint_sends_an_empty_list():
    assert taint_patch(make_node(taints=[MIG]), [{"key": MIG["key"]}], "absent", None)["spec"] == {"taints": []}


# --- labels -----------------------------------------------------------------------------------


def test_metadata_changes_set_and_remove_only_what_differs():
    current = {"a": "1", "b": "2"}
    assert metadata_changes(current, {"a": "1", "b": "3", "c": None, "d": "4"}) == {"b": "3", "d": "4"}
    assert metadata_changes(current, {"a": None}) == {"a": None}
    assert metadata_changes(None, {"a": None}) == {}


def test_label_patch_carries_labels_annotations_and_resource_version():
    node = make_node(labels={"a": "1"}, rv="7")
    patch = label_patch(node, {"a": None, "b": "2"}, {"m": "why"})
    assert patch == {"metadata": {"resourceVersion": "7", "labels": {"a": None, "b": "2"}, "annotations": {"m": "why"}}}
    assert label_patch(node, {"a": "1"}, {}) is None


def test_combined_patch_taints_and_labels_in_one_write_keeping_removals():
    node = make_node(taints=[OTHER], rv="7", labels={"gone": "x"})
    patch = combine_patches(taint_patch(node, [MIG], "present", None),
                            label_patch(node, {"nvidia.com/mig.config.state": "pending", "gone": None}, {}))
    assert patch == {"metadata": {"resourceVersion": "7", "labels": {"nvidia.com/mig.config.state": "pending", "gone": None}},
                     "spec": {"taints": [OTHER, MIG]}}
    assert apply_patch_locally(node, patch)["metadata"]["labels"] == {"nvidia.com/mig.config.state": "pending"}
    assert combine_patches(None, taint_patch(node, [OTHER], "present", None)) is None
    assert combine_patches(None, label_patch(node, {"a": "b"}, {})) == {"metadata": {"resourceVersion": "7", "labels": {"a": "b"}}}


def test_previous_values_report_absent_keys_as_none():
    node = make_node(labels={"a": "1"})
    assert previous_values(node, {"a": None, "b": "x"}, {"m": "y"}) == {"labels": {"a": "1", "b": None}, "annotations": {"m": None}}


def test_merge_patch_semantics():
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": None, "d": 3}, "l": [3]}) == {"a": {"c": 2, "d": 3}, "l": [3]}


def test_apply_patch_locally_ignores_the_resource_version():
    node = make_node(labels={"a": "1"}, rv="5")
    predicted = apply_patch_locally(node, {"metadata": {"resourceVersion": "5", "labels": {"a": None}}, "spec": {"unschedulable": True}})
    assert predicted["metadata"]["labels"] == {}
    assert predicted["metadata"]["resourceVersion"] == "5"
    assert predicted["spec"]["unschedulable"] is True


# --- read-modify-write ------------------------------------------------------------------------


def test_conflict_rereads_and_recomputes(fake_kube):
    kube = fake_kube(nodes=[make_node(taints=[OTHER])])

    def concurrent_writer(node):
        # Someone else adds a taint between our read and our write, once.
        if kube.count("read_node") == 1:
            kube.nodes["gpu-node-1"]["spec"]["taints"].append({"key": "late", "effect": "NoSchedule"})
            kube.nodes["gpu-node-1"]["metadata"]["resourceVersion"] = "101"
        return taint_patch(node, [MIG], "present", True)

    outcome = change_node(kube, "gpu-node-1", concurrent_writer, kube.retry.deadline(60), check_mode=False)
    assert outcome.conflicts == 1
    assert kube.count("read_node") == 2 and kube.count("patch_node") == 2
    # The second write was computed from the fresh read: the concurrent taint survives.
    assert [t["key"] for t in kube.nodes["gpu-node-1"]["spec"]["taints"]] == ["dedicated", "late", MIG["key"]]
    assert kube.nodes["gpu-node-1"]["spec"]["unschedulable"] is True
    assert outcome.before["spec"]["taints"] == [OTHER]


def test_check_mode_writes_nothing_and_predicts(fake_kube):
    kube = fake_kube(nodes=[make_node()])
    outcome = change_node(kube, "gpu-node-1", lambda node: taint_patch(node, [MIG], "present", True), kube.retry.deadline(60), True)
    assert kube.count("patch_node") == 0
    assert outcome.after["spec"] == {"taints": [MIG], "unschedulable": True}
    assert kube.nodes["gpu-node-1"]["spec"] == {}


def test_no_change_means_no_write(fake_kube):
    kube = fake_kube(nodes=[make_node(labels={"a": "1"})])
    outcome = change_node(kube, "gpu-node-1", lambda node: label_patch(node, {"a": "1"}, {}), kube.retry.deadline(60), False)
    assert outcome.patch is None and kube.count("patch_node") == 0


def test_server_errors_are_retried_then_reported(fake_kube, clock):
    kube = fake_kube(nodes=[make_node()])
    kube.failures["patch_node"] = [api_error(500, "boom", "InternalError")] * 100
    with pytest.raises(K8sError, match="updating node gpu-node-1 failed after .* Last error: HTTP 500 InternalError: boom"):
        change_node(kube, "gpu-node-1", lambda node: label_patch(node, {"a": "1"}, {}), kube.retry.deadline(20), False)
    assert sum(clock.sleeps) == pytest.approx(20)


def test_missing_node(fake_kube):
    kube = fake_kube(nodes=[])
    with pytest.raises(K8sError, match="node 'ghost' not found"):
        change_node(kube, "ghost", lambda node: None, kube.retry.deadline(5), False)
