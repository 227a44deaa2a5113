# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""rollout_scaling: a rolling reconfigure of 10, 100 and 1,000 simulated nodes on this machine.

Every node has 8 × A100-SXM4-40GB laid out as 7 × 1g.5gb and starts converged by construction
(bench.sim.converge_by_construction: the collection's device plugin role deployed and switched on,
config labels written; bench.sim.record_boot_layout: the boot-time service and its record, as an
earlier rollout leaves them). So the figure is a change of geometry on a running fleet, not the
first installation of the boot-time service. The measured rollout moves every node to all-2g.10gb with
`playbooks/mig-reconfigure.yml`, batch 10 % (`mig_rollout_batch: "10%"`). The
simulated device plugin re-reads the GPUs only after a fixed start-up delay (PLUGIN_DELAY_S), as
the real plugin does after a restart, so the wait step has something to wait for.

Per size: wall time, controller CPU (ansible-playbook and all it started) per node, the
simulator's CPU and its share, and how many nodes reached nvidia.com/mig.config.state=success.
Across sizes: the growth exponent of wall time and of controller CPU (1 = linear). Each size runs
under each strategy in turn (Ansible's default, linear, and Mitogen's mitogen_linear where Mitogen
is installed), each on a fleet of its own, so the strategies are compared in the same run.

The baseline is the seed-001 procedure's floor: its fixed `sleep 60` once per node. In batches
of 10 % that is 60 s per batch (10 batches: 600 s whatever the size); node by node, as its guide
recommends for production, it is 60 s per node.

A size whose projected time does not fit in what is left of the run's budget is not started; the
result says so, with the projection. The rollout's Kubernetes steps are module runs made once per
batch, the rest once per node, and batches of 10 % make 10 batches at every size. So the projection
takes the previous size's controller CPU per module run, times the module runs the new size makes
(its per-node runs times the nodes, plus its per-batch runs times the batches), over the machine's
cores, plus a fifth. Scaling the previous size's CPU per node instead would overstate larger sizes
several times: at 10 nodes each batch is one node, and the per-batch runs count as per-node runs.
A run that overshoots is stopped at the budget and reported as not finished. A size that does not
finish lists its first failed tasks (`failures`: task, host, message), so the result says why.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Dict, List, Optional

from bench.common import Options, cpu_split, growth_exponent, rounded
from bench.sim import (Cluster, converge_by_construction, node_states, nodes_advertising, playbook,
                       record_boot_layout, strategies, strategy_does_not_fit)

SIZES = (10, 100, 1000)
QUICK_SIZES = (2, 4)
BATCH = "10%"
FORKS = 10
PLUGIN_DELAY_S = 1.0
START_LAYOUT, START_CONFIG = "1g.5gb:7", "all-1g.5gb"
START_RESOURCE, START_COUNT = "nvidia.com/mig-1g.5gb", 56
TARGET_CONFIG, TARGET_RESOURCE, TARGET_COUNT = "all-2g.10gb", "nvidia.com/mig-2g.10gb", 24
SEED_SLEEP_S = 60
MARGIN_S = 30  # cluster start and teardown around a measured run


CORES = os.cpu_count() or 1


# The modules the rollout runs once per batch, on the API host.
BATCH_ACTIONS = frozenset({"gpuops.nvidia.k8s_node_taint", "gpuops.nvidia.k8s_node_label", "gpuops.nvidia.k8s_node_evacuate",
                           "gpuops.nvidia.k8s_node_wait", "kubernetes.core.k8s_info"})


def project_wall_s(measured: Dict[str, Any], nodes: int) -> float:
    """Wall time a size should take, from a smaller measured size (see the module docstring)."""
    runs = measured["module_runs"]
    cpu_per_run = measured["controller_cpu_s"] / max(runs["per_node_part"] * measured["nodes"] + runs["per_batch_part"] * batches(measured["nodes"]), 1)
    projected_runs = runs["per_node_part"] * nodes + runs["per_batch_part"] * batches(nodes)
    return 1.2 * cpu_per_run * projected_runs / CORES + measured["setup_wall_s"] * nodes / measured["nodes"]


def module_run_parts(by_action: Dict[str, int], nodes: int) -> Dict[str, float]:
    """The run's module runs split into those per node and those per batch."""
    per_batch = sum(runs for action, runs in by_action.items() if action in BATCH_ACTIONS)
    per_node = sum(by_action.values()) - per_batch
    return {"per_node_part": round(per_node / nodes, 2), "per_batch_part": round(per_batch / batches(nodes), 2)}


def batches(nodes: int, percent: float = 10.0) -> int:
    size = max(1, int(nodes * percent / 100.0))
    return math.ceil(nodes / size)


def measure(options: Options, nodes: int, budget_s: Optional[float], strategy: str = "linear") -> Dict[str, Any]:
    cluster = Cluster.up(options.workdir / f"rollout_{nodes}_{strategy}", nodes=nodes, gpus=8, model="a100",
                         mig_layout=START_LAYOUT, plugin_delay=PLUGIN_DELAY_S)
    try:
        common = {"k8s_gpu_mig_strategy": "mixed", "mig_rollout_batch": BATCH, "mig_reconfigure_wait_timeout": 180}
        converged = converge_by_construction(cluster, "mixed", START_CONFIG, START_RESOURCE, START_COUNT)
        recorded = record_boot_layout(cluster, START_CONFIG, forks=FORKS)
        setup_wall_s = converged.wall_s + recorded.wall_s
        left = None if budget_s is None else max(budget_s - setup_wall_s, 30.0)
        sim_cpu = cluster.cpu_seconds()
        run = playbook(cluster, "mig-reconfigure.yml", dict(common, mig_config_name=TARGET_CONFIG),
                       forks=FORKS, timeout=left, strategy=strategy)
        sim_cpu = cluster.cpu_seconds() - sim_cpu
        states = node_states(cluster, TARGET_CONFIG)
        moved = nodes_advertising(cluster, TARGET_RESOURCE, TARGET_COUNT)
    finally:
        cluster.down()
    succeeded = states.get("success", 0)
    finished = run.rc == 0 and succeeded == nodes and moved == nodes
    result = {
        "nodes": nodes,
        "strategy": strategy,
        "finished": finished,
        "setup_wall_s": rounded(setup_wall_s, 1),
        "nodes_advertising_new_layout": moved,
        "nodes_succeeded": succeeded,
        "rc": run.rc,
        "wall_s": rounded(run.wall_s, 1),
        "wall_per_node_s": rounded(run.wall_s / nodes, 3),
        "controller_cpu_s": rounded(run.cpu_s, 1),
        "controller_cpu_per_node_s": rounded(run.cpu_s / nodes, 3),
        **cpu_split(run, nodes),
        "task_rounds_per_node": run.task_rounds(cluster.nodes)["per_node"],
        "module_runs_per_node": run.module_runs(cluster.nodes)["per_node"],
        "module_runs": module_run_parts(run.module_runs_by_action(), nodes),
        "simulator_cpu_s": rounded(sim_cpu, 1),
        "simulator_share_of_wall": rounded(sim_cpu / run.wall_s, 3) if run.wall_s else None,
        "simulator_share_of_cpu": rounded(sim_cpu / (sim_cpu + run.cpu_s), 3) if run.cpu_s else None,
        "seed_001_floor_batched_s": batches(nodes) * SEED_SLEEP_S,
        "seed_001_floor_node_by_node_s": nodes * SEED_SLEEP_S,
    }
    if not finished:
        result["failures"] = run.failures()
    return result


def run(options: Options) -> Dict[str, Any]:
    started = time.perf_counter()
    sizes = options.sizes or (QUICK_SIZES if options.quick else SIZES)
    measured_strategies = strategies()
    results: List[Dict[str, Any]] = []
    for nodes in sizes:
        # Each size under each strategy in turn, on a fleet of its own (a rollout changes the fleet).
        for strategy in measured_strategies:
            results.append(plan_or_measure(options, nodes, strategy,
                                           [r for r in results if r["strategy"] == strategy]))

    growth_wall, growth_cpu, largest = {}, {}, {}
    for strategy in measured_strategies:
        finished = [r for r in results if r["strategy"] == strategy and r.get("finished")]
        growth_wall[strategy] = rounded(growth_exponent([r["nodes"] for r in finished], [r["wall_s"] for r in finished]), 2)
        growth_cpu[strategy] = rounded(
            growth_exponent([r["nodes"] for r in finished], [r["controller_cpu_s"] for r in finished]), 2)
        largest[strategy] = finished[-1]["nodes"] if finished else 0
    return {
        "figure": "rollout_scaling",
        "unit": "rolling reconfigure, 8 GPUs per node, batch 10 %, forks 10, under each strategy",
        "change": "7 x 1g.5gb -> all-2g.10gb on every GPU (A100-SXM4-40GB, mixed strategy)",
        "plugin_delay_s": PLUGIN_DELAY_S,
        "strategies": measured_strategies,
        "sizes": results,
        "growth_exponent_wall": growth_wall,
        "growth_exponent_controller_cpu": growth_cpu,
        "largest_finished": largest,
        "target": "growth exponent <= 1 (linear or better), 1,000 nodes finishing",
        "wall_s": rounded(time.perf_counter() - started, 1),
    }


def plan_or_measure(options: Options, nodes: int, strategy: str, earlier: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Measure one size under one strategy, or say why not (``earlier``: the smaller sizes under it)."""
    remaining = options.remaining_s()
    too_big = strategy_does_not_fit(strategy, nodes)
    if too_big:
        return {"nodes": nodes, "strategy": strategy, "finished": False, "not_run": True, "reason": too_big}
    if earlier and not earlier[-1].get("finished"):
        return {"nodes": nodes, "strategy": strategy, "finished": False, "not_run": True,
                "reason": f"the {earlier[-1]['nodes']}-node size did not finish"}
    projected = project_wall_s(earlier[-1], nodes) if earlier else None
    if projected is not None and projected + MARGIN_S > remaining:
        return {"nodes": nodes, "strategy": strategy, "finished": False, "not_run": True,
                "projected_wall_s": rounded(projected, 0),
                "reason": f"projected {projected:.0f} s (controller CPU per module run at {earlier[-1]['nodes']} "
                          f"nodes, over {CORES} cores) > {max(remaining, 0):.0f} s left of the run's budget"}
    budget = None if remaining == float("inf") else max(remaining - MARGIN_S, 60.0)
    return measure(options, nodes, budget, strategy)
