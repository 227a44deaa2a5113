# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The shipped named configs on an 8x A100-SXM4-40GB node, under each MIG strategy."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.resources import expected_resources, validate_strategy
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import load_spec_text

DEFAULT_CONFIG = Path(__file__).resolve().parents[3] / "files" / "mig-configs" / "default.yaml"
SPEC = load_spec_text(DEFAULT_CONFIG.read_text(encoding="utf-8"))


def layout_on(gpus: list, name: str) -> dict:
    """mig-parted's walk: every matching entry, in order, for every GPU."""
    layout = {}
    for gpu in gpus:
        for entry in SPEC.configs[name]:
            if entry.matches(gpu["index"], gpu["pci_device_id"], gpu["pci_subsystem_id"]):
                layout[gpu["index"]] = {"mig_enabled": entry.mig_enabled, "devices": dict(entry.mig_devices)}
    return layout


# Configs that fit an A100 40GB, with the per-node allocatable under mixed.
A100_40GB_MIXED = {
    "all-disabled": {"nvidia.com/gpu": 8},
    "all-enabled": {},
    "all-1g.5gb": {"nvidia.com/mig-1g.5gb": 56},
    "all-1g.5gb.me": {"nvidia.com/mig-1g.5gb.me": 8},
    "all-1g.10gb": {"nvidia.com/mig-1g.10gb": 32},
    "all-2g.10gb": {"nvidia.com/mig-2g.10gb": 24},
    "all-3g.20gb": {"nvidia.com/mig-3g.20gb": 16},
    "all-4g.20gb": {"nvidia.com/mig-4g.20gb": 8},
    "all-7g.40gb": {"nvidia.com/mig-7g.40gb": 8},
    "all-balanced": {"nvidia.com/mig-1g.5gb": 16, "nvidia.com/mig-2g.10gb": 8, "nvidia.com/mig-3g.20gb": 8},
}


@pytest.mark.parametrize("name, allocatable", sorted(A100_40GB_MIXED.items()))
def test_mixed(node_gpus, name: str, allocatable: dict) -> None:
    result = expected_resources(node_gpus(), layout_on(node_gpus(), name), "mixed")
    assert result["errors"] == []
    assert result["allocatable"] == allocatable


@pytest.mark.parametrize("name", sorted(A100_40GB_MIXED))
def test_single(node_gpus, name: str) -> None:
    gpus = node_gpus()
    result = expected_resources(gpus, layout_on(gpus, name), "single", node="dgx")
    if name in ("all-balanced", "all-enabled"):
        # Several profiles, or MIG on with nothing to advertise: the plugin refuses to start.
        assert result["errors"] and result["allocatable"] == {}
        assert validate_strategy(layout_on(gpus, name), "single", gpus=gpus, node="dgx") == result["errors"]
    else:
        assert result["errors"] == []
        assert result["allocatable"] == {"nvidia.com/gpu": sum(A100_40GB_MIXED[name].values()) or 8}


def test_configs_for_other_models_are_refused_on_an_a100_40gb(node_gpus) -> None:
    gpus = node_gpus(1)
    errors = expected_resources(gpus, layout_on(gpus, "all-1g.10gb.me"), "mixed", node="dgx")["errors"]
    assert errors == [
        "node dgx: GPU 0 (NVIDIA A100-SXM4-40GB) has no MIG profile 1g.10gb+me "
        "(it offers 1g.10gb, 1g.5gb, 1g.5gb+me, 2g.10gb, 3g.20gb, 4g.20gb, 7g.40gb)"
    ]
    # all-1g.35gb has no entry for this GPU: nothing applies, the GPU stays as it is.
    assert layout_on(gpus, "all-1g.35gb") == {}
