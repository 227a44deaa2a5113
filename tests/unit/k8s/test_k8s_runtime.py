# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""meta/runtime.yml lists every Kubernetes module in the k8s action group."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]


def test_runtime_yml_groups_every_k8s_module():
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    # Every module that talks to the API: those documented with the k8s auth options' action group.
    modules = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py")
                     if "gpuops.nvidia.k8s_auth_options.ACTION_GROUP" in p.read_text())
    assert "k8s_node_wait" in modules and "mig_demand_plan" in modules
    assert sorted(runtime["action_groups"]["k8s"]) == modules
