# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""demand_planner: how long `mig_demand_plan`'s planner takes for a fleet of 1,000 opted-in nodes.

Each node has 8 GPUs, A100 40GB and H100 80GB nodes alternating, read once per model through the
product's own NVML reader from a simulated node (so the planner sees what gpu_info reports). On
every node GPUs 0-5 are full of 1-slice devices that pods hold, and GPUs 6-7 full of free ones.
The pending pods: one 3-slice device each for 1,500 pods, a 2-slice device each for 300, and 100
pods that ask for three whole-GPU devices on one node, which no node can give (each is turned
down after every node was tried, the costliest case). Timed: `plan_demand` from its inputs to its
result, the median of a few runs; building the inputs is not timed.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Dict, List, Tuple

from bench.common import Options, median, rounded

GPUS_PER_NODE = 8
USED_GPUS = 6
MODELS = (("NVIDIA A100-SXM4-40GB", "1g.5gb", "3g.20gb", "2g.10gb", "7g.40gb"),
          ("NVIDIA H100 80GB HBM3", "1g.10gb", "3g.40gb", "2g.20gb", "7g.80gb"))
TARGET_S = 1.0


def node_gpus(model_name: str, profile: str, workdir: str) -> List[Dict[str, Any]]:
    """gpu_info's ``gpus`` for an 8-GPU node of the model, every GPU full of ``profile``."""
    import gpuops_sim.nvml as sim
    from gpuops_sim.k8s.cluster import layout_node
    from gpuops_sim.nvml.models import find_model

    from bench.plan_speed import read_gpus

    model = find_model(model_name)
    path = f"{workdir}/{model.pci_device_id:08X}.json"
    sim.init_node(path, model, GPUS_PER_NODE)
    slots = max(p.instance_count for p in model.gi_profiles if p.name == profile)
    layout_node(path, [profile] * slots)
    return [gpu.to_dict() for gpu in read_gpus(path)]


def fleet(nodes: int, workdir: str) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(pending pods, opted-in nodes) of the figure."""
    templates = [node_gpus(name, small, workdir) for name, small, _three, _two, _whole in MODELS]
    inputs = []
    for n in range(nodes):
        gpus = copy.deepcopy(templates[n % len(MODELS)])
        allocated = []
        for gpu in gpus:
            gpu["uuid"] = "GPU-%d-%d" % (n, gpu["index"])
            for instance in gpu["mig"]["instances"]:
                for device in instance["devices"]:
                    device["uuid"] = "MIG-%d-%d-%d" % (n, gpu["index"], instance["gi_id"])
                    if gpu["index"] < USED_GPUS:
                        allocated.append(device["uuid"])
        inputs.append({"name": "gpu-node-%04d" % n, "gpus": gpus, "allocated": allocated})
    pods = []
    for i in range(nodes * 3 // 2):
        pods.append({"namespace": "ml", "name": "three-%d" % i,
                     "requests": {"nvidia.com/mig-" + MODELS[i % 2][2]: 1}})
    for i in range(nodes * 3 // 10):
        pods.append({"namespace": "ml", "name": "two-%d" % i, "requests": {"nvidia.com/mig-" + MODELS[i % 2][3]: 1}})
    for i in range(nodes // 10):
        pods.append({"namespace": "ml", "name": "whole-%d" % i, "requests": {"nvidia.com/mig-" + MODELS[i % 2][4]: 3}})
    return pods, inputs


def run(options: Options) -> Dict[str, Any]:
    from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.demand import plan_demand

    wall = time.perf_counter()
    nodes = 100 if options.quick else 1000
    repeats = 5
    workdir = options.workdir / "demand_planner"
    workdir.mkdir(parents=True, exist_ok=True)
    pods, inputs = fleet(nodes, str(workdir))
    samples, cpu = [], []
    result: Dict[str, Any] = {}
    for _repeat in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = plan_demand(pods, inputs)
        samples.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    changed_gpus = sum(len(node["gpus"]) for node in result["nodes"].values())
    kept = sum(1 for node in result["nodes"].values() for gpu in node["gpus"] if gpu["kept_in_use"])
    return {
        "figure": "demand_planner",
        "unit": "s per plan of the whole fleet",
        "nodes": nodes,
        "gpus": nodes * GPUS_PER_NODE,
        "gpus_in_use": nodes * USED_GPUS,
        "pending_pods": len(pods),
        "repeats": repeats,
        "median_s": rounded(median(samples)),
        "worst_s": rounded(max(samples)),
        # On a shared machine the wall time includes waiting for a core; the CPU time does not.
        "median_cpu_s": rounded(median(cpu)),
        "target_s": TARGET_S,
        "served_pods": len(result["served"]),
        "unsatisfied_pods": len(result["unsatisfied"]),
        "changed_nodes": len(result["assignments"]),
        "changed_gpus": changed_gpus,
        "changed_gpus_in_use": kept,
        "named_configs": len(result["mig_configs"]),
        "wall_s": rounded(time.perf_counter() - wall, 2),
    }
