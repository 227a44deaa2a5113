# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""gpu_info-shaped GPUs (docs/architecture.md contract 5) for the resources model tests."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest


# name: (id, slices, memory MiB, SMs, CE, DEC, ENC, JPEG, OFA, instance_count, placement starts, placement size)
A100_40GB_PROFILES = {
    "1g.5gb": (19, 1, 4864, 14, 1, 0, 0, 0, 0, 7, [0, 1, 2, 3, 4, 5, 6], 1),
    "1g.5gb+me": (20, 1, 4864, 14, 1, 1, 0, 1, 1, 1, [0, 1, 2, 3, 4, 5, 6], 1),
    "1g.10gb": (15, 1, 9856, 14, 1, 1, 0, 0, 0, 4, [0, 2, 4, 6], 2),
    "2g.10gb": (14, 2, 9856, 28, 2, 1, 0, 0, 0, 3, [0, 2, 4], 2),
    "3g.20gb": (9, 3, 19968, 42, 3, 2, 0, 0, 0, 2, [0, 4], 4),
    "4g.20gb": (5, 4, 19968, 56, 4, 2, 0, 0, 0, 1, [0], 4),
    "7g.40gb": (0, 7, 40192, 98, 7, 5, 0, 1, 1, 1, [0], 8),
}

A100_80GB_PROFILES = {
    "1g.10gb": (19, 1, 9856, 14, 1, 0, 0, 0, 0, 7, [0, 1, 2, 3, 4, 5, 6], 1),
    "1g.10gb+me": (20, 1, 9856, 14, 1, 1, 0, 1, 1, 1, [0, 1, 2, 3, 4, 5, 6], 1),
    "1g.20gb": (15, 1, 19968, 14, 1, 1, 0, 0, 0, 4, [0, 2, 4, 6], 2),
    "2g.20gb": (14, 2, 19968, 28, 2, 1, 0, 0, 0, 3, [0, 2, 4], 2),
    "3g.40gb": (9, 3, 40192, 42, 3, 2, 0, 0, 0, 2, [0, 4], 4),
    "4g.40gb": (5, 4, 40192, 56, 4, 2, 0, 0, 0, 1, [0], 4),
    "7g.80gb": (0, 7, 80896, 98, 7, 5, 0, 1, 1, 1, [0], 8),
}

# The A100 of seed 002 ("Supporting MIG in Kubernetes", driver 450.80.02): the values its labels show.
SEED_A100_PROFILES = {
    "1g.5gb": (19, 1, 4864, 14, 1, 0, 0, 0, 0, 7, [0, 1, 2, 3, 4, 5, 6], 1),
    "2g.10gb": (14, 2, 9984, 28, 2, 1, 0, 0, 0, 3, [0, 2, 4], 2),
    "3g.20gb": (9, 3, 20096, 42, 3, 2, 0, 0, 0, 2, [0, 4], 4),
    "7g.40gb": (0, 7, 40192, 98, 7, 5, 0, 1, 1, 1, [0], 8),
}

MODELS = {
    "a100-40gb": ("NVIDIA A100-SXM4-40GB", "0x20B010DE", 40960, A100_40GB_PROFILES),
    "a100-80gb-pcie": ("NVIDIA A100 80GB PCIe", "0x20B510DE", 81920, A100_80GB_PROFILES),
    "seed-a100": ("A100-SXM4-40GB", "0x20B010DE", 40537, SEED_A100_PROFILES),
}


def _profile(name: str, row: Tuple[Any, ...], used: int) -> Dict[str, Any]:
    pid, slices, memory, sms, ce, dec, enc, jpeg, ofa, count, starts, size = row
    return {
        "name": name, "id": pid, "slices": slices, "memory_mib": memory, "multiprocessors": sms,
        "copy_engines": ce, "decoders": dec, "encoders": enc, "jpegs": jpeg, "ofas": ofa,
        "instance_count": count, "free": max(count - used, 0),
        "placements": [{"start": s, "size": size} for s in starts],
    }


def make_gpu(index: int, model: str = "a100-40gb", mig: bool = False, instances: Optional[List[str]] = None,
             capable: bool = True) -> Dict[str, Any]:
    """One GPU as gpu_info reports it; ``instances`` lists the GPU instance profiles it has now."""
    name, device_id, memory, table = MODELS[model]
    instances = instances or []
    gis = []
    for position, profile in enumerate(instances):
        gi_id = position + 1
        gis.append({
            "profile": profile, "profile_id": table[profile][0], "gi_id": gi_id,
            "placement_start": 0, "placement_size": table[profile][1],
            "devices": [{"uuid": "MIG-%d-%d" % (index, gi_id), "ci_id": 0, "profile": profile}],
        })
    return {
        "index": index,
        "uuid": "GPU-%08d" % index,
        "name": name,
        "pci_device_id": device_id,
        "pci_subsystem_id": "0x134F10DE",
        "pci_bus_id": "00000000:%02X:00.0" % (7 + index),
        "memory_total_mib": memory,
        "mig": {
            "capable": capable,
            "current": mig,
            "pending": mig,
            "instances": gis,
            "profiles": [_profile(n, row, instances.count(n)) for n, row in table.items()] if capable else [],
        },
        "processes": [],
    }


@pytest.fixture
def gpu() -> Callable[..., Dict[str, Any]]:
    return make_gpu


@pytest.fixture
def node_gpus() -> Callable[..., List[Dict[str, Any]]]:
    def build(count: int = 8, model: str = "a100-40gb", mig: bool = False, instances: Optional[List[str]] = None):
        return [make_gpu(i, model, mig, instances) for i in range(count)]
    return build
