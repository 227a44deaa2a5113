# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Converged nodes confirmed from the Kubernetes API (gpuops_nvml_recheck_interval): a re-run leaves
them out of every play that reaches the nodes, and a layout changed by hand on one of them, which
GPU Feature Discovery relabels, sends that node, and only that node, the whole way again."""

from __future__ import annotations

import json
import time

import pytest

from gpuops_sim.k8s.cluster import layout_node

# Five runs of the playbook on two nodes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ANNOTATION = "gpuops.io/converged"
NODE_PLAYS = ("Install the Python libraries the modules need on the GPU nodes",
              "Validate the settings and every node's MIG plan before anything changes",
              "Install the NVIDIA driver and the container toolkit")
SETTINGS = ["-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_config_name=all-1g.5gb", "-e", "mig_rollout_batch=100%",
            "-e", "mig_reconfigure_wait_timeout=120", "-e", "gpuops_nvml_recheck_interval=3600"]


def play_output(output: str, play: str) -> str:
    """The part of a run's output that one play printed."""
    start = output.index("PLAY [%s]" % play)
    end = output.find("\nPLAY ", start + 1)
    return output[start:end if end >= 0 else None]


def record(cluster, node: str) -> dict:
    return json.loads(cluster.node(node)["metadata"]["annotations"][ANNOTATION])


def wait_for_label(cluster, node: str, key: str, timeout: float = 60.0) -> None:
    """Until GFD's next run (its interval) has relabelled the node."""
    deadline = time.monotonic() + timeout
    while key not in cluster.node(node)["metadata"]["labels"]:
        assert time.monotonic() < deadline, "GFD did not relabel %s with %s" % (node, key)
        time.sleep(0.2)


def test_converged_nodes_are_confirmed_from_the_api_and_a_hand_change_is_repaired(sim_cluster):
    cluster = sim_cluster(["a100:2:A100-40GB:2"], gfd_interval=2)
    first, second = cluster.nodes

    # The first run reads every node through NVML, converges it and records it.
    cluster.playbook("nvidia-gpu-operator.yml", *SETTINGS)
    records = {node: record(cluster, node) for node in cluster.nodes}

    # The re-run confirms both from one Node list: no play reaches them, nothing is written.
    cluster.clear_requests()
    rerun = cluster.playbook("nvidia-gpu-operator.yml", *SETTINGS)
    assert rerun.changed == 0
    for play in NODE_PLAYS:
        assert "skipping: no hosts matched" in play_output(rerun.output, play), play
    writes = [r for r in cluster.requests() if r.get("verb") in ("patch", "update", "create", "delete")
              and r.get("resource") == "nodes"]
    assert not writes
    assert {node: record(cluster, node) for node in cluster.nodes} == records

    # Other settings: no node is confirmed (the digest of the settings differs); a rehearsal confirms none.
    check = cluster.playbook("nvidia-gpu-operator.yml", *SETTINGS, "--check")
    assert "skipping: no hosts matched" not in play_output(check.output, NODE_PLAYS[1])

    # A layout changed by hand on one node: GFD relabels it from NVML within its interval.
    layout_node(cluster.cluster.state_path(first), ["3g.20gb", "3g.20gb"], gpus=[0])
    wait_for_label(cluster, first, "nvidia.com/mig-3g.20gb.count")

    repair = cluster.playbook("nvidia-gpu-operator.yml", *SETTINGS)
    assert cluster.layout(first) == [["1g.5gb"] * 7] * 2
    validating = play_output(repair.output, NODE_PLAYS[1])
    assert "[%s]" % first in validating and "[%s" % second not in validating
    assert record(cluster, first)["observed"] != records[first]["observed"] or record(cluster, first) == records[first]
    assert record(cluster, second) == records[second]
    # And the node is confirmed again by the next run.
    again = cluster.playbook("nvidia-gpu-operator.yml", *SETTINGS)
    assert again.changed == 0
    assert "skipping: no hosts matched" in play_output(again.output, NODE_PLAYS[1])
