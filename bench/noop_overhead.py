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
bench.sim.converge_by_construction and bench.sim.record_boot_layout). The measured run comes
next and must change nothing. The floor is measured right before and right after it, and averaged.

Also counted in the measured run: module runs per node (a benchmark callback) and Kubernetes API
requests per node (the emulator's request log, GET /_sim/requests).
"""

from __future__ import annotations

import time
from typing import Any, Dict

from bench.common import Options, rounded
from bench.sim import (BenchError, Cluster, converge_by_construction, ping, playbook,
                       record_boot_layout, require_success, requests_summary)

LAYOUT = "1g.5gb:7"
CONFIG = "all-1g.5gb"
RESOURCE, PER_NODE = "nvidia.com/mig-1g.5gb", 7 * 8
FULL_NODES = 100


def run(options: Options) -> Dict[str, Any]:
    started = time.perf_counter()
    nodes = 4 if options.quick else FULL_NODES
    forks = 10
    extra_vars = {"k8s_gpu_mig_strategy": "mixed", "mig_config_name": CONFIG, "mig_rollout_batch": "10%",
                  "mig_reconfigure_wait_timeout": 180}
    cluster = Cluster.up(options.workdir / "noop_overhead", nodes=nodes, gpus=8, model="a100",
                         mig_layout=LAYOUT, plugin_delay=0.2)
    try:
        converge = converge_by_construction(cluster, "mixed", CONFIG, RESOURCE, PER_NODE)
        # What the rollout also leaves on a converged node: the layout recorded for the boot-time service.
        warm_up = record_boot_layout(cluster, CONFIG, forks=forks)

        floor_before = ping(cluster, forks)
        require_success(floor_before, "ansible all -m ping")
        cluster.clear_requests()
        sim_cpu = cluster.cpu_seconds()
        remaining = options.remaining_s()
        noop = playbook(cluster, "nvidia-gpu-operator.yml", extra_vars, forks=forks,
                        timeout=None if remaining == float("inf") else max(remaining - 60, 60))
        sim_cpu = cluster.cpu_seconds() - sim_cpu
        records = cluster.requests()
        require_success(noop, "the no-op run")
        floor_after = ping(cluster, forks)
        require_success(floor_after, "ansible all -m ping")
        if noop.changed:
            raise BenchError(f"the re-run on a converged fleet changed {noop.changed} task(s); it must change nothing")
    finally:
        cluster.down()

    floor_wall = (floor_before.wall_s + floor_after.wall_s) / 2
    floor_cpu = (floor_before.cpu_s + floor_after.cpu_s) / 2
    return {
        "figure": "noop_overhead",
        "unit": "wall time of the no-op run / wall time of `ansible all -m ping`, same inventory and forks",
        "nodes": nodes,
        "gpus_per_node": 8,
        "forks": forks,
        "ratio": rounded(noop.wall_s / floor_wall, 2),
        "target": "<= 3",
        "cpu_ratio": rounded(noop.cpu_s / floor_cpu, 2),
        "noop": {"wall_s": rounded(noop.wall_s, 1), "controller_cpu_s": rounded(noop.cpu_s, 1), "changed": noop.changed},
        "floor_ping": {"wall_s": rounded(floor_wall, 1), "controller_cpu_s": rounded(floor_cpu, 1),
                       "runs_wall_s": [rounded(floor_before.wall_s, 1), rounded(floor_after.wall_s, 1)]},
        "setup": "converged by construction (bench.sim.converge_by_construction): layout in place, the "
                 "collection's device plugin role deployed and switched on, config labels written",
        "setup_wall_s": rounded(converge.wall_s, 1),
        "setup_mig_role": {"wall_s": rounded(warm_up.wall_s, 1), "changed_on_first_node": warm_up.changed},
        "module_runs": noop.module_runs(cluster.nodes),
        # Where the no-op run's time goes: each task's wall time over all hosts.
        "slowest_tasks_s": noop.slowest_tasks(),
        "api_requests": requests_summary(records, nodes),
        "simulator": {"cpu_s": rounded(sim_cpu, 1), "share_of_wall": rounded(sim_cpu / noop.wall_s, 3),
                      "share_of_cpu": rounded(sim_cpu / (sim_cpu + noop.cpu_s), 3)},
        "wall_s": rounded(time.perf_counter() - started, 1),
    }
