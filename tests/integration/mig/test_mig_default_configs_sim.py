# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every named config of files/mig-configs/default.yaml, on every simulated MIG model: it applies
as written, or it fails validation before any NVML mutation. Never half-applied."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from gpuops_sim.nvml.models import one_per_profile_table

DEFAULT = Path(__file__).resolve().parents[3] / "files" / "mig-configs" / "default.yaml"
# One model per profile table: models that share a table (A100 / A800, H100 / H800, ...) behave alike.
MIG_MODELS = one_per_profile_table()


def shape(profile: str):
    """(slices, suffix): what stays when a driver names the memory differently."""
    base, _unit, suffix = profile.partition("gb")
    return base.split(".")[0], suffix


def deciding_entry(entries, pci_device_id: int):
    """The last entry that matches GPU 0 of this model (mig-parted applies entries in order)."""
    decided = None
    for entry in entries:
        filters = entry.get("device-filter")
        if isinstance(filters, str):
            filters = [filters]
        if filters and not any(int(f.split(":")[0], 0) == pci_device_id for f in filters):
            continue
        if entry["devices"] != "all" and 0 not in entry["devices"]:
            continue
        decided = entry
    return decided


@pytest.mark.skipif(not DEFAULT.exists(), reason="files/mig-configs/default.yaml not written yet")
@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.name)
def test_every_named_config_applies_or_fails_cleanly(node, model):
    configs = yaml.safe_load(DEFAULT.read_text())
    outcomes = Counter()
    for name, entries in configs["mig-configs"].items():
        node.init(model.name, count=1, mig_enabled=False)
        before = node.path.read_bytes()
        node.calls.clear()
        result = node.run("mig_config", {"config": configs, "config_name": name, "reset_command": node.reset_command})
        entry = deciding_entry(entries, model.pci_device_id)
        if result.get("failed"):
            outcomes["refused"] += 1
            assert node.calls == [] and node.path.read_bytes() == before, (name, result["msg"])
            assert entry is not None and entry["mig-enabled"], (name, result["msg"])
            continue
        outcomes["applied"] += 1
        gpu = node.show()["gpus"][0]
        if entry is None:
            assert result["plan"]["unmatched_gpus"] == [0] and node.calls == [], name
            continue
        assert gpu["mig"]["current"] is entry["mig-enabled"], name
        wanted = Counter({shape(p): n for p, n in (entry.get("mig-devices") or {}).items() if n})
        got = Counter()
        for gi in gpu["gpu_instances"]:
            for ci in gi["compute_instances"]:
                got[shape(ci["profile"])] += 1
        assert got == wanted, (name, got, wanted)
        node.calls.clear()
        again = node.run("mig_config", {"config": configs, "config_name": name, "reset_command": node.reset_command})
        assert again["changed"] is False and node.calls == [], name
    # Each model has its own all-<profile> configs, plus all-disabled / all-enabled / all-balanced.
    assert outcomes["applied"] >= len(model.gi_profiles) + 3, outcomes
