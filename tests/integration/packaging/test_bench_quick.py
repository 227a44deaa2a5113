# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke test of the benchmark harness: `python -m bench --quick --only plan_speed` (about a second)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from packaging_helpers import ROOT  # pylint: disable=import-error


def test_quick_plan_speed_prints_and_saves_one_figure(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "plan_speed", "--out", str(tmp_path / "out"),
         "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [figure["figure"] for figure in printed] == ["plan_speed"]
    figure = printed[0]
    assert figure["quick"] is True
    assert figure["plans"] == figure["accepted_plans"] + figure["refused_plans"] > 0
    assert 0 < figure["median_ms"] <= figure["worst_ms"]
    saved = json.loads((tmp_path / "out" / "quick.json").read_text())
    assert saved["figures"][0]["median_ms"] == figure["median_ms"]
    assert "| plan_speed:" in (tmp_path / "out" / "quick.md").read_text()
