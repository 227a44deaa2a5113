# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What every benchmark shares: paths, statistics, CPU accounting, the result files.

The benchmarks sit between the product and the simulator: they may import both (the product
never imports gpuops_sim and gpuops_sim never imports the product).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS = ROOT / ".collections"
RESULTS = ROOT / "bench" / "results"
DEFAULT_CONFIGS = ROOT / "files" / "mig-configs" / "default.yaml"
PYTHON = sys.executable
BIN = Path(PYTHON).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))


@dataclass(frozen=True)
class Options:
    quick: bool
    workdir: Path      # scratch space for state files, inventories, clusters
    out: Path          # where the result files go
    deadline: Optional[float] = None   # time.monotonic() by which the whole run should be done
    sizes: Optional[Tuple[int, ...]] = None  # rollout_scaling sizes, when given on the command line
    noop_nodes: Optional[int] = None  # noop_overhead's fleet, when given on the command line
    driver_nodes: Optional[int] = None  # driver_rollout's fleet, when given on the command line

    def remaining_s(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def rounded(value: float, digits: int = 3) -> Optional[float]:
    """``value`` rounded; None (JSON null) when it is not a number, such as the growth exponent of
    a single size: NaN is not JSON."""
    return round(value, digits) if math.isfinite(value) else None


def growth_exponent(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of log(value) over log(size): 1 is linear, below 1 sub-linear."""
    points = [(math.log(s), math.log(v)) for s, v in zip(sizes, values) if s > 0 and v > 0]
    if len(points) < 2:
        return float("nan")
    xs = [x for x, y in points]
    ys = [y for x, y in points]
    mean_x = sum(xs) / len(xs)
    mean_y = sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else float("nan")


def process_cpu_seconds(pid: int) -> Optional[float]:
    """User+system CPU of a live process and its reaped children (Linux /proc), or None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] is the state (field 3); utime, stime, cutime, cstime are fields 14-17.
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    """CPU of every child process this process has waited for (ansible and its workers)."""
    usage = os.times()
    return usage.children_user + usage.children_system


def self_cpu_seconds() -> float:
    usage = os.times()
    return usage.user + usage.system


class Stopwatch:
    """Wall time plus the CPU of this process and of its waited-for children over a block."""

    def __enter__(self) -> "Stopwatch":
        self.wall = time.perf_counter()
        self.cpu_self = self_cpu_seconds()
        self.cpu_children = children_cpu_seconds()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu_self = self_cpu_seconds() - self.cpu_self
        self.cpu_children = children_cpu_seconds() - self.cpu_children


def environment() -> Dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": sys.platform,
    }


def write_results(figures: List[Dict[str, Any]], options: Options, total_wall_s: float) -> Path:
    """Save the figures as JSON (one object per figure) and as a Markdown table; return the JSON path."""
    options.out.mkdir(parents=True, exist_ok=True)
    stem = "quick" if options.quick else "latest"
    document = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": options.quick,
        "environment": environment(),
        "total_wall_s": rounded(total_wall_s, 1),
        "figures": figures,
    }
    json_path = options.out / f"{stem}.json"
    json_path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    for figure in figures:
        (options.out / f"{stem}-{figure['figure']}.json").write_text(json.dumps(figure, indent=2, allow_nan=False) + "\n")
    (options.out / f"{stem}.md").write_text(markdown(document))
    return json_path


def markdown(document: Mapping[str, Any]) -> str:
    from bench.report import render  # pylint: disable=import-outside-toplevel

    return render(document)


def cpu_split(run: Any, nodes: int) -> Dict[str, Any]:
    """An AnsibleRun's controller CPU split into Ansible's own (ansible-playbook, its workers, the API
    host's modules: what a real controller pays) and the simulated nodes' commands (their modules,
    which on a real fleet run on the nodes), per node; None where the run did not measure the split
    (under Mitogen a node's modules run in its interpreter, not in commands)."""
    if run.node_cpu_s is None:
        return {"ansible_cpu_per_node_s": None, "node_commands_cpu_per_node_s": None}
    return {"ansible_cpu_per_node_s": rounded(run.ansible_cpu_s / nodes, 3),
            "node_commands_cpu_per_node_s": rounded(run.node_cpu_s / nodes, 3)}
