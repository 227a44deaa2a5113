# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection: no compatibility promise outside gpuops.nvidia.
"""The observed state of a node's GPUs, as plain data.

``nvml.py`` fills these from NVML; ``plan.py`` reads them; ``to_dict`` gives the structure
``gpuops.nvidia.gpu_info`` returns (contract 5 in docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple


@dataclass(frozen=True, order=True)
class Placement:
    """Memory slices [start, start + size) of a GPU instance."""

    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size

    def overlaps(self, other: "Placement") -> bool:
        return self.start < other.end and other.start < self.end

    def to_dict(self) -> Dict[str, int]:
        return {"start": self.start, "size": self.size}


@dataclass(frozen=True)
class GpuProfile:
    """A GPU instance profile one GPU offers, named from that GPU's own NVML values."""

    name: str
    id: int
    enum: int
    slices: int
    memory_mib: int
    instance_count: int
    placements: Tuple[Placement, ...]
    suffix: str = ""
    multiprocessors: int = 0
    copy_engines: int = 0
    decoders: int = 0
    encoders: int = 0
    jpegs: int = 0
    ofas: int = 0
    free: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "enum": self.enum,
            "slices": self.slices,
            "memory_mib": self.memory_mib,
            "multiprocessors": self.multiprocessors,
            "copy_engines": self.copy_engines,
            "decoders": self.decoders,
            "encoders": self.encoders,
            "jpegs": self.jpegs,
            "ofas": self.ofas,
            "instance_count": self.instance_count,
            "free": self.free,
            "placements": [p.to_dict() for p in self.placements],
        }


@dataclass(frozen=True)
class MigDevice:
    """A compute instance; with a UUID it is what Kubernetes and CUDA see as a MIG device."""

    ci_id: int
    profile: str
    uuid: str = ""
    ci_profile_id: int = -1
    full_width: bool = True

    def to_dict(self) -> Dict[str, Any]:
        return {"uuid": self.uuid, "ci_id": self.ci_id, "profile": self.profile, "ci_profile_id": self.ci_profile_id}


@dataclass(frozen=True)
class GpuInstance:
    gi_id: int
    profile_id: int
    profile: str
    placement: Placement
    devices: Tuple[MigDevice, ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        return {
            "profile": self.profile,
            "profile_id": self.profile_id,
            "gi_id": self.gi_id,
            "placement_start": self.placement.start,
            "placement_size": self.placement.size,
            "devices": [d.to_dict() for d in self.devices],
        }


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory_mib: Optional[int] = None
    gi_id: Optional[int] = None
    ci_id: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"pid": self.pid, "used_memory_mib": self.used_memory_mib, "gi_id": self.gi_id, "ci_id": self.ci_id}


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    pci_device_id: str = ""
    pci_subsystem_id: str = ""
    pci_bus_id: str = ""
    memory_total_mib: int = 0
    mig_capable: bool = False
    mig_current: bool = False
    mig_pending: bool = False
    profiles: Tuple[GpuProfile, ...] = ()
    instances: Tuple[GpuInstance, ...] = ()
    processes: Tuple[GpuProcess, ...] = ()

    @property
    def mode_pending(self) -> bool:
        """True while a mode change waits for a GPU reset or a reboot."""
        return self.mig_current != self.mig_pending

    def profile_by_id(self, profile_id: int) -> Optional[GpuProfile]:
        for profile in self.profiles:
            if profile.id == profile_id:
                return profile
        return None

    def processes_on(self, gi_id: int) -> List[GpuProcess]:
        return [p for p in self.processes if p.gi_id == gi_id]

    def mig_device_uuids(self) -> List[str]:
        return [d.uuid for gi in self.instances for d in gi.devices if d.uuid]

    def layout(self) -> Dict[str, int]:
        """``{profile: count}`` of full-width MIG devices, mig-parted's view of the GPU."""
        counts: Dict[str, int] = {}
        for gi in self.instances:
            for device in gi.devices:
                counts[device.profile] = counts.get(device.profile, 0) + 1
        return dict(sorted(counts.items()))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "pci_device_id": self.pci_device_id,
            "pci_subsystem_id": self.pci_subsystem_id,
            "pci_bus_id": self.pci_bus_id,
            "memory_total_mib": self.memory_total_mib,
            "mig": {
                "capable": self.mig_capable,
                "current": self.mig_current,
                "pending": self.mig_pending,
                "instances": [gi.to_dict() for gi in self.instances],
                "profiles": [p.to_dict() for p in self.profiles],
            },
            "processes": [p.to_dict() for p in self.processes],
        }


@dataclass(frozen=True)
class NodeGpus:
    """Everything gpu_info reports: versions plus the GPUs."""

    driver_version: str = ""
    cuda_version: str = ""
    nvml_version: str = ""
    gpus: Tuple[Gpu, ...] = field(default_factory=tuple)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "driver_version": self.driver_version,
            "cuda_version": self.cuda_version,
            "nvml_version": self.nvml_version,
            "gpus": [g.to_dict() for g in self.gpus],
        }
