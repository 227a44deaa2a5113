# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Markdown view of a results document (bench/results/latest.md)."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Iterator, List, Mapping, Tuple


def _get(figure: Mapping[str, Any], dotted: str) -> Any:
    value: Any = figure
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _headline_noop(f: Mapping[str, Any]) -> Tuple[str, str, str]:
    by_strategy = f.get("by_strategy") or {}
    if not by_strategy:
        return ("no-op re-run ÷ `ansible -m ping` floor", f"{_get(f, 'ratio')}", "≤ 3")
    parts = [f"{name} {_get(one, 'ratio')} ({_get(one, 'task_rounds.per_node')} task rounds per node)"
             for name, one in by_strategy.items()]
    return (f"no-op re-run ÷ default-strategy `ansible -m ping` floor, {f.get('nodes')} nodes",
            ", ".join(parts), str(f.get("target", "")).replace("<=", "≤"))


def _headline_pods(f: Mapping[str, Any]) -> Tuple[str, str, str]:
    return ("pods evicted to re-lay one GPU: collection : seed-001",
            f"{_get(f, 'collection.evicted')} : {_get(f, 'seed_001.evicted')}", "1 : 8")


def _headline_rollout(f: Mapping[str, Any]) -> Tuple[str, str, str]:
    exponents = _get(f, "growth_exponent_wall")
    if not isinstance(exponents, Mapping):  # results from before the strategies were compared
        exponents = {"linear": exponents}
    parts = []
    for strategy, exponent in exponents.items():
        finished = [s for s in f.get("sizes") or [] if s.get("finished") and s.get("strategy", "linear") == strategy]
        largest = finished[-1] if finished else {}
        parts.append(f"{strategy}: {'– (one size)' if exponent is None else exponent} (largest finished: "
                     f"{largest.get('nodes', 'none')} nodes, {largest.get('wall_s', '-')} s, "
                     f"{largest.get('controller_cpu_per_node_s', '-')} CPU s per node"
                     + (f", of which Ansible's own {largest['ansible_cpu_per_node_s']}"
                        if largest.get("ansible_cpu_per_node_s") is not None else "") + ")")
    return ("rollout wall-time growth exponent (nodes)", "; ".join(parts), "≤ 1, 1,000 nodes finish")


def _headline_plan(f: Mapping[str, Any]) -> Tuple[str, str, str]:
    return ("`mig_config` plan per node: median / worst", f"{_get(f, 'median_ms')} / {_get(f, 'worst_ms')} ms", "–")


def _headline_demand(f: Mapping[str, Any]) -> Tuple[str, str, str]:
    return (f"demand plan of {_get(f, 'nodes')} nodes × 8 GPUs, {_get(f, 'pending_pods')} pending pods: median wall / CPU",
            f"{_get(f, 'median_s')} / {_get(f, 'median_cpu_s')} s", f"< {_get(f, 'target_s')} s")


def _headline_driver(f: Mapping[str, Any]) -> Tuple[str, str, str]:
    if f.get("not_run"):
        return (f"rolling driver upgrade of {f.get('nodes')} nodes", f"not run: {f.get('reason')}", "–")
    return (f"rolling driver upgrade of {f.get('nodes')} nodes: wall / controller CPU per node",
            f"{f.get('wall_s')} s / {f.get('controller_cpu_per_node_s')} s ({f.get('nodes_upgraded')} upgraded)", "–")


HEADLINES: Dict[str, Callable[[Mapping[str, Any]], Tuple[str, str, str]]] = {
    "noop_overhead": _headline_noop,
    "pods_disrupted": _headline_pods,
    "rollout_scaling": _headline_rollout,
    "driver_rollout": _headline_driver,
    "plan_speed": _headline_plan,
    "demand_planner": _headline_demand,
}


def _flatten(prefix: str, value: Any) -> Iterator[Tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else str(key), inner)
    else:
        yield prefix, value


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|")


def _size_table(sizes: List[Mapping[str, Any]]) -> List[str]:
    keys: List[str] = []
    for row in sizes:
        for key in dict(_flatten("", row)):
            if key not in keys:
                keys.append(key)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in sizes:
        flat = dict(_flatten("", row))
        lines.append("| " + " | ".join(_cell(flat.get(k, "")) for k in keys) + " |")
    return lines


def render(document: Mapping[str, Any]) -> str:
    env = document.get("environment", {})
    lines = [
        "# Benchmark results" + (" (quick mode)" if document.get("quick") else ""),
        "",
        f"Generated {document.get('generated')} by `python -m bench{' --quick' if document.get('quick') else ''}` "
        f"on {env.get('cpus')} CPUs, Python {env.get('python')}; all figures in {document.get('total_wall_s')} s. "
        "Each figure and its baseline were measured side by side in this run, on the simulator "
        "(`gpuops_sim`). How each is measured: docs/index.md#benchmarks and bench/*.py.",
        "",
        "| figure | measured | target |",
        "|---|---|---|",
    ]
    figures = document.get("figures", [])
    for figure in figures:
        name = figure.get("figure", "?")
        if "error" in figure:
            lines.append(f"| {name} | **failed**: {_cell(figure['error'])} | |")
            continue
        title, value, target = HEADLINES.get(name, lambda f: (name, "", ""))(figure)
        lines.append(f"| {name}: {title} | {value} | {target} |")
    for figure in figures:
        lines += ["", f"## {figure.get('figure')}", ""]
        if figure.get("notes"):
            lines += [str(note) for note in figure["notes"]] + [""]
        lines += ["| key | value |", "|---|---|"]
        for key, value in _flatten("", {k: v for k, v in figure.items() if k not in ("sizes", "notes", "traceback")}):
            if key.endswith("fewest_node_tasks"):
                value = f"{len(value)} tasks" if isinstance(value, list) else value
            lines.append(f"| {key} | {_cell(value)} |")
        if figure.get("sizes"):
            lines += [""] + _size_table(figure["sizes"])
    return "\n".join(lines) + "\n"
