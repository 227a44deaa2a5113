# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the benchmarks, print one JSON object per figure, save them under bench/results/."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from bench.common import RESULTS, ROOT, Options, rounded

# Cheap and fixed-size first; rollout_scaling last, since it skips the sizes that do not fit in
# what is left of the budget (noop_overhead is stopped at the budget).
FIGURES = ("plan_speed", "demand_planner", "pods_disrupted", "noop_overhead", "driver_rollout", "rollout_scaling")
# `make bench` must finish within 20 minutes on the 2-core CI machine; keep a minute in hand.
DEFAULT_BUDGET_S = 19 * 60


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run, a minute or two)")
    parser.add_argument("--only", action="append", choices=FIGURES, metavar="FIGURE",
                        help=f"run only this figure (repeatable): {', '.join(FIGURES)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the result files go (default bench/results)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch directory for simulated clusters (default: a fresh one under .tmp/)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help="time budget of the whole run in seconds; rollout_scaling skips a size it cannot finish "
                             "within it, and says so (default %(default)s; 0: no budget)")
    parser.add_argument("--sizes", type=lambda text: tuple(int(n) for n in text.split(",")),
                        help="rollout_scaling fleet sizes, comma separated (default 10,100,1000; quick 2,4)")
    parser.add_argument("--noop-nodes", type=int, default=None,
                        help="noop_overhead fleet size (default 100; quick 4)")
    parser.add_argument("--driver-nodes", type=int, default=None,
                        help="driver_rollout fleet size (default 100; quick 4)")
    return parser.parse_args(list(argv))


def run_figure(name: str, options: Options) -> Dict[str, Any]:
    module = importlib.import_module(f"bench.{name}")
    start = time.perf_counter()
    try:
        figure = module.run(options)
    except Exception as exc:  # pylint: disable=broad-except
        # A broken figure is reported as such; the others still run and are saved.
        figure = {"figure": name, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}
    figure.setdefault("wall_s", rounded(time.perf_counter() - start, 2))
    figure["quick"] = options.quick
    return figure


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    names: List[str] = [n for n in FIGURES if not args.only or n in args.only]
    scratch_parent = ROOT / ".tmp"
    scratch_parent.mkdir(exist_ok=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-", dir=scratch_parent))
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s if args.budget_s > 0 else None
    options = Options(quick=args.quick, workdir=workdir, out=args.out, deadline=deadline, sizes=args.sizes,
                      noop_nodes=args.noop_nodes, driver_nodes=args.driver_nodes)

    from bench.common import write_results  # pylint: disable=import-outside-toplevel

    start = time.perf_counter()
    figures = []
    for name in names:
        figure = run_figure(name, options)
        figures.append(figure)
        print(json.dumps({k: v for k, v in figure.items() if k != "traceback"}, sort_keys=False), flush=True)
        if "traceback" in figure:
            print(figure["traceback"], file=sys.stderr, flush=True)
    total = time.perf_counter() - start
    path = write_results(figures, options, total)
    print(f"# {len(figures)} figures in {total:.0f} s, saved to {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}",
          file=sys.stderr)
    if not args.keep and args.workdir is None:
        import shutil  # pylint: disable=import-outside-toplevel

        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any("error" in f for f in figures) else 0
