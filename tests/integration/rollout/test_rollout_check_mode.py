# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A rehearsal (--check) of a change on a busy cluster predicts the real run: it exits 0, writes
nothing, and lists exactly the pods the real run then evicts."""

from __future__ import annotations

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


def test_check_mode_of_a_geometry_change_lists_exactly_the_pods_the_real_run_evicts(sim_cluster):
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
    rehearsal = cluster.playbook("mig-reconfigure.yml", *change, "--check", "--diff")
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

    cluster.clear_requests()
    cluster.playbook("mig-reconfigure.yml", *change)
    requests = cluster.requests()
    evicted = {r["name"] for r in evictions(requests) if r["status"] < 300}
    assert evicted == predicted
    assert not pod_deletes(requests)
    for node in (first, second):
        assert cluster.layout(node) == [["3g.20gb"] * 2] * 2
        obj = cluster.node(node)
        assert TAINT not in taints(obj) and obj["metadata"]["labels"][STATE] == "success"


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
