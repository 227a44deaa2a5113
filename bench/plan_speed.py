# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plan_speed: how long `mig_config` takes to plan one node, for every named config of
files/mig-configs/default.yaml on every simulated GPU model.

A plan is `build_plan` for a node of 8 GPUs, from two starting points: MIG disabled (a first
install) and every GPU full of 1-slice instances (a reconfiguration that must destroy and
re-create). The GPUs are read once per model through the product's own NVML reader from a
simulated node, so the plans see exactly what the module sees. A config the model cannot hold is
refused by the plan (PlanError); refusals are timed too, they are what validation costs.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bench.common import DEFAULT_CONFIGS, Options, median, rounded

GPUS_PER_NODE = 8
QUICK_MODELS = ("NVIDIA A100-SXM4-40GB", "NVIDIA H100 80GB HBM3")
# The models of the figure in docs/benchmarks.md (the simulator offers more).
FULL_MODELS = ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB", "NVIDIA A30", "NVIDIA H100 80GB HBM3", "NVIDIA H100 NVL",
               "NVIDIA H200", "Tesla T4", "NVIDIA L4")
QUICK_CONFIGS = ("all-disabled", "all-1g.5gb", "all-1g.10gb", "all-3g.40gb", "all-balanced", "all-7g.80gb")


def read_gpus(state_path: str) -> Tuple[Any, ...]:
    """The node's GPUs as the module reads them (product NVML reader on the simulated library)."""
    from ansible_collections.gpuops.nvidia.plugins.module_utils.nvml import open_nvml

    nvml = open_nvml({"GPUOPS_NVML_SIMULATOR": state_path})
    try:
        return tuple(nvml.read_node().gpus)
    finally:
        nvml.close()


def smallest_profile(model: Any) -> Optional[str]:
    profiles = [p for p in model.gi_profiles if p.slice_count == 1 and "+" not in p.name]
    return min(profiles, key=lambda p: p.memory_mib).name if profiles else None


def starting_points(model: Any, workdir: str) -> List[Tuple[str, Tuple[Any, ...]]]:
    """(label, GPUs) for each starting state of one model's node."""
    import gpuops_sim.nvml as sim
    from gpuops_sim.k8s.cluster import layout_node

    points = []
    path = f"{workdir}/{model.pci_device_id:08X}.json"
    sim.init_node(path, model, GPUS_PER_NODE)
    points.append(("mig-disabled", read_gpus(path)))
    profile = smallest_profile(model) if model.mig_capable else None
    if profile:
        slots = max(p.instance_count for p in model.gi_profiles if p.name == profile)
        layout_node(path, [profile] * slots)
        points.append((f"all-{profile}", read_gpus(path)))
    return points


def time_plan(config: str, entries: Sequence[Any], gpus: Sequence[Any], repeats: int) -> Tuple[float, bool]:
    """Median seconds of one build_plan over ``repeats`` runs, and whether the plan was accepted."""
    from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.plan import PlanError, build_plan

    samples = []
    accepted = True
    for _repeat in range(repeats):
        start = time.perf_counter()
        try:
            build_plan(config, entries, gpus)
        except PlanError:
            accepted = False
        samples.append(time.perf_counter() - start)
    return median(samples), accepted


def run(options: Options) -> Dict[str, Any]:
    from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import load_spec_text
    from gpuops_sim.nvml.models import MODELS

    wall = time.perf_counter()
    text = DEFAULT_CONFIGS.read_text()
    start = time.perf_counter()
    spec = load_spec_text(text, str(DEFAULT_CONFIGS))
    parse_s = time.perf_counter() - start

    models = [m for m in MODELS if m.name in (QUICK_MODELS if options.quick else FULL_MODELS)]
    names = [n for n in spec.names() if not options.quick or n in QUICK_CONFIGS]
    repeats = 3 if options.quick else 9
    workdir = options.workdir / "plan_speed"
    workdir.mkdir(parents=True, exist_ok=True)

    samples: List[Tuple[float, str, str, str, bool]] = []
    for model in models:
        for start_label, gpus in starting_points(model, str(workdir)):
            for name in names:
                entries = spec.select(name)[1]
                seconds, accepted = time_plan(name, entries, gpus, repeats)
                samples.append((seconds, model.name, start_label, name, accepted))

    times = [s[0] for s in samples]
    accepted = [s[0] for s in samples if s[4]]
    refused = [s[0] for s in samples if not s[4]]
    worst = max(samples, key=lambda s: s[0])
    return {
        "figure": "plan_speed",
        "unit": "ms per plan (one node of 8 GPUs)",
        "models": len(models),
        "named_configs": len(names),
        "starting_points": ["MIG disabled", "every GPU full of its smallest 1-slice profile"],
        "plans": len(samples),
        "repeats_per_plan": repeats,
        "median_ms": rounded(median(times) * 1e3),
        "worst_ms": rounded(worst[0] * 1e3),
        "worst_plan": {"model": worst[1], "start": worst[2], "config": worst[3], "accepted": worst[4]},
        "accepted_plans": len(accepted),
        "accepted_median_ms": rounded(median(accepted) * 1e3),
        "refused_plans": len(refused),
        "refused_median_ms": rounded(median(refused) * 1e3),
        "spec_parse_ms": rounded(parse_s * 1e3),
        "wall_s": rounded(time.perf_counter() - wall, 2),
    }
