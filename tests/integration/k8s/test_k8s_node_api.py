# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The k8s module_utils with the real kubernetes client against the API emulator.

Each test asserts the return value, the objects left in the emulator, and the requests made.
"""

from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.conditions import NodeConditions
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.evict import EvacuationRequest, evacuate
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.node import (
    change_node,
    label_patch,
    normalize_taints,
    taint_patch,
    taint_view,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.wait import wait_for_node

MERGE_PATCH = "application/merge-patch+json"
MIG_TAINT = {"key": "gpuops.io/mig-reconfigure", "value": "all-1g.5gb", "effect": "NoSchedule"}
GPU = {"nvidia.com/gpu": "1"}


def taint(client, state="present", taints=(MIG_TAINT,), cordon=None, check_mode=False, timeout=10):
    wanted = normalize_taints(list(taints), state)
    return change_node(client, "gpu-node-1", lambda node: taint_patch(node, wanted, state, cordon),
                       client.retry.deadline(timeout), check_mode)


def short(entries):
    return sorted("{0}/{1}".format(e["namespace"], e["name"]) for e in entries)


# --- taints and cordon ------------------------------------------------------------------------


def test_taint_and_cordon_with_one_merge_patch_carrying_the_resource_version(kube):
    kube.node(taints=[{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}])
    client = kube.product_client()
    kube.clear_requests()
    outcome = taint(client, cordon=True)
    node = kube.read_node()
    assert node["spec"]["unschedulable"] is True
    assert [(t["key"], t.get("value"), t["effect"]) for t in node["spec"]["taints"]] == [
        ("dedicated", "ml", "NoSchedule"), (MIG_TAINT["key"], MIG_TAINT["value"], "NoSchedule")]
    patches = kube.requests(verb="patch", resource="nodes", subresource=None)
    assert len(patches) == 1
    assert patches[0]["content_type"].startswith(MERGE_PATCH)
    assert outcome.patch["metadata"]["resourceVersion"] == outcome.before["metadata"]["resourceVersion"]
    assert taint_view(outcome.after) == taint_view(node)

    kube.clear_requests()
    again = taint(client, cordon=True)
    assert again.patch is None
    assert kube.requests(verb="patch") == []


def test_check_mode_predicts_without_writing(kube):
    kube.node()
    client = kube.product_client()
    kube.clear_requests()
    outcome = taint(client, cordon=True, check_mode=True)
    assert taint_view(outcome.after) == {"taints": [MIG_TAINT], "unschedulable": True}
    assert kube.read_node()["spec"].get("taints") in (None, [])
    assert [r["verb"] for r in kube.requests() if r["verb"] not in ("get",)] == []


def test_untaint_and_uncordon(kube):
    kube.node(taints=[MIG_TAINT, {"key": "keep", "effect": "NoExecute"}], unschedulable=True)
    taint(kube.product_client(), state="absent", taints=[{"key": MIG_TAINT["key"]}], cordon=False)
    node = kube.read_node()
    assert [t["key"] for t in node["spec"]["taints"]] == ["keep"]
    assert not node["spec"].get("unschedulable")


def test_stale_resource_version_is_refused_by_the_server(kube):
    """The precondition the modules rely on: a patch with an old resourceVersion gets 409."""
    created = kube.node()
    kube.core.patch_node("gpu-node-1", {"metadata": {"labels": {"someone": "else"}}})
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as raised:
        kube.core.patch_node("gpu-node-1", {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"], "labels": {"a": "b"}}},
                             _content_type=MERGE_PATCH)
    assert raised.value.status == 409


def test_conflict_is_retried_from_a_fresh_read(kube):
    kube.node()
    client = kube.product_client()
    kube.emulator.add_fault(verb="patch", resource="nodes", status=409, count=1)
    kube.clear_requests()
    outcome = taint(client)
    assert outcome.conflicts == 1
    assert [r["status"] for r in kube.requests(verb="patch", resource="nodes", subresource=None)] == [409, 200]
    assert len(kube.requests(verb="get", resource="nodes")) == 2
    assert [t["key"] for t in kube.read_node()["spec"]["taints"]] == [MIG_TAINT["key"]]


def test_server_errors_are_retried(kube):
    kube.node()
    kube.emulator.add_fault(verb="patch", resource="nodes", status=500, count=2)
    kube.clear_requests()
    outcome = change_node(kube.product_client(), "gpu-node-1", lambda node: label_patch(node, {"a": "1"}, {}),
                          kube.product_client().retry.deadline(10), False)
    assert outcome.after["metadata"]["labels"]["a"] == "1"
    assert [r["status"] for r in kube.requests(verb="patch", resource="nodes", subresource=None)] == [500, 500, 200]


def test_exhausted_retries_give_a_clear_message(kube):
    kube.node()
    kube.emulator.add_fault(verb="patch", resource="nodes", status=503, count=10000)
    client = kube.product_client()
    with pytest.raises(K8sError, match=r"updating node gpu-node-1 failed after \d+ attempt\(s\) .* giving up at the 1s deadline. Last error: HTTP 503"):
        change_node(client, "gpu-node-1", lambda node: label_patch(node, {"a": "1"}, {}), client.retry.deadline(1), False)
    assert "a" not in (kube.read_node()["metadata"].get("labels") or {})


# --- labels -----------------------------------------------------------------------------------


def test_labels_and_annotations_set_and_removed(kube):
    kube.node(labels={"old": "x", "keep": "y"})
    client = kube.product_client()
    kube.clear_requests()
    change_node(client, "gpu-node-1", lambda node: label_patch(node, {"old": None, "new": "1"}, {"gpuops.io/mig-reconfigure.message": "why"}),
                client.retry.deadline(10), False)
    metadata = kube.read_node()["metadata"]
    assert metadata["labels"] == {"keep": "y", "new": "1"}
    assert metadata["annotations"]["gpuops.io/mig-reconfigure.message"] == "why"
    [patch] = kube.requests(verb="patch", resource="nodes", subresource=None)
    assert patch["content_type"].startswith(MERGE_PATCH)


# --- evacuation -------------------------------------------------------------------------------


def test_evacuate_gpu_pods_with_exactly_one_eviction_each_and_no_delete(kube):
    kube.node(unschedulable=True)
    kube.pod("train-0", gpus=GPU)
    kube.pod("train-1", namespace="ml", gpus={"nvidia.com/mig-1g.5gb": "1"})
    kube.pod("web")
    kube.pod("device-plugin", namespace="gpu-operator", gpus=GPU, owner_kind="DaemonSet")
    kube.pod("elsewhere", node="gpu-node-2", gpus=GPU)
    client = kube.product_client()
    kube.clear_requests()
    result = evacuate(client, EvacuationRequest("gpu-node-1", scope="gpu", poll_interval=0.05), check_mode=False)
    assert short(result["evicted"]) == ["default/train-0", "ml/train-1"]
    assert {e["name"]: e["reason"] for e in result["skipped"]} == {"web": "requests no nvidia.com/* resource", "device-plugin": "DaemonSet pod"}
    assert result["blocked"] == [] and result["remaining"] == [] and result["changed"] is True
    evictions = kube.requests(verb="create", resource="pods", subresource="eviction")
    assert sorted((r["namespace"], r["name"]) for r in evictions) == [("default", "train-0"), ("ml", "train-1")]
    assert kube.requests(verb="delete", resource="pods") == []
    assert kube.pod_names() == ["default/web", "gpu-operator/device-plugin"]
    assert kube.pod_names("gpu-node-2") == ["default/elsewhere"]


def test_evacuate_check_mode_posts_nothing(kube):
    kube.node(unschedulable=True)
    kube.pod("train-0", gpus=GPU)
    client = kube.product_client()
    kube.clear_requests()
    result = evacuate(client, EvacuationRequest("gpu-node-1"), check_mode=True)
    assert short(result["evicted"]) == ["default/train-0"] and result["changed"] is True
    assert kube.requests(subresource="eviction") == [] and kube.requests(verb="delete") == []
    assert kube.pod_names() == ["default/train-0"]


def test_evacuate_devices_scope(kube):
    kube.node(unschedulable=True)
    kube.pod("a", gpus={"nvidia.com/mig-1g.5gb": "1"})
    kube.pod("b", gpus={"nvidia.com/mig-1g.5gb": "1"})
    held = {"available": True, "reason": None, "pods": [
        {"namespace": "default", "name": "a", "devices": ["MIG-a"], "gpus": ["GPU-0"]},
        {"namespace": "default", "name": "b", "devices": ["MIG-b"], "gpus": ["GPU-1"]}]}
    result = evacuate(kube.product_client(), EvacuationRequest("gpu-node-1", scope="devices", device_uuids=["GPU-0"],
                                                               pod_devices=held), check_mode=False)
    assert short(result["evicted"]) == ["default/a"]
    assert result["device_map"] == {"available": True, "reason": None}
    assert kube.pod_names() == ["default/b"]


def test_pdb_blocks_until_the_deadline_then_fails_before_any_eviction_leaving_the_node_fenced(kube):
    kube.node(taints=[MIG_TAINT], unschedulable=True)
    kube.pod("serve-0", gpus=GPU, labels={"app": "serve"})
    kube.pod("train-0", gpus=GPU)
    kube.pdb("serve-pdb", {"app": "serve"})
    client = kube.product_client()
    kube.clear_requests()
    with pytest.raises(K8sError) as raised:
        evacuate(client, EvacuationRequest("gpu-node-1", timeout=1, poll_interval=0.05), check_mode=False)
    error = raised.value
    assert "default/serve-0 blocked by PodDisruptionBudget serve-pdb" in error.msg
    assert error.msg.startswith("nothing was evicted from node gpu-node-1")
    assert [(b["name"], b["pdbs"]) for b in error.details["blocked"]] == [("serve-0", ["serve-pdb"])]
    # The budgets are read for the whole node first: the node is not half drained.
    assert error.details["evicted"] == [] and error.details["changed"] is False
    assert short(error.details["remaining"]) == ["default/serve-0", "default/train-0"]
    assert len(kube.requests(verb="list", resource="poddisruptionbudgets")) >= 2
    assert kube.requests(subresource="eviction") == []
    assert kube.requests(verb="delete") == [] and kube.requests(verb="patch", resource="nodes", subresource=None) == []
    node = kube.read_node()
    assert node["spec"]["unschedulable"] is True and node["spec"]["taints"][0]["key"] == MIG_TAINT["key"]
    assert kube.pod_names() == ["default/serve-0", "default/train-0"]


def test_force_deletes_only_after_the_deadline(kube):
    kube.node(unschedulable=True)
    kube.pod("serve-0", gpus=GPU, labels={"app": "serve"})
    kube.pdb("serve-pdb", {"app": "serve"})
    client = kube.product_client()
    kube.clear_requests()
    result = evacuate(client, EvacuationRequest("gpu-node-1", timeout=1, poll_interval=0.05, force=True, force_reason="test"), False)
    assert short(result["forced"]) == ["default/serve-0"]
    log = kube.requests()
    first_delete = next(i for i, r in enumerate(log) if r["verb"] == "delete")
    assert all(r.get("subresource") != "eviction" for r in log[first_delete:])
    assert kube.pod_names() == []


def test_eviction_server_errors_are_retried(kube):
    kube.node(unschedulable=True)
    kube.pod("train-0", gpus=GPU)
    kube.emulator.add_fault(verb="create", resource="pods", subresource="eviction", status=500, count=1)
    client = kube.product_client()
    kube.clear_requests()
    result = evacuate(client, EvacuationRequest("gpu-node-1", poll_interval=0.05), check_mode=False)
    assert short(result["evicted"]) == ["default/train-0"]
    statuses = [r["status"] for r in kube.requests(verb="create", subresource="eviction")]
    assert statuses[0] == 500 and statuses[-1] in (200, 201) and len(statuses) == 2


# --- waiting ----------------------------------------------------------------------------------


def test_wait_for_node_follows_changes_made_while_waiting_and_survives_a_dropped_watch(kube):
    kube.node(labels={"nvidia.com/mig.config.state": "pending"})
    client = kube.product_client()
    kube.emulator.add_fault(verb="watch", resource="nodes", drop_watch=True, count=1)
    kube.clear_requests()
    outcome = {}

    def wait():
        try:
            outcome["result"] = wait_for_node(client, "gpu-node-1", NodeConditions(labels={"nvidia.com/mig.config.state": "success"},
                                                                                   ready=True), timeout=30, poll_interval=0.05)
        except K8sError as error:  # pragma: no cover - reported below
            outcome["error"] = error

    waiter = threading.Thread(target=wait)
    waiter.start()
    # Change the node once the waiter watches again after the dropped watch.
    give_up = time.monotonic() + 30
    while len(kube.requests(verb="watch", resource="nodes")) < 2 and time.monotonic() < give_up:
        time.sleep(0.02)
    kube.core.patch_node("gpu-node-1", {"metadata": {"labels": {"nvidia.com/mig.config.state": "success"}}})
    waiter.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert len(kube.requests(verb="watch", resource="nodes")) >= 2
    result = outcome["result"]
    assert result["matched"] == ["labels[nvidia.com/mig.config.state]", "ready"]
    assert result["node"]["labels"]["nvidia.com/mig.config.state"] == "success"


def test_wait_for_node_times_out_with_expected_and_observed(kube):
    kube.node(allocatable={"nvidia.com/gpu": "0"})
    with pytest.raises(K8sError) as raised:
        wait_for_node(kube.product_client(), "gpu-node-1", NodeConditions(allocatable={"nvidia.com/gpu": 4}), timeout=1, poll_interval=0.05)
    assert "allocatable[nvidia.com/gpu]: expected '4', observed '0'" in raised.value.msg
    assert raised.value.details["node"]["allocatable"]["nvidia.com/gpu"] == "0"
    assert kube.requests(verb="watch", resource="nodes")


# --- dropped connections, rate limits, graceful termination ------------------------------------


def test_dropped_connection_on_a_node_write_is_recovered(kube):
    kube.node()
    client = kube.product_client()
    kube.emulator.add_fault(verb="patch", resource="nodes", subresource="", drop_connection=True, count=1)
    kube.clear_requests()
    outcome = taint(client, cordon=True)
    assert taint_view(outcome.after) == {"taints": [MIG_TAINT], "unschedulable": True}
    assert len(kube.requests(verb="patch", resource="nodes", subresource=None)) == 2
    assert kube.read_node()["spec"]["unschedulable"] is True


def test_dropped_connection_and_rate_limit_on_evictions_are_retried(kube):
    kube.node(unschedulable=True)
    kube.pod("train-0", gpus=GPU)
    kube.pod("train-1", gpus=GPU)
    kube.emulator.add_fault(verb="create", resource="pods", subresource="eviction", name="train-0", drop_connection=True, count=1)
    kube.emulator.add_fault(verb="create", resource="pods", subresource="eviction", name="train-1", status=429, count=1)
    client = kube.product_client()
    kube.clear_requests()
    result = evacuate(client, EvacuationRequest("gpu-node-1", poll_interval=0.05), check_mode=False)
    assert short(result["evicted"]) == ["default/train-0", "default/train-1"]
    # A plain 429 (no disruption budget named) is rate limiting, not a PDB block.
    assert result["blocked"] == []
    for name in ("train-0", "train-1"):
        assert len(kube.requests(verb="create", subresource="eviction", name=name)) == 2
    assert kube.requests(verb="delete", resource="pods") == []
    assert kube.pod_names() == []


def test_evacuation_waits_for_graceful_termination_by_watching(kube):
    kube.emulator.termination_delay = 0.5
    kube.node(unschedulable=True)
    kube.pod("train-0", gpus=GPU)
    client = kube.product_client()
    kube.clear_requests()
    result = evacuate(client, EvacuationRequest("gpu-node-1", poll_interval=0.05), check_mode=False)
    assert short(result["evicted"]) == ["default/train-0"] and result["remaining"] == []
    assert kube.pod_names() == []
    assert kube.requests(verb="watch", resource="pods")
    assert len(kube.requests(verb="create", subresource="eviction")) == 1
