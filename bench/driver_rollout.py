# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""driver_rollout: a rolling driver upgrade of 100 simulated nodes on this machine.

Every node has 8 × A100-SXM4-40GB laid out as 7 × 1g.5gb, starts converged by construction (as in
rollout_scaling: bench.sim.converge_by_construction and record_boot_layout) with the simulator's
default driver loaded, and is upgraded to another driver version with `playbooks/mig-reconfigure.yml`
and the driver settings of a site that installs the driver with its own command (the simulator's
``nvml driver --install``), batch 10 %, reboots allowed: each node is drained whole, the driver
installed, the node rebooted, the loaded driver checked through NVML, the layout re-applied and the
node released.

Reported: wall time, controller CPU (ansible-playbook and all it started) per node, and how many
nodes run the new driver with their driver upgrade state ``upgrade-done``. A size whose projected
time (PROJECTED_S_PER_NODE) does not fit what is left of the run's budget is not started, and the
result says so.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict

from bench.common import PYTHON, Options, cpu_split, rounded
from bench.sim import Cluster, converge_by_construction, playbook, record_boot_layout

NODES = 100
QUICK_NODES = 4
BATCH = "10%"
FORKS = 10
PLUGIN_DELAY_S = 1.0
CONFIG, RESOURCE, COUNT = "all-1g.5gb", "nvidia.com/mig-1g.5gb", 56
# The simulator's default driver is loaded on every node; this one is wanted.
WANTED = "570.86.15"
STATE_LABEL = "gpuops.io/driver-upgrade.state"
# Set-up and the measured run together, per node, on the 2-core machine: an estimate (2 nodes,
# batches of one node, took 117 s in all; 100 nodes run 10 nodes a batch). A size is not started
# when it would not finish within what is left of the budget.
PROJECTED_S_PER_NODE = 12.0
MARGIN_S = 30


def driver_settings(cluster: Cluster) -> Dict[str, Any]:
    """A site that installs the driver with its own command, here the simulator's."""
    state = str(cluster.directory / "nodes" / "{{ inventory_hostname }}.json")
    return {"nvidia_driver_install": True, "nvidia_driver_branch": WANTED.split(".", maxsplit=1)[0], "nvidia_driver_version": WANTED,
            "nvidia_driver_install_command": [str(PYTHON), "-m", "gpuops_sim", "nvml", "driver", "--state", state,
                                              "--install", "{version}"],
            "mig_allow_reboot": True}


def upgraded(cluster: Cluster) -> int:
    """GPU nodes whose NVML reports the wanted driver and whose driver upgrade state is upgrade-done."""
    items = cluster.get("/api/v1/nodes?labelSelector=nvidia.com%2Fgpu.present%3Dtrue")["items"]
    done = {n["metadata"]["name"] for n in items if (n["metadata"].get("labels") or {}).get(STATE_LABEL) == "upgrade-done"}
    count = 0
    for node in cluster.nodes:
        state = json.loads((cluster.directory / "nodes" / f"{node}.json").read_text())
        count += node in done and state.get("driver_version") == WANTED
    return count


def run(options: Options) -> Dict[str, Any]:
    started = time.perf_counter()
    nodes = options.driver_nodes or (QUICK_NODES if options.quick else NODES)
    figure: Dict[str, Any] = {"figure": "driver_rollout", "nodes": nodes,
                              "unit": "rolling driver upgrade, 8 GPUs per node, batch 10 %, forks 10",
                              "change": f"simulator default driver -> {WANTED} on every node (drain, install, reboot, check)"}
    remaining = options.remaining_s()
    projected = PROJECTED_S_PER_NODE * nodes
    if projected + MARGIN_S > remaining:
        figure.update(finished=False, not_run=True, projected_wall_s=rounded(projected, 0),
                      reason=f"projected {projected:.0f} s > {max(remaining, 0):.0f} s left of the run's budget")
        return figure
    cluster = Cluster.up(options.workdir / f"driver_rollout_{nodes}", nodes=nodes, gpus=8, model="a100",
                         mig_layout="1g.5gb:7", plugin_delay=PLUGIN_DELAY_S)
    try:
        converged = converge_by_construction(cluster, "mixed", CONFIG, RESOURCE, COUNT)
        recorded = record_boot_layout(cluster, CONFIG, forks=FORKS)
        left = None if remaining == float("inf") else max(remaining - MARGIN_S - converged.wall_s - recorded.wall_s, 60.0)
        measured = playbook(cluster, "mig-reconfigure.yml",
                            dict(driver_settings(cluster), k8s_gpu_mig_strategy="mixed", mig_config_name=CONFIG,
                                 mig_rollout_batch=BATCH, mig_reconfigure_wait_timeout=180),
                            forks=FORKS, timeout=left)
        done = upgraded(cluster)
    finally:
        cluster.down()
    finished = measured.rc == 0 and done == nodes
    figure.update({
        "finished": finished,
        "rc": measured.rc,
        "nodes_upgraded": done,
        "setup_wall_s": rounded(converged.wall_s + recorded.wall_s, 1),
        "wall_s": rounded(measured.wall_s, 1),
        "wall_per_node_s": rounded(measured.wall_s / nodes, 3),
        "controller_cpu_s": rounded(measured.cpu_s, 1),
        "controller_cpu_per_node_s": rounded(measured.cpu_s / nodes, 3),
        **cpu_split(measured, nodes),
        "total_wall_s": rounded(time.perf_counter() - started, 1),
    })
    if not finished:
        figure["failures"] = measured.failures()
    return figure
