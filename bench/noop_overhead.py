# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""noop_overhead: an idempotent re-run of playbooks/nvidia-gpu-operator.yml on a converged fleet,
divided by the floor for the same inventory (`ansible all -m ansible.builtin.ping`, same forks).

The fleet (100 nodes × 8 A100-SXM4-40GB, the issue's size; quick mode 4) is converged by
construction: every GPU already holds 7 × 1g.5gb, the collection's device plugin role has deployed
the plugin and GFD and switched them on, the node labels record the config, and the collection's
mig role has recorded the layout for the boot-time service (on one node, copied to the others; a
full rollout pass per node would cost more than the benchmark budget; see
bench.sim.converge_by_construction and bench.sim.record_boot_layout). With
gpuops_nvml_recheck_interval set (an hour), as a site that wants its no-op runs cheap sets it, a
first run of the playbook reads every node through NVML, finds it converged and records that on the
node (its figures are reported as ``recording_run``: the cost of a run that reads every node). The
measured run comes next, confirms the nodes from one Node list, and must change nothing, under each
strategy in turn: Ansible's default (linear) and Mitogen's
mitogen_linear (where Mitogen is installed; each run starts its own interpreters, as a fresh run on
a real fleet would). The floor, `ansible -m ping` under the default strategy, is measured right
before and right after them, and averaged; each other strategy's own ping is reported beside it.

Also counted in each measured run: task rounds per node (tasks that reached the node, run or
skipped: each costs Ansible's per-host, per-task overhead), module runs per node (a benchmark callback) and Kubernetes API
requests per node (the emulator's request log, GET /_sim/requests).
"""

from __future__ import annotations

import time
from typing import Any, Dict

from bench.common import Options, cpu_split, rounded
from bench.sim import (BenchError, Cluster, converge_by_construction, ping, playbook,
                       record_boot_layout, require_success, requests_summary, strategies,
                       strategy_does_not_fit)

LAYOUT = "1g.5gb:7"
CONFIG = "all-1g.5gb"
RESOURCE, PER_NODE = "nvidia.com/mig-1g.5gb", 7 * 8
FULL_NODES = 100
#: gpuops_nvml_recheck_interval of the runs: a node's GPUs are read again once its record is this old.
RECHECK_S = 3600


def measure_noop(cluster: Cluster, strategy: str, extra_vars: Dict[str, Any], forks: int, options: Options) -> Dict[str, Any]:
    """One no-op run of the playbook under ``strategy``: wall, controller CPU, rounds and runs per node."""
    cluster.clear_requests()
    sim_cpu = cluster.cpu_seconds()
    remaining = options.remaining_s()
    noop = playbook(cluster, "nvidia-gpu-operator.yml", extra_vars, forks=forks, strategy=strategy,
                    timeout=None if remaining == float("inf") else max(remaining - 60, 60))
    sim_cpu = cluster.cpu_seconds() - sim_cpu
    records = cluster.requests()
    require_success(noop, f"the no-op run ({strategy})")
    if noop.changed:
        raise BenchError(f"the re-run on a converged fleet changed {noop.changed} task(s) under {strategy}; "
                         "it must change nothing")
    return {
        "run": noop,
        "wall_s": rounded(noop.wall_s, 1),
        "controller_cpu_s": rounded(noop.cpu_s, 1),
        **cpu_split(noop, len(cluster.nodes)),
        "changed": noop.changed,
        "task_rounds": noop.task_rounds(cluster.nodes),
        "module_runs": noop.module_runs(cluster.nodes),
        # Where the no-op run's time goes: each task's wall time over all hosts.
        "slowest_tasks_s": noop.slowest_tasks(),
        "api_requests": requests_summary(records, len(cluster.nodes)),
        "simulator": {"cpu_s": rounded(sim_cpu, 1), "share_of_wall": rounded(sim_cpu / noop.wall_s, 3),
                      "share_of_cpu": rounded(sim_cpu / (sim_cpu + noop.cpu_s), 3)},
    }


def run(options: Options) -> Dict[str, Any]:
    started = time.perf_counter()
    nodes = 4 if options.quick else (options.noop_nodes or FULL_NODES)
    forks = 10
    extra_vars = {"k8s_gpu_mig_strategy": "mixed", "mig_config_name": CONFIG, "mig_rollout_batch": "10%",
                  "mig_reconfigure_wait_timeout": 180, "gpuops_nvml_recheck_interval": RECHECK_S}
    left_out = {s: why for s in strategies() if (why := strategy_does_not_fit(s, nodes))}
    measured = [s for s in strategies() if s not in left_out]
    cluster = Cluster.up(options.workdir / "noop_overhead", nodes=nodes, gpus=8, model="a100",
                         mig_layout=LAYOUT, plugin_delay=0.2)
    try:
        converge = converge_by_construction(cluster, "mixed", CONFIG, RESOURCE, PER_NODE)
        # What the rollout also leaves on a converged node: the layout recorded for the boot-time service.
        warm_up = record_boot_layout(cluster, CONFIG, forks=forks)
        # What a run leaves on the nodes it read and found converged: the record the measured runs confirm.
        recording = playbook(cluster, "nvidia-gpu-operator.yml", extra_vars, forks=forks)
        require_success(recording, "the run that records the converged nodes")
        recording_rounds = recording.task_rounds(cluster.nodes)

        # The floor: Ansible's default strategy, right before and right after the measured runs.
        floor_before = ping(cluster, forks)
        require_success(floor_before, "ansible all -m ping")
        runs = {strategy: measure_noop(cluster, strategy, extra_vars, forks, options) for strategy in measured}
        floor_after = ping(cluster, forks)
        require_success(floor_after, "ansible all -m ping")
        # Each strategy's own ping, for reference (the targets divide by the default strategy's).
        pings = {strategy: ping(cluster, forks, strategy=strategy) for strategy in measured if strategy != "linear"}
        for strategy, pinged in pings.items():
            require_success(pinged, f"ansible all -m ping ({strategy})")
    finally:
        cluster.down()

    floor_wall = (floor_before.wall_s + floor_after.wall_s) / 2
    floor_cpu = (floor_before.cpu_s + floor_after.cpu_s) / 2
    by_strategy = {}
    for strategy, result in runs.items():
        noop = result.pop("run")
        by_strategy[strategy] = {
            "ratio": rounded(noop.wall_s / floor_wall, 2),
            "cpu_ratio": rounded(noop.cpu_s / floor_cpu, 2),
            **result,
        }
        if strategy in pings:
            by_strategy[strategy]["own_ping"] = {"wall_s": rounded(pings[strategy].wall_s, 1),
                                                 "controller_cpu_s": rounded(pings[strategy].cpu_s, 1)}
    best = min(by_strategy, key=lambda s: by_strategy[s]["ratio"] or float("inf"))
    return {
        "figure": "noop_overhead",
        "unit": "wall time of the no-op run / wall time of `ansible all -m ping` under Ansible's default "
                "strategy, same inventory and forks; the no-op run under each strategy",
        "nodes": nodes,
        "gpus_per_node": 8,
        "forks": forks,
        "strategies": measured,
        # The best strategy's ratio, and each strategy's below.
        "ratio": by_strategy[best]["ratio"],
        "best_strategy": best,
        "target": "<= 1.5 (any strategy)",
        "floor_ping": {"strategy": "linear", "wall_s": rounded(floor_wall, 1), "controller_cpu_s": rounded(floor_cpu, 1),
                       "runs_wall_s": [rounded(floor_before.wall_s, 1), rounded(floor_after.wall_s, 1)]},
        "by_strategy": by_strategy,
        "strategies_not_run": left_out,
        "setup": "converged by construction (bench.sim.converge_by_construction): layout in place, the "
                 "collection's device plugin role deployed and switched on, config labels written",
        "setup_wall_s": rounded(converge.wall_s, 1),
        "setup_mig_role": {"wall_s": rounded(warm_up.wall_s, 1), "changed_on_first_node": warm_up.changed},
        "gpuops_nvml_recheck_interval": RECHECK_S,
        # The first run on the converged fleet, linear: every node read through NVML, and recorded.
        "recording_run": {"wall_s": rounded(recording.wall_s, 1), "controller_cpu_s": rounded(recording.cpu_s, 1),
                          "ratio": rounded(recording.wall_s / floor_wall, 2), "changed": recording.changed,
                          "task_rounds": recording_rounds},
        "wall_s": rounded(time.perf_counter() - started, 1),
    }
