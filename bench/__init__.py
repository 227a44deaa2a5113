# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmarks of gpuops.nvidia on the simulator (`make bench`, `python -m bench [--quick]`).

Each figure is measured side by side with its baseline in the same run and printed as one JSON
object; the set is saved under bench/results/ (see bench/cli.py and docs/index.md).
"""
