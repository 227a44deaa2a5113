# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A rehearsal (--check) of a change on a busy cluster predicts the real run: it exits 0, writes
nothing, and lists exactly the pods the real run then evicts."""

from __future__ import annotations

import json
import re

import pytest

from test_rollout import evictions, mutations, pod_deletes, taints, wait_running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TAINT = "gpuops.io/mig-reconfigure"
STATE = "nvidia.com/mig.config.state"
SKIP = "gpuops.io/mig-reconfigure.skip"


def would_evict(output: str) -> set[str]:
    summary = output.split("MIG ROLLOUT SUMMARY")[1]
    return set(re.findall(r"^  would evict default/(\S+): ", summary, re.M))


def preview_pods(preview: dict) -> set[str]:
    return {pod["name"] for batch in preview["batches"] for node in batch["nodes"] for pod in node["evict"]}


def test_check_mode_of_a_geometry_change_lists_exactly_the_pods_the_real_run_evicts(sim_cluster, tmp_path):
    cluster = sim_cluster(["a100:3:A100-40GB:2"])
    first, second, spare = cluster.nodes
    common = ["-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_rollout_batch=2", "-e", "mig_reconfigure_wait_timeout=120"]
    cluster.playbook("nvidia-gpu-operator.yml", *common, "-e", "mig_config_name=all-1g.5gb", "-e", "mig_rollout_batch=100%")
    # Six pods on the 1g.5gb devices of the two nodes that change, behind a budget of one disruption
    # at a time; the third node, left out of the rollout, takes their replacements.
    cluster.store.patch("nodes", None, spare, {"spec": {"unschedulable": True}}, patch_type="merge")
    cluster.workload(name="infer", resource="nvidia.com/mig-1g.5gb", count=6, pdb_max_unavailable="1")
    running = wait_running(cluster, "infer", 6)
    assert len(running) == 6 and set(running.values()) <= {first, second}
    cluster.store.patch("nodes", None, spare, {"spec": {"unschedulable": None}, "metadata": {"labels": {SKIP: "true"}}},
                        patch_type="merge")
    change = [*common, "-e", "mig_config_name=all-3g.20gb", "-e", "mig_reconfigure_evacuate_timeout=120"]

    cluster.clear_requests()
    rehearsal = cluster.playbook("mig-reconfigure.yml", *change, "--check", "--diff",
                                 "-e", "mig_rollout_preview_path=%s" % (tmp_path / "preview"))
    assert rehearsal.rc == 0
    assert not mutations(cluster.requests()) and not evictions(cluster.requests())
    for node in (first, second):
        assert cluster.layout(node) == [["1g.5gb"] * 7] * 2
        obj = cluster.node(node)
        assert TAINT not in taints(obj) and obj["metadata"]["labels"][STATE] == "success"
    predicted = would_evict(rehearsal.output)
    assert predicted == set(running)
    summary = rehearsal.output.split("MIG ROLLOUT SUMMARY")[1]
    assert "7x1g.5gb -> 2 GPU(s): 2x3g.20gb" in summary and "pod(s) to evict" in summary and "pod(s) evicted" not in summary
    # The fleet preview: the two nodes in one batch (mig_rollout_batch=2), their pods, the capacity.
    preview = json.loads((tmp_path / "preview.json").read_text())
    assert (tmp_path / "preview.md").read_text().startswith("# MIG rollout preview")
    assert "MIG ROLLOUT PREVIEW" in rehearsal.output
    assert preview["changes"] is True and preview["blocking_pdbs"] == []
    assert [sorted(node["node"] for node in batch["nodes"]) for batch in preview["batches"]] == [sorted([first, second])]
    assert preview_pods(preview) == predicted
    assert {pod["kind"] for batch in preview["batches"] for node in batch["nodes"] for pod in node["evict"]} == {"device"}
    assert preview["capacity"]["now"]["nvidia.com/mig-1g.5gb"] == 42
    assert preview["batches"][0]["capacity"]["nvidia.com/mig-1g.5gb"] == 14
    assert preview["capacity"]["end"]["nvidia.com/mig-3g.20gb"] == 8
    assert preview["capacity"]["end"]["nvidia.com/mig-1g.5gb"] == 14

    cluster.clear_requests()
    cluster.playbook("mig-reconfigure.yml", *change)
    requests = cluster.requests()
    evicted = {r["name"] for r in evictions(requests) if r["status"] < 300}
    assert evicted == predicted
    assert evicted == preview_pods(preview)
    assert not pod_deletes(requests)
    for node in (first, second):
        assert cluster.layout(node) == [["3g.20gb"] * 2] * 2
        obj = cluster.node(node)
        assert TAINT not in taints(obj) and obj["metadata"]["labels"][STATE] == "success"

    # The converged fleet's preview says nothing changes.
    cluster.clear_requests()
    converged = cluster.playbook("mig-reconfigure.yml", *change, "--check", "-e", "mig_rollout_preview_path=%s" % (tmp_path / "again.json"))
    assert not mutations(cluster.requests())
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["changes"] is False and again["batches"] == [] and again["summary"].startswith("nothing changes")
    assert "nothing changes" in converged.output.split("MIG ROLLOUT PREVIEW")[1]

    # A budget that allows no disruption shows in the preview, before any run, as blocking: the
    # spare node, back in the rollout, runs a pod behind one.
    cluster.store.patch("nodes", None, spare, {"metadata": {"labels": {SKIP: None}}}, patch_type="merge")
    cluster.workload(name="critical", resource="nvidia.com/mig-1g.5gb", count=1, node=spare, pdb_max_unavailable="0")
    wait_running(cluster, "critical", 1)
    cluster.clear_requests()
    blocked = cluster.playbook("mig-reconfigure.yml", *change, "--check", "-e", "mig_rollout_preview_path=%s" % (tmp_path / "blocked"),
                               check=False)
    assert not mutations(cluster.requests()) and not evictions(cluster.requests())
    preview = json.loads((tmp_path / "blocked.json").read_text())
    assert [(pdb["node"], pdb["name"], pdb["disruptions_allowed"]) for pdb in preview["blocking_pdbs"]] == [(spare, "critical", 0)]
    assert "blocked by PodDisruptionBudget default/critical: allows 0 disruption(s)" in blocked.output.split("MIG ROLLOUT PREVIEW")[1]


def test_max_unavailable_counts_nodes_already_out_and_leaves_the_rest_for_a_later_run(sim_cluster):
    """Three nodes, one cordoned by someone else and kept out of the rollout: with max_unavailable 2
    a batch of the other two takes one of them out; the other is deferred, untouched, and the next
    run changes it."""
    cluster = sim_cluster(["a100:3:A100-40GB:1"])
    first, second, other = cluster.nodes
    common = ["-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_rollout_batch=100%", "-e", "mig_reconfigure_wait_timeout=120"]
    cluster.playbook("nvidia-gpu-operator.yml", *common, "-e", "mig_config_name=all-1g.5gb")
    cluster.store.patch("nodes", None, other, {"spec": {"unschedulable": True}, "metadata": {"labels": {SKIP: "true"}}},
                        patch_type="merge")
    change = [*common, "-e", "mig_config_name=all-3g.20gb", "-e", "mig_max_unavailable=2"]

    cluster.clear_requests()
    rehearsal = cluster.playbook("mig-reconfigure.yml", *change, "--check")
    assert not mutations(cluster.requests())
    assert "%s: " % second in rehearsal.output and "deferred: left for a later run" in rehearsal.output

    run = cluster.playbook("mig-reconfigure.yml", *change)
    summary = run.output.split("MIG ROLLOUT SUMMARY")[1]
    assert "deferred: left for a later run: max_unavailable allows 2 GPU node(s) out of service and 1 are already: " \
        "%s (cordoned)" % other in summary
    assert cluster.layout(first) == [["3g.20gb"] * 2]
    assert cluster.layout(second) == [["1g.5gb"] * 7]
    obj = cluster.node(second)
    assert TAINT not in taints(obj) and obj["metadata"]["labels"][STATE] == "success"
    assert not [r for r in mutations(cluster.requests()) if r.get("resource") == "nodes" and r.get("name") == second
                and "kubelet" not in (r.get("user_agent") or "")]

    cluster.playbook("mig-reconfigure.yml", *change)
    assert cluster.layout(second) == [["3g.20gb"] * 2]
    assert cluster.node(other)["spec"]["unschedulable"] is True
