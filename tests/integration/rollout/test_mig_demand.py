# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mig-demand.yml end to end on a simulated cluster of two GPU models: pending pods ask for MIG
profiles the layout lacks; only free GPUs are re-laid, nothing is evicted, the pods run."""

from __future__ import annotations

import time

import pytest

from test_rollout import evictions, gpu_pods, node_or_pod_writes, pod_deletes, wait_running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

OPT_IN = {"gpuops.io/mig-demand": "true"}
NOS_OPT_IN = {"nos.nebuly.ai/gpu-partitioning": "mig"}


def start_configs() -> dict:
    """Every GPU full of its smallest profile: 7 x 1g.5gb on the A100 40GB, 7 x 1g.10gb on the H100."""
    return {"mig_configs": {"start": [
        {"device-filter": "0x20B010DE", "devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 7}},
        {"device-filter": "0x233010DE", "devices": "all", "mig-enabled": True, "mig-devices": {"1g.10gb": 7}},
    ]}}


def wait_unschedulable(cluster, apps: set[str], count: int, timeout: float = 60.0) -> list[str]:
    """The simulated scheduler marks pods it cannot place asynchronously: wait until ``count`` are."""
    deadline = time.monotonic() + timeout
    while True:
        names = [p["metadata"]["name"] for p in cluster.pods("default")
                 if p["metadata"].get("labels", {}).get("app") in apps and any(
                     c.get("reason") == "Unschedulable" for c in p.get("status", {}).get("conditions") or [])]
        if len(names) >= count or time.monotonic() > deadline:
            return names
        time.sleep(0.5)


def test_demand_re_lays_only_free_gpus_evicts_nothing_and_the_pods_run(sim_cluster):
    cluster = sim_cluster(["a100:2:A100-40GB:2", "h100:1:H100:2"])
    a100, left_out, h100 = cluster.nodes
    common = ["-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_reconfigure_wait_timeout=120"]
    config = cluster.write_vars("configs.yml", start_configs())
    cluster.playbook("nvidia-gpu-operator.yml", *common, "-e", "@%s" % config, "-e", "mig_config_name=start",
                     "-e", "mig_rollout_batch=100%")
    cluster.store.patch("nodes", None, a100, {"metadata": {"labels": OPT_IN}}, patch_type="merge")
    cluster.store.patch("nodes", None, h100, {"metadata": {"labels": NOS_OPT_IN}}, patch_type="merge")

    # GPU 0 of each node fully used; GPU 1 free.
    cluster.workload(name="held-a", resource="nvidia.com/mig-1g.5gb", count=7, node=a100)
    cluster.workload(name="held-h", resource="nvidia.com/mig-1g.10gb", count=7, node=h100)
    held = wait_running(cluster, "held-a", 7) | wait_running(cluster, "held-h", 7)
    assert len(held) == 14
    before = {node: cluster.layout(node) for node in cluster.nodes}

    # Profiles the layout lacks, and one more than the fleet can hold.
    cluster.workload(name="train", resource="nvidia.com/mig-3g.20gb", count=2)
    cluster.workload(name="infer", resource="nvidia.com/mig-3g.40gb", count=1)
    cluster.workload(name="huge", resource="nvidia.com/mig-7g.80gb", count=1)
    assert len(wait_unschedulable(cluster, {"train", "infer", "huge"}, 4)) == 4

    # A rehearsal shows the plan and changes nothing.
    cluster.clear_requests()
    rehearsal = cluster.playbook("mig-demand.yml", *common, "--check")
    assert "3g.20gb: 2" in rehearsal.output and "not enough free room" in rehearsal.output
    assert not node_or_pod_writes(cluster.requests())
    assert {node: cluster.layout(node) for node in cluster.nodes} == before
    cluster.clear_requests()

    run = cluster.playbook("mig-demand.yml", *common)
    requests = cluster.requests()
    assert not evictions(requests), "demand partitioning must evict nothing"
    assert not pod_deletes(requests)
    # The used GPUs are as they were; only the free ones were re-laid.
    assert cluster.layout(a100)[0] == before[a100][0]
    assert cluster.layout(h100)[0] == before[h100][0]
    assert cluster.layout(a100)[1] == ["3g.20gb", "3g.20gb"]
    assert "3g.40gb" in cluster.layout(h100)[1]
    # A node that did not opt in is never touched, free as its GPUs are.
    assert cluster.layout(left_out) == before[left_out]
    assert gpu_pods(cluster, "held-a") | gpu_pods(cluster, "held-h") == held
    assert len(wait_running(cluster, "train", 2)) == 2
    assert len(wait_running(cluster, "infer", 1)) == 1
    assert wait_running(cluster, "huge", 1, timeout=5) == {}
    huge = wait_unschedulable(cluster, {"huge"}, 1)[0]
    assert "default/%s: not enough free room" % huge in run.output
    assert "scheduled" in run.output

    cluster.clear_requests()
    layouts = {node: cluster.layout(node) for node in cluster.nodes}
    again = cluster.playbook("mig-demand.yml", *common)
    assert again.changed == 0
    assert not evictions(cluster.requests())
    assert {node: cluster.layout(node) for node in cluster.nodes} == layouts
    assert "default/%s: not enough free room" % huge in again.output
