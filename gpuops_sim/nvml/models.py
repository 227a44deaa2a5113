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
GI_1_SLICE_REV1 = 0x7  # "+me": one set of media engines
GI_2_SLICE_REV1 = 0x8
GI_1_SLICE_REV2 = 0x9  # 1g with twice the memory
GI_1_SLICE_GFX = 0xA  # "+gfx": graphics-capable (RTX PRO Blackwell)
GI_2_SLICE_GFX = 0xB
GI_4_SLICE_GFX = 0xC
GI_1_SLICE_NO_ME = 0xD  # "-me": no media engines
GI_2_SLICE_NO_ME = 0xE
GI_1_SLICE_ALL_ME = 0xF  # "+me.all": every media engine of the GPU
GI_2_SLICE_ALL_ME = 0x10
GI_3_SLICE_GFX = 0x11
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
ARCH_BLACKWELL = 10

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

    @property
    def takes_all_media_engines(self) -> bool:
        """nvml.h: an ``_ALL_ME`` instance leaves room only for ``_NO_ME`` instances beside it."""
        return self.enum in (GI_1_SLICE_ALL_ME, GI_2_SLICE_ALL_ME)

    @property
    def has_no_media_engines(self) -> bool:
        return self.enum in (GI_1_SLICE_NO_ME, GI_2_SLICE_NO_ME)


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


def nominal_memory_mib(total_mib: int, memory_slots: int, grid: int = 8) -> int:
    """A profile's memory where no capture exists: its share of the grid, less the ~1 % the driver
    keeps (as in every captured listing), in NVML's 16-MiB steps. go-nvlib's naming formula turns
    it into the share of the GPU's whole GiB, the name mig-parted's configs use."""
    return int(total_mib * memory_slots / grid * 0.99) // 16 * 16


# Per-profile (SMs, copy engines, NVDEC, NVENC, JPEG, OFA) of the 7-slice family, row by row:
# 1g, 1g+me, 1g double memory, 2g, 3g, 4g, 7g.
Engines = tuple[tuple[int, int, int, int, int, int], ...]
# MIG User Guide A100-SXM4-40GB -lgip listing (identical in third-party captures).
AMPERE_ENGINES: Engines = (
    (14, 1, 0, 0, 0, 0), (14, 1, 1, 0, 1, 1), (14, 1, 1, 0, 0, 0), (28, 2, 1, 0, 0, 0),
    (42, 3, 2, 0, 0, 0), (56, 4, 2, 0, 0, 0), (98, 7, 5, 0, 1, 1))
# Captured H100 80GB HBM3 -lgip listings (R535+; the MIG User Guide's 580.65 example agrees).
HOPPER_ENGINES: Engines = (
    (16, 1, 1, 0, 1, 0), (16, 1, 1, 0, 1, 1), (26, 1, 1, 0, 1, 0), (32, 2, 2, 0, 2, 0),
    (60, 3, 3, 0, 3, 0), (64, 4, 4, 0, 4, 0), (132, 8, 7, 0, 7, 1))
# B200: SMs and the 1g/2g engines from captured -lgip listings (mig-parted #166/#187,
# gpu-operator #1242/#1351); 3g/4g/7g copy engines from the MIG User Guide's B200 table, their
# NVDEC/JPEG counts one per compute slice as on Hopper (unverified). Blackwell has no NVENC here.
BLACKWELL_ENGINES: Engines = (
    (18, 2, 1, 0, 1, 0), (18, 2, 1, 0, 1, 1), (30, 2, 1, 0, 1, 0), (36, 4, 2, 0, 2, 0),
    (70, 6, 3, 0, 3, 0), (72, 8, 4, 0, 4, 0), (148, 16, 7, 0, 7, 1))
# GB200: 1g, 1g double memory and 2g captured (nvml-mig reference §2.9); the rest as B200.
GB200_ENGINES: Engines = (
    (18, 2, 1, 0, 1, 0), (18, 2, 1, 0, 1, 1), (32, 2, 1, 0, 1, 0), (38, 4, 2, 0, 2, 0), *BLACKWELL_ENGINES[4:])


def _scaled_engines(engines: Engines, multiprocessors: int) -> Engines:
    """The same engines with SMs in proportion to a smaller die (H100 PCIe, H20): unverified."""
    full = engines[-1][0]
    return tuple((row[0] * multiprocessors // full // 2 * 2 or 2, *row[1:]) for row in engines)  # type: ignore[misc]


_SEVEN = (0, 1, 2, 3, 4, 5, 6)


def _seven_slice(names: tuple[str, str, str, str, str], memory: tuple[int, int, int, int],
                 engines: Engines, memory_1g_double: int | None = None) -> tuple[GpuInstanceProfile, ...]:
    """The 7-slice family (A100 … GB300): the same profile IDs and placements on every model.

    ``names`` are the GB of 1g, 1g double memory, 2g, 3g/4g and 7g; ``memory`` the MiB of 1g,
    2g, 3g/4g and 7g (the double-memory 1g has the 2g's memory unless ``memory_1g_double``).
    """
    gb1, gb1_double, gb2, gb3, gb7 = names
    mem1, mem2, mem3, mem7 = memory
    rows = (
        (GI_1_SLICE, 19, f"1g.{gb1}gb", 7, mem1, _SEVEN, 1),
        (GI_1_SLICE_REV1, 20, f"1g.{gb1}gb+me", 1, mem1, _SEVEN, 1),
        (GI_1_SLICE_REV2, 15, f"1g.{gb1_double}gb", 4, memory_1g_double or mem2, (0, 2, 4, 6), 2),
        (GI_2_SLICE, 14, f"2g.{gb2}gb", 3, mem2, (0, 2, 4), 2),
        (GI_3_SLICE, 9, f"3g.{gb3}gb", 2, mem3, (0, 4), 4),
        (GI_4_SLICE, 5, f"4g.{gb3}gb", 1, mem3, (0,), 4),
        (GI_7_SLICE, 0, f"7g.{gb7}gb", 1, mem7, (0,), 8),
    )
    return tuple(_gi(enum, pid, name, inst, mem, *engine, starts, size)
                 for (enum, pid, name, inst, mem, starts, size), engine in zip(rows, engines))


def _nominal_seven_slice(total_mib: int, names: tuple[str, str, str, str, str], engines: Engines
                         ) -> tuple[GpuInstanceProfile, ...]:
    """A 7-slice table with nominal memory (no captured listing): see ``nominal_memory_mib``."""
    memory = tuple(nominal_memory_mib(total_mib, slots) for slots in (1, 2, 4, 8))
    return _seven_slice(names, memory, engines)  # type: ignore[arg-type]


_A30_PROFILES = (
    _gi(GI_1_SLICE, 14, "1g.6gb", 4, 5952, 14, 1, 1, 0, 0, 0, (0, 1, 2, 3), 1),
    _gi(GI_1_SLICE_REV1, 21, "1g.6gb+me", 1, 5952, 14, 1, 1, 0, 1, 1, (0, 1, 2, 3), 1),
    _gi(GI_2_SLICE, 5, "2g.12gb", 2, 11968, 28, 2, 2, 0, 0, 0, (0, 2), 2),
    _gi(GI_2_SLICE_REV1, 6, "2g.12gb+me", 1, 11968, 28, 2, 2, 0, 1, 1, (0, 2), 2),
    _gi(GI_4_SLICE, 0, "4g.24gb", 1, 24000, 56, 4, 4, 0, 1, 1, (0,), 4),
)

# RTX PRO 6000 Blackwell (all editions): a 4-slot grid with graphics ("+gfx") and media-engine
# ("+me", "+me.all", "-me") variants. IDs, memory (23.62 / 47.38 / 95.00 GiB), SMs and engines
# from a captured `nvidia-smi mig -lgip` listing; the engine counts and instance counts agree with
# the MIG User Guide's "GPU Instance Profiles on RTX PRO 6000" table. Enum ↔ ID binding: nvml.h's
# _GFX / _NO_ME / _ALL_ME enums in the order the listing prints them (the binding is not printed).
_Q = (0, 1, 2, 3)
_RTX_PRO_6000_PROFILES = (
    _gi(GI_1_SLICE, 14, "1g.24gb", 4, 24192, 46, 1, 1, 1, 1, 0, _Q, 1),
    _gi(GI_1_SLICE_REV1, 21, "1g.24gb+me", 1, 24192, 46, 1, 1, 1, 1, 1, _Q, 1),
    _gi(GI_1_SLICE_GFX, 47, "1g.24gb+gfx", 4, 24192, 46, 1, 1, 1, 1, 0, _Q, 1),
    _gi(GI_1_SLICE_ALL_ME, 65, "1g.24gb+me.all", 1, 24192, 46, 1, 4, 4, 4, 1, _Q, 1),
    _gi(GI_1_SLICE_NO_ME, 67, "1g.24gb-me", 4, 24192, 46, 1, 0, 0, 0, 0, _Q, 1),
    _gi(GI_2_SLICE, 5, "2g.48gb", 2, 48512, 94, 2, 2, 2, 2, 0, (0, 2), 2),
    _gi(GI_2_SLICE_GFX, 35, "2g.48gb+gfx", 2, 48512, 94, 2, 2, 2, 2, 0, (0, 2), 2),
    _gi(GI_2_SLICE_ALL_ME, 64, "2g.48gb+me.all", 1, 48512, 94, 2, 4, 4, 4, 1, (0, 2), 2),
    _gi(GI_2_SLICE_NO_ME, 66, "2g.48gb-me", 2, 48512, 94, 2, 0, 0, 0, 0, (0, 2), 2),
    _gi(GI_4_SLICE, 0, "4g.96gb", 1, 97280, 188, 4, 4, 4, 4, 1, (0,), 4),
    _gi(GI_4_SLICE_GFX, 32, "4g.96gb+gfx", 1, 97280, 188, 4, 4, 4, 4, 1, (0,), 4),
)

_DGX_A100_BUSES = (0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD)
_DGX_H100_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
_PCIE_BUSES = (0x17, 0x31, 0x4B, 0x65, 0x98, 0xB1, 0xCA, 0xE3)
# Grace superchips (GH200, GB200, GB300): each GPU sits alone on bus 01 of its own PCI domain.
_GRACE_BUSES = (0x01,)

# Profile tables shared by several PCI device IDs (mig-parted's default config groups them so).
_A100_40GB = _seven_slice(("5", "10", "10", "20", "40"), (4864, 9856, 19968, 40192), AMPERE_ENGINES)
_A100_80GB = _seven_slice(("10", "20", "20", "40", "80"), (9728, 19968, 40192, 80896), AMPERE_ENGINES)
_H100_80GB = _seven_slice(("10", "20", "20", "40", "80"), (9984, 20096, 40448, 81152), HOPPER_ENGINES)
# H100 PCIe / H800 PCIe: 114 SMs; memory as the SXM5 part, SMs per profile scaled (unverified).
_H100_PCIE = _seven_slice(("10", "20", "20", "40", "80"), (9984, 20096, 40448, 81152),
                          _scaled_engines(HOPPER_ENGINES, 114))
# Captured H100 NVL listing (driver 560.35.03; gpu-operator #900).
_H100_NVL = _seven_slice(("12", "24", "24", "47", "94"), (11008, 22144, 47488, 95360), HOPPER_ENGINES)
# Captured H200 listings (two drivers; placements as H100, whose -lgipp is identical).
_H200 = _seven_slice(("18", "35", "35", "71", "141"), (16384, 33024, 71168, 143360), HOPPER_ENGINES)
# The 96GB class (H100 96GB, GH200 96GB, PG506-232, H20): names from mig-parted's default config,
# memory nominal on the 97871 MiB that nvidia-smi reports for the 96 GB HBM3 parts (unverified).
_MEM_96GB = 97871
_NAMES_96GB = ("12", "24", "24", "48", "96")
# GH200 144G HBM3e: 1g, 1g double memory and 2g captured (mig-parted #139); 3g/4g/7g nominal.
# Device total unverified: any total just under 144 GiB gives mig-parted's names.
_MEM_GH200_144GB = 146944
_GH200_144GB = _seven_slice(("18", "36", "36", "72", "144"),
                            (17920, 36096, nominal_memory_mib(_MEM_GH200_144GB, 4),
                             nominal_memory_mib(_MEM_GH200_144GB, 8)), HOPPER_ENGINES)
# B200: every memory size captured (current driver; the Jan-2025 driver had 22528 MiB for 1g).
_B200 = _seven_slice(("23", "45", "45", "90", "180"), (20992, 45312, 91136, 182784), BLACKWELL_ENGINES)
# GB200: 1g (22.00 GiB) and 1g double memory / 2g (45.50 GiB) captured; 3g/4g/7g nominal; the
# device total (just under 186 GiB) unverified.
_MEM_GB200 = 189471
_GB200 = _seven_slice(("23", "47", "47", "93", "186"),
                      (22528, 46592, nominal_memory_mib(_MEM_GB200, 4), nominal_memory_mib(_MEM_GB200, 8)),
                      GB200_ENGINES)
# B300 / GB300: no published table; names from mig-parted's default config, memory nominal,
# engines as B200, device totals just under 269 / 278 GiB (all unverified).
_MEM_B300 = 275040
_MEM_GB300 = 284208

# PCI subsystem IDs: captured for the A100, A30, H100 80GB HBM3 and T4; the others are
# placeholders (unverified). mig-parted's default config matches on device IDs only.
MODELS: tuple[GpuModel, ...] = (
    # --- Ampere, 40 GB: mig-parted's "A100-40GB, A800-40GB" group ---------------------------
    GpuModel("NVIDIA A100-SXM4-40GB", ("a100", "a100-40gb", "a100-sxm4-40gb"), 0x20B010DE, 0x134F10DE, 40960, 108,
             ARCH_AMPERE, (8, 0), 8, 7, 7, _A100_40GB, _DGX_A100_BUSES),
    GpuModel("NVIDIA A100-PCIE-40GB", ("a100-pcie-40gb",), 0x20F110DE, 0x145F10DE, 40960, 108,
             ARCH_AMPERE, (8, 0), 8, 7, 7, _A100_40GB, _PCIE_BUSES),
    # pci.ids names 0x20B1 "A100 PCIe 40GB" as well; its NVML name is not published, and model
    # names must stay unique here.
    GpuModel("NVIDIA A100 PCIe 40GB (20B1)", ("a100-pcie-40gb-20b1",), 0x20B110DE, 0x145F10DE, 40960, 108,
             ARCH_AMPERE, (8, 0), 8, 7, 7, _A100_40GB, _PCIE_BUSES),
    GpuModel("NVIDIA A800 40GB Active", ("a800-40gb", "a800-40gb-pcie"), 0x20F610DE, 0x17A310DE, 40960, 108,
             ARCH_AMPERE, (8, 0), 8, 7, 7, _A100_40GB, _PCIE_BUSES),
    # --- Ampere and Hopper, 80 GB: mig-parted's "H100-80GB, H800-80GB, A100-80GB, A800-80GB" ----
    GpuModel("NVIDIA A100-SXM4-80GB", ("a100-80gb", "a100-sxm4-80gb"), 0x20B210DE, 0x147F10DE, 81920, 108,
             ARCH_AMPERE, (8, 0), 8, 7, 7, _A100_80GB, _DGX_A100_BUSES),
    GpuModel("NVIDIA A100 80GB PCIe", ("a100-80gb-pcie", "a100-pcie-80gb"), 0x20B510DE, 0x153310DE, 81920, 108,
             ARCH_AMPERE, (8, 0), 8, 7, 7, _A100_80GB, _PCIE_BUSES),
    GpuModel("NVIDIA A800-SXM4-80GB", ("a800-80gb", "a800-sxm4-80gb"), 0x20F310DE, 0x179B10DE, 81920, 108,
             ARCH_AMPERE, (8, 0), 8, 7, 7, _A100_80GB, _DGX_A100_BUSES),
    GpuModel("NVIDIA A800 80GB PCIe", ("a800-80gb-pcie",), 0x20F510DE, 0x179910DE, 81920, 108,
             ARCH_AMPERE, (8, 0), 8, 7, 7, _A100_80GB, _PCIE_BUSES),
    GpuModel("NVIDIA H100 80GB HBM3", ("h100", "h100-80gb", "h100-sxm5-80gb", "h100-80gb-hbm3"), 0x233010DE, 0x16C110DE,
             81559, 132, ARCH_HOPPER, (9, 0), 8, 7, 7, _H100_80GB, _DGX_H100_BUSES),
    GpuModel("NVIDIA H100 PCIe", ("h100-pcie", "h100-pcie-80gb"), 0x233110DE, 0x162610DE, 81559, 114,
             ARCH_HOPPER, (9, 0), 8, 7, 7, _H100_PCIE, _PCIE_BUSES),
    GpuModel("NVIDIA H800", ("h800", "h800-sxm5-80gb"), 0x232410DE, 0x17A610DE, 81559, 132,
             ARCH_HOPPER, (9, 0), 8, 7, 7, _H100_80GB, _DGX_H100_BUSES),
    GpuModel("NVIDIA H800 PCIe", ("h800-pcie",), 0x232210DE, 0x17A410DE, 81559, 114,
             ARCH_HOPPER, (9, 0), 8, 7, 7, _H100_PCIE, _PCIE_BUSES),
    # --- Hopper, 94 GB NVL: mig-parted's "H100 NVL, H800 NVL" ------------------------------------
    GpuModel("NVIDIA H100 NVL", ("h100-nvl", "h100-nvl-94gb"), 0x232110DE, 0x183910DE, 95830, 132,
             ARCH_HOPPER, (9, 0), 8, 7, 7, _H100_NVL, _PCIE_BUSES),
    GpuModel("NVIDIA H800 NVL", ("h800-nvl", "h800-nvl-94gb"), 0x233A10DE, 0x183A10DE, 95830, 132,
             ARCH_HOPPER, (9, 0), 8, 7, 7, _H100_NVL, _PCIE_BUSES),
    # --- 96 GB: mig-parted's "H100-96GB, PG506-96GB, GH200, H20" --------------------------------
    GpuModel("NVIDIA H100 96GB", ("h100-96gb",), 0x233D10DE, 0x18A010DE, _MEM_96GB, 132,
             ARCH_HOPPER, (9, 0), 8, 7, 7, _nominal_seven_slice(_MEM_96GB, _NAMES_96GB, HOPPER_ENGINES),
             _DGX_H100_BUSES),
    GpuModel("NVIDIA GH200 480GB", ("gh200", "gh200-96gb", "gh200-480gb"), 0x234210DE, 0x16EB10DE, _MEM_96GB, 132,
             ARCH_HOPPER, (9, 0), 8, 7, 7, _nominal_seven_slice(_MEM_96GB, _NAMES_96GB, HOPPER_ENGINES),
             _GRACE_BUSES),
    GpuModel("NVIDIA PG506-232", ("pg506-96gb", "pg506-232"), 0x20B610DE, 0x14A910DE, _MEM_96GB, 108,
             ARCH_AMPERE, (8, 0), 8, 7, 7, _nominal_seven_slice(_MEM_96GB, _NAMES_96GB, AMPERE_ENGINES),
             _DGX_A100_BUSES),
    GpuModel("NVIDIA H20", ("h20",), 0x232910DE, 0x198B10DE, _MEM_96GB, 78,
             ARCH_HOPPER, (9, 0), 8, 7, 7,
             _nominal_seven_slice(_MEM_96GB, _NAMES_96GB, _scaled_engines(HOPPER_ENGINES, 78)), _DGX_H100_BUSES),
    # --- Hopper, 141 / 144 GB -------------------------------------------------------------------
    GpuModel("NVIDIA H200", ("h200", "h200-141gb", "h200-sxm-141gb"), 0x233510DE, 0x18A310DE, 143771, 132,
             ARCH_HOPPER, (9, 0), 8, 7, 7, _H200, _DGX_H100_BUSES),
    GpuModel("NVIDIA H200 NVL", ("h200-nvl", "h200-nvl-141gb"), 0x233B10DE, 0x199610DE, 143771, 132,
             ARCH_HOPPER, (9, 0), 8, 7, 7, _H200, _PCIE_BUSES),
    GpuModel("NVIDIA GH200 144G HBM3e", ("gh200-144gb", "gh200-144g"), 0x234810DE, 0x18FE10DE, _MEM_GH200_144GB, 132,
             ARCH_HOPPER, (9, 0), 8, 7, 7, _GH200_144GB, _GRACE_BUSES),
    # --- Blackwell ------------------------------------------------------------------------------
    GpuModel("NVIDIA B200", ("b200", "b200-180gb"), 0x290110DE, 0x199B10DE, 183359, 148,
             ARCH_BLACKWELL, (10, 0), 8, 7, 7, _B200, _DGX_H100_BUSES),
    GpuModel("NVIDIA GB200", ("gb200", "gb200-186gb"), 0x294110DE, 0x199910DE, _MEM_GB200, 148,
             ARCH_BLACKWELL, (10, 0), 8, 7, 7, _GB200, _GRACE_BUSES),
    GpuModel("NVIDIA B300 SXM6 AC", ("b300", "b300-269gb"), 0x318210DE, 0x20E610DE, _MEM_B300, 148,
             ARCH_BLACKWELL, (10, 3), 8, 7, 7,
             _nominal_seven_slice(_MEM_B300, ("34", "67", "67", "135", "269"), BLACKWELL_ENGINES), _DGX_H100_BUSES),
    GpuModel("NVIDIA GB300", ("gb300", "gb300-278gb"), 0x31C210DE, 0x20E810DE, _MEM_GB300, 148,
             ARCH_BLACKWELL, (10, 3), 8, 7, 7,
             _nominal_seven_slice(_MEM_GB300, ("35", "70", "70", "139", "278"), BLACKWELL_ENGINES), _GRACE_BUSES),
    GpuModel("NVIDIA RTX PRO 6000 Blackwell Server Edition", ("rtx-pro-6000", "rtx-pro-6000-server"), 0x2BB510DE,
             0x204E10DE, 97887, 188, ARCH_BLACKWELL, (12, 0), 4, 4, 4, _RTX_PRO_6000_PROFILES, _PCIE_BUSES),
    # --- Ampere 24 GB, and GPUs without MIG -----------------------------------------------------
    GpuModel("NVIDIA A30", ("a30", "a30-24gb"), 0x20B710DE, 0x153210DE, 24576, 56,
             ARCH_AMPERE, (8, 0), 4, 4, 4, _A30_PROFILES, _PCIE_BUSES),
    GpuModel("Tesla T4", ("t4", "tesla-t4"), 0x1EB810DE, 0x12A210DE, 15360, 40,
             ARCH_TURING, (7, 5), 0, 0, 0, (), _PCIE_BUSES),
    GpuModel("NVIDIA L4", ("l4",), 0x27B810DE, 0x16CA10DE, 23034, 58,
             ARCH_ADA, (8, 9), 0, 0, 0, (), _PCIE_BUSES),
)

_BY_KEY = {key: m for m in MODELS for key in (m.name.lower(), *m.aliases)}


def one_per_profile_table(models: tuple[GpuModel, ...] = MODELS) -> list[GpuModel]:
    """The first MIG model of each distinct profile table (models sharing a table, such as A100
    and A800, behave alike under MIG): for tests that need each table once, not each PCI ID."""
    seen: set[tuple[GpuInstanceProfile, ...]] = set()
    chosen = []
    for model in models:
        if model.mig_capable and model.gi_profiles not in seen:
            seen.add(model.gi_profiles)
            chosen.append(model)
    return chosen


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
