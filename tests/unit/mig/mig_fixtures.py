# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Small pure fixture data: GPUs as NVML would describe them (values from known-geometries.md / nvml-mig.md).

The product carries no per-model tables; tests do, the way the simulator and the hardware do.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.facts import (
    Gpu, GpuInstance, GpuProcess, GpuProfile, MigDevice, Placement,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.naming import GI_ENUM_SHAPES, memory_gb, profile_name

# model: (pci id, total MiB, [(enum, id, memory MiB, instances, starts, size)])
MODELS: Dict[str, Tuple[str, int, List[Tuple[int, int, int, int, Sequence[int], int]]]] = {
    "NVIDIA A100-SXM4-40GB": ("0x20B010DE", 40960, [
        (0x0, 19, 4864, 7, range(7), 1), (0x7, 20, 4864, 1, range(7), 1), (0x9, 15, 9856, 4, (0, 2, 4, 6), 2),
        (0x1, 14, 9856, 3, (0, 2, 4), 2), (0x2, 9, 19968, 2, (0, 4), 4), (0x3, 5, 19968, 1, (0,), 4),
        (0x4, 0, 40192, 1, (0,), 8)]),
    "NVIDIA A100-SXM4-80GB": ("0x20B210DE", 81920, [
        (0x0, 19, 9728, 7, range(7), 1), (0x7, 20, 9728, 1, range(7), 1), (0x9, 15, 19968, 4, (0, 2, 4, 6), 2),
        (0x1, 14, 19968, 3, (0, 2, 4), 2), (0x2, 9, 40192, 2, (0, 4), 4), (0x3, 5, 40192, 1, (0,), 4),
        (0x4, 0, 80896, 1, (0,), 8)]),
    "NVIDIA A30": ("0x20B710DE", 24576, [
        (0x0, 14, 5952, 4, range(4), 1), (0x7, 21, 5952, 1, range(4), 1), (0x1, 5, 11968, 2, (0, 2), 2),
        (0x8, 6, 11968, 1, (0, 2), 2), (0x3, 0, 24000, 1, (0,), 4)]),
    "NVIDIA RTX PRO 6000 Blackwell Server Edition": ("0x2BB510DE", 97887, [
        (0x0, 14, 24128, 4, range(4), 1), (0x7, 21, 24128, 1, range(4), 1), (0xA, 47, 24128, 4, range(4), 1),
        (0xF, 65, 24128, 1, range(4), 1), (0xD, 67, 24128, 4, range(4), 1), (0x1, 5, 48384, 2, (0, 2), 2),
        (0xB, 35, 48384, 2, (0, 2), 2), (0x10, 64, 48384, 1, (0, 2), 2), (0xE, 66, 48384, 2, (0, 2), 2),
        (0x3, 0, 96768, 1, (0,), 4), (0xC, 32, 96768, 1, (0,), 4)]),
}


def profiles_for(model: str, total_mib: int = 0) -> Tuple[GpuProfile, ...]:
    _pci, default_total, rows = MODELS[model]
    total = (total_mib or default_total) * 1024 * 1024
    result = []
    for enum, pid, mem, count, starts, size in rows:
        slices, suffix = GI_ENUM_SHAPES[enum]
        result.append(GpuProfile(
            name=profile_name(slices, memory_gb(mem, total), suffix), id=pid, enum=enum, slices=slices,
            memory_mib=mem, instance_count=count, placements=tuple(Placement(s, size) for s in starts), suffix=suffix,
            free=count,
        ))
    return tuple(result)


def gpu(model: str = "NVIDIA A100-SXM4-40GB", index: int = 0, current: bool = True, pending: bool = None,
        instances: Sequence[Tuple[str, int]] = (), processes: Sequence[GpuProcess] = (), capable: bool = True,
        profiles: Sequence[GpuProfile] = None, subsystem: str = "0x134F10DE", total_mib: int = 0) -> Gpu:
    """A GPU; ``instances`` are (profile name, start) pairs, each with one full-width compute instance."""
    pci, default_total, _rows = MODELS[model]
    offered = tuple(profiles) if profiles is not None else (profiles_for(model, total_mib) if capable else ())
    by_name = {p.name: p for p in offered}
    gis = []
    for n, (name, start) in enumerate(instances):
        p = by_name[name]
        size = p.placements[0].size
        gis.append(GpuInstance(gi_id=n + 1, profile_id=p.id, profile=name, placement=Placement(start, size),
                               devices=(MigDevice(ci_id=0, profile=name, uuid="MIG-%d-%d" % (index, n + 1)),)))
    return Gpu(index=index, uuid="GPU-%d" % index, name=model, pci_device_id=pci, pci_subsystem_id=subsystem,
               pci_bus_id="00000000:%02X:00.0" % (7 + index), memory_total_mib=total_mib or default_total,
               mig_capable=capable, mig_current=current and capable, mig_pending=(current if pending is None else pending) and capable,
               profiles=offered, instances=tuple(gis), processes=tuple(processes))
