"""GPU models the simulator offers, with the MIG profile tables the real hardware reports.

Numbers come from captured ``nvidia-smi mig -lgip/-lgipp`` listings and the MIG User Guide
(see docs/simulator-nvml.md for sources and for what is unverified). The product carries no
such tables: it asks NVML, and NVML here answers from these.

Units: memory in MiB as NVML's ``memorySizeMB`` reports it; GPU-instance placements in memory
slices (an 8-slot grid on 7-slice GPUs, 4 on A30); compute-instance placements in compute slices
inside the GPU instance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# NVML_GPU_INSTANCE_PROFILE_* enum values (the argument of …GetGpuInstanceProfileInfo).
GI_1_SLICE = 0x0
GI_2_SLICE = 0x1
GI_3_SLICE = 0x2
GI_4_SLICE = 0x3
GI_7_SLICE = 0x4
GI_8_SLICE = 0x5
GI_6_SLICE = 0x6
GI_1_SLICE_REV1 = 0x7
GI_2_SLICE_REV1 = 0x8
GI_1_SLICE_REV2 = 0x9
GI_PROFILE_COUNT = 0x12

# NVML_COMPUTE_INSTANCE_PROFILE_* enum values; NVML reports the CI profile id equal to the enum.
CI_PROFILE_BY_SLICES = {1: 0x0, 2: 0x1, 3: 0x2, 4: 0x3, 7: 0x4, 8: 0x5, 6: 0x6}
CI_PROFILE_COUNT = 0x9
CI_ENGINE_PROFILE_SHARED = 0x0

# Which CI widths a GI of a given compute-slice count offers (captured for 1/2/3/4; 7 derived).
CI_SLICES_BY_GI_SLICES = {1: (1,), 2: (1, 2), 3: (1, 2, 3), 4: (1, 2, 4), 7: (1, 2, 3, 4, 7)}

ARCH_TURING = 6
ARCH_AMPERE = 7
ARCH_ADA = 8
ARCH_HOPPER = 9

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class GpuInstanceProfile:
    enum: int
    id: int
    name: str  # mig-parted spelling, e.g. "1g.5gb+me"
    instance_count: int
    slice_count: int  # compute slices
    memory_mib: int
    multiprocessors: int
    copy_engines: int
    decoders: int
    encoders: int
    jpegs: int
    ofas: int
    placement_starts: tuple[int, ...]
    placement_size: int  # memory slices

    @property
    def nvml_name(self) -> str:
        return f"MIG {self.name}"


@dataclass(frozen=True)
class ComputeInstanceProfile:
    id: int  # equals the NVML_COMPUTE_INSTANCE_PROFILE_* enum
    slice_count: int
    instance_count: int
    multiprocessors: int
    name: str  # "1c.3g.20gb", or the GI name for the full-width CI
    placement_starts: tuple[int, ...]

    @property
    def nvml_name(self) -> str:
        return f"MIG {self.name}"


@dataclass(frozen=True)
class GpuModel:
    name: str
    aliases: tuple[str, ...]
    pci_device_id: int  # (device << 16) | 0x10DE, as mig-parted's device-filter spells it
    pci_subsystem_id: int
    memory_total_mib: int
    multiprocessors: int
    architecture: int
    cuda_compute_capability: tuple[int, int]
    memory_slots: int  # 0 when the GPU has no MIG
    compute_slices: int
    max_gpu_instances: int
    gi_profiles: tuple[GpuInstanceProfile, ...]
    bus_numbers: tuple[int, ...]  # PCI bus of GPU 0, 1, … on the usual 8-GPU board

    @property
    def mig_capable(self) -> bool:
        return bool(self.gi_profiles)

    @property
    def resetless_mig(self) -> bool:
        """Hopper and later switch MIG mode without a GPU reset (and forget it on reboot)."""
        return self.architecture >= ARCH_HOPPER

    def gi_profile_by_enum(self, enum: int) -> GpuInstanceProfile | None:
        return next((p for p in self.gi_profiles if p.enum == enum), None)

    def gi_profile_by_id(self, profile_id: int) -> GpuInstanceProfile | None:
        return next((p for p in self.gi_profiles if p.id == profile_id), None)

    def ci_profiles(self, gi: GpuInstanceProfile) -> tuple[ComputeInstanceProfile, ...]:
        return _ci_profiles(self, gi)

    def ci_profile_by_id(self, gi: GpuInstanceProfile, profile_id: int) -> ComputeInstanceProfile | None:
        return next((p for p in self.ci_profiles(gi) if p.id == profile_id), None)


def _gi(enum: int, pid: int, name: str, inst: int, mem: int, sm: int, ce: int, dec: int, enc: int, jpeg: int, ofa: int,
        starts: tuple[int, ...], size: int) -> GpuInstanceProfile:
    slices = int(name.split("g.", 1)[0])
    return GpuInstanceProfile(enum, pid, name, inst, slices, mem, sm, ce, dec, enc, jpeg, ofa, starts, size)


_SEVEN = (0, 1, 2, 3, 4, 5, 6)


def _seven_slice(gb1: str, gb1_rev2: str, gb2: str, gb3: str, gb7: str, mem1: int, mem2: int, mem3: int, mem7: int,
                 hopper: bool) -> tuple[GpuInstanceProfile, ...]:
    """The 7-slice family: A100, H100, H200 share IDs, placements and (per generation) engines."""
    if hopper:
        # Hopper: 1g has one DEC and JPEG; 1g.<2x>gb has 26 SMs; 7g has 8 CEs.
        return (
            _gi(GI_1_SLICE, 19, f"1g.{gb1}gb", 7, mem1, 16, 1, 1, 0, 1, 0, _SEVEN, 1),
            _gi(GI_1_SLICE_REV1, 20, f"1g.{gb1}gb+me", 1, mem1, 16, 1, 1, 0, 1, 1, _SEVEN, 1),
            _gi(GI_1_SLICE_REV2, 15, f"1g.{gb1_rev2}gb", 4, mem2, 26, 1, 1, 0, 1, 0, (0, 2, 4, 6), 2),
            _gi(GI_2_SLICE, 14, f"2g.{gb2}gb", 3, mem2, 32, 2, 2, 0, 2, 0, (0, 2, 4), 2),
            _gi(GI_3_SLICE, 9, f"3g.{gb3}gb", 2, mem3, 60, 3, 3, 0, 3, 0, (0, 4), 4),
            _gi(GI_4_SLICE, 5, f"4g.{gb3}gb", 1, mem3, 64, 4, 4, 0, 4, 0, (0,), 4),
            _gi(GI_7_SLICE, 0, f"7g.{gb7}gb", 1, mem7, 132, 8, 7, 0, 7, 1, (0,), 8),
        )
    return (
        _gi(GI_1_SLICE, 19, f"1g.{gb1}gb", 7, mem1, 14, 1, 0, 0, 0, 0, _SEVEN, 1),
        _gi(GI_1_SLICE_REV1, 20, f"1g.{gb1}gb+me", 1, mem1, 14, 1, 1, 0, 1, 1, _SEVEN, 1),
        _gi(GI_1_SLICE_REV2, 15, f"1g.{gb1_rev2}gb", 4, mem2, 14, 1, 1, 0, 0, 0, (0, 2, 4, 6), 2),
        _gi(GI_2_SLICE, 14, f"2g.{gb2}gb", 3, mem2, 28, 2, 1, 0, 0, 0, (0, 2, 4), 2),
        _gi(GI_3_SLICE, 9, f"3g.{gb3}gb", 2, mem3, 42, 3, 2, 0, 0, 0, (0, 4), 4),
        _gi(GI_4_SLICE, 5, f"4g.{gb3}gb", 1, mem3, 56, 4, 2, 0, 0, 0, (0,), 4),
        _gi(GI_7_SLICE, 0, f"7g.{gb7}gb", 1, mem7, 98, 7, 5, 0, 1, 1, (0,), 8),
    )


_A30_PROFILES = (
    _gi(GI_1_SLICE, 14, "1g.6gb", 4, 5952, 14, 1, 1, 0, 0, 0, (0, 1, 2, 3), 1),
    _gi(GI_1_SLICE_REV1, 21, "1g.6gb+me", 1, 5952, 14, 1, 1, 0, 1, 1, (0, 1, 2, 3), 1),
    _gi(GI_2_SLICE, 5, "2g.12gb", 2, 11968, 28, 2, 2, 0, 0, 0, (0, 2), 2),
    _gi(GI_2_SLICE_REV1, 6, "2g.12gb+me", 1, 11968, 28, 2, 2, 0, 1, 1, (0, 2), 2),
    _gi(GI_4_SLICE, 0, "4g.24gb", 1, 24000, 56, 4, 4, 0, 1, 1, (0,), 4),
)

_DGX_A100_BUSES = (0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD)
_DGX_H100_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
_PCIE_BUSES = (0x17, 0x31, 0x4B, 0x65, 0x98, 0xB1, 0xCA, 0xE3)

MODELS: tuple[GpuModel, ...] = (
    GpuModel("NVIDIA A100-SXM4-40GB", ("a100", "a100-40gb", "a100-sxm4-40gb"), 0x20B010DE, 0x134F10DE, 40960, 108,
             ARCH_AMPERE, (8, 0), 8, 7, 7,
             _seven_slice("5", "10", "10", "20", "40", 4864, 9856, 19968, 40192, hopper=False), _DGX_A100_BUSES),
    GpuModel("NVIDIA A100-SXM4-80GB", ("a100-80gb", "a100-sxm4-80gb"), 0x20B210DE, 0x147F10DE, 81920, 108,
             ARCH_AMPERE, (8, 0), 8, 7, 7,
             _seven_slice("10", "20", "20", "40", "80", 9728, 19968, 40192, 80896, hopper=False), _DGX_A100_BUSES),
    GpuModel("NVIDIA A30", ("a30", "a30-24gb"), 0x20B710DE, 0x153210DE, 24576, 56,
             ARCH_AMPERE, (8, 0), 4, 4, 4, _A30_PROFILES, _PCIE_BUSES),
    GpuModel("NVIDIA H100 80GB HBM3", ("h100", "h100-80gb", "h100-sxm5-80gb", "h100-80gb-hbm3"), 0x233010DE, 0x16C110DE,
             81559, 132, ARCH_HOPPER, (9, 0), 8, 7, 7,
             _seven_slice("10", "20", "20", "40", "80", 9984, 20096, 40448, 81152, hopper=True), _DGX_H100_BUSES),
    GpuModel("NVIDIA H100 NVL", ("h100-nvl", "h100-nvl-94gb"), 0x232110DE, 0x183910DE, 95830, 132,
             ARCH_HOPPER, (9, 0), 8, 7, 7,
             _seven_slice("12", "24", "24", "47", "94", 11008, 22144, 47488, 95360, hopper=True), _PCIE_BUSES),
    GpuModel("NVIDIA H200", ("h200", "h200-141gb", "h200-sxm-141gb"), 0x233510DE, 0x18A310DE, 143771, 132,
             ARCH_HOPPER, (9, 0), 8, 7, 7,
             _seven_slice("18", "35", "35", "71", "141", 16384, 33024, 71168, 143360, hopper=True), _DGX_H100_BUSES),
    GpuModel("Tesla T4", ("t4", "tesla-t4"), 0x1EB810DE, 0x12A210DE, 15360, 40,
             ARCH_TURING, (7, 5), 0, 0, 0, (), _PCIE_BUSES),
    GpuModel("NVIDIA L4", ("l4",), 0x27B810DE, 0x16CA10DE, 23034, 58,
             ARCH_ADA, (8, 9), 0, 0, 0, (), _PCIE_BUSES),
)

_BY_KEY = {key: m for m in MODELS for key in (m.name.lower(), *m.aliases)}


def find_model(text: str) -> GpuModel:
    """Resolve an NVML name ("NVIDIA A30") or an alias ("a30"); raise ValueError naming the choices."""
    key = text.strip().lower()
    model = _BY_KEY.get(key) or _BY_KEY.get(key.removeprefix("nvidia ").replace(" ", "-"))
    if model is None:
        raise ValueError(f"unknown GPU model {text!r}; known: {', '.join(m.name for m in MODELS)}")
    return model


def _ci_profiles(model: GpuModel, gi: GpuInstanceProfile) -> tuple[ComputeInstanceProfile, ...]:
    sm_per_slice = model.gi_profile_by_enum(GI_1_SLICE).multiprocessors  # type: ignore[union-attr]
    result = []
    for slices in CI_SLICES_BY_GI_SLICES.get(gi.slice_count, (gi.slice_count,)):
        full = slices == gi.slice_count
        align = 1 << (slices - 1).bit_length()  # 1, 2, 4, 4, 8: CIs start on a power-of-two boundary
        starts = tuple(s for s in range(0, gi.slice_count, align) if s + slices <= gi.slice_count)
        result.append(ComputeInstanceProfile(
            id=CI_PROFILE_BY_SLICES[slices],
            slice_count=slices,
            instance_count=len(starts),
            multiprocessors=gi.multiprocessors if full else slices * sm_per_slice,
            name=gi.name if full else f"{slices}c.{gi.name}",
            placement_starts=starts,
        ))
    return tuple(result)


def mig_memory_size_gb(total_bytes: int, memory_mib: int) -> int:
    """go-nvlib's getMigMemorySizeGB: how mig-parted turns NVML numbers into the "Ngb" of a name."""
    fraction = memory_mib * MIB / total_bytes
    fraction = math.ceil(fraction * 8) / 8
    total_gb = (total_bytes + GIB - 1) // GIB
    return math.floor(fraction * total_gb + 0.5)  # Go's math.Round: half away from zero
