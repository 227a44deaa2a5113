"""MIG behaviour of one simulated GPU, as pure functions on the node-state dict.

Everything here mutates the dict it is given and raises ``NvmlError`` with the code the driver
would return; the caller owns locking and persistence (``state.py``) and marshalling
(``library.py``). Semantics follow the MIG User Guide and nvml.h; see docs/simulator-nvml.md.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterator

from gpuops_sim.nvml import errors
from gpuops_sim.nvml.errors import NvmlError
from gpuops_sim.nvml.models import (
    CI_ENGINE_PROFILE_SHARED,
    CI_PROFILE_COUNT,
    ComputeInstanceProfile,
    GpuInstanceProfile,
    GpuModel,
    find_model,
)

Gpu = dict[str, Any]
State = dict[str, Any]

NO_ID = 0xFFFFFFFF  # gpuInstanceId / computeInstanceId of a process when MIG is off

ACTIVATION_SUCCESS = errors.SUCCESS
ACTIVATION_IN_USE = errors.IN_USE
ACTIVATION_RESET_REQUIRED = errors.RESET_REQUIRED

RESET_POLICIES = ("reset", "reboot")
DISABLE_WITH_INSTANCES = ("in_use", "destroy")


def model_of(gpu: Gpu) -> GpuModel:
    return find_model(gpu["model"])


def derived_uuid(seed: str, *parts: object) -> str:
    digest = hashlib.sha256("|".join([seed, *map(str, parts)]).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def next_serial(state: State) -> int:
    serial = int(state["next_serial"])
    state["next_serial"] = serial + 1
    return serial


def mig_devices(gpu: Gpu) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The MIG devices (one per compute instance), in the order NVML enumerates them."""
    return [(gi, ci) for gi in sorted(gpu["gpu_instances"], key=lambda g: g["id"])
            for ci in sorted(gi["compute_instances"], key=lambda c: c["id"])]


def device_uuids(gpu: Gpu) -> set[str]:
    """The GPU's own UUID and those of its MIG devices: where a process can run on this GPU."""
    return {gpu["uuid"], *(ci["uuid"] for gi in gpu["gpu_instances"] for ci in gi["compute_instances"])}


def processes_on(state: State, uuids: set[str]) -> list[dict[str, Any]]:
    return [p for p in state["processes"] if p["device_uuid"] in uuids]


# Loaded, these keep every GPU of the node open (a reset fails "In use by another client").
GPU_HOLDING_KERNEL_MODULES = ("nvidia_drm",)


def busy_reason(state: State, gpu: Gpu) -> str | None:
    """Why a reset of this GPU would fail right now, or None when nothing holds it."""
    procs = processes_on(state, device_uuids(gpu))
    if procs:
        return f"process {procs[0]['pid']} is running on it"
    if gpu["clients"]:
        return f"{gpu['clients'][0]} holds it open"
    for name, service in sorted(state.get("services", {}).items()):
        if service.get("active"):
            return f"service {name} holds it open"
    for name in state.get("kernel_modules", []):
        if name in GPU_HOLDING_KERNEL_MODULES:
            return f"kernel module {name} holds it"
    return None


def apply_pending(gpu: Gpu) -> None:
    """What a GPU reset does to MIG: the pending mode becomes current and all instances vanish."""
    gpu["mig_current"] = gpu["mig_pending"]
    gpu["gpu_instances"] = []


# --- MIG mode -------------------------------------------------------------------------------

def set_mig_mode(state: State, gpu: Gpu, mode: int) -> int:
    """nvmlDeviceSetMigMode: record the pending mode, try to activate it; return activationStatus."""
    model = model_of(gpu)
    if not model.mig_capable:
        raise NvmlError(errors.NOT_SUPPORTED, f"{model.name} has no MIG")
    if mode not in (0, 1):
        raise NvmlError(errors.INVALID_ARGUMENT, f"MIG mode {mode}")
    enable = bool(mode)
    if not enable and gpu["gpu_instances"]:
        if state["mig_disable_with_instances"] == "in_use":
            raise NvmlError(errors.IN_USE, "GPU instances exist")
        if processes_on(state, device_uuids(gpu) - {gpu["uuid"]}):
            raise NvmlError(errors.IN_USE, "processes run on MIG devices")
    gpu["mig_pending"] = enable
    if gpu["mig_current"] == enable:
        return ACTIVATION_SUCCESS
    if model.resetless_mig:
        # Hopper switches in the driver, without a reset; only running work stops it.
        if processes_on(state, device_uuids(gpu)):
            return ACTIVATION_IN_USE
        apply_pending(gpu)
        return ACTIVATION_SUCCESS
    if state["reset_policy"] == "reboot":
        return ACTIVATION_RESET_REQUIRED
    if busy_reason(state, gpu):
        return ACTIVATION_IN_USE
    apply_pending(gpu)
    return ACTIVATION_SUCCESS


# --- GPU instances ----------------------------------------------------------------------------

def gi_id_for(model: GpuModel, start: int, size: int) -> int:
    """GI IDs as the captures show them: 0 for the whole GPU, then halves, quarters, eighths
    (heap numbering of the memory-slot grid, e.g. a 1g at slot s is 7+s on a 7-slice GPU)."""
    blocks = model.memory_slots // size
    return blocks - 1 + start // size


def _occupied(gpu: Gpu) -> list[tuple[int, int]]:
    return [(gi["start"], gi["start"] + gi["size"]) for gi in gpu["gpu_instances"]]


def _overlaps(start: int, size: int, taken: list[tuple[int, int]]) -> bool:
    return any(start < end and begin < start + size for begin, end in taken)


def media_engines_taken(gpu: Gpu, profile: GpuInstanceProfile) -> bool:
    """nvml.h: a "+me.all" instance holds every media engine, so beside it only "-me" instances
    (which have none) can exist, and it can only be created beside "-me" instances."""
    model = model_of(gpu)
    existing = [gi_profile_of(model, gi) for gi in gpu["gpu_instances"]]
    if profile.takes_all_media_engines:
        return any(not p.has_no_media_engines for p in existing)
    return not profile.has_no_media_engines and any(p.takes_all_media_engines for p in existing)


def free_gi_starts(gpu: Gpu, profile: GpuInstanceProfile) -> list[int]:
    """Legal starts of the profile that do not overlap an existing GPU instance."""
    if sum(1 for gi in gpu["gpu_instances"] if gi["profile_id"] == profile.id) >= profile.instance_count:
        return []
    if media_engines_taken(gpu, profile):
        return []
    taken = _occupied(gpu)
    return [s for s in profile.placement_starts if not _overlaps(s, profile.placement_size, taken)]


def gi_remaining_capacity(gpu: Gpu, profile: GpuInstanceProfile) -> int:
    if not gpu["mig_current"]:
        return 0
    used = sum(1 for gi in gpu["gpu_instances"] if gi["profile_id"] == profile.id)
    # A profile's legal placements never overlap each other, so every free one can be used.
    return min(len(free_gi_starts(gpu, profile)), profile.instance_count - used)


def _auto_start(model: GpuModel, gpu: Gpu, profile: GpuInstanceProfile) -> int | None:
    """Pick the free start that blocks the fewest still-possible placements of other profiles,
    lowest start on ties. This reproduces the driver's observed orders (1g: 6,4,5,0,1,2,3;
    4-2-1 created 1g,2g,4g lands at 6, 4, 0) but is not NVIDIA's algorithm: rely on nothing."""
    candidates = free_gi_starts(gpu, profile)
    if not candidates:
        return None
    taken = _occupied(gpu)
    others = [(p.placement_size, s) for p in model.gi_profiles if p.id != profile.id
              for s in p.placement_starts if not _overlaps(s, p.placement_size, taken)]

    def cost(start: int) -> int:
        return sum(1 for size, s in others if start < s + size and s < start + profile.placement_size)

    return min(candidates, key=lambda s: (cost(s), s))


def create_gpu_instance(state: State, gpu: Gpu, profile_id: int, start: int | None = None,
                        size: int | None = None) -> dict[str, Any]:
    model = model_of(gpu)
    profile = model.gi_profile_by_id(profile_id) if model.mig_capable else None
    if not model.mig_capable or not gpu["mig_current"]:
        raise NvmlError(errors.NOT_SUPPORTED, "MIG is not enabled")
    if profile is None:
        raise NvmlError(errors.NOT_SUPPORTED, f"{model.name} has no GPU instance profile id {profile_id}")
    if start is None:
        start = _auto_start(model, gpu, profile)
        if start is None:
            raise NvmlError(errors.INSUFFICIENT_RESOURCES, f"no room for {profile.name}")
    else:
        if start not in profile.placement_starts or size != profile.placement_size:
            raise NvmlError(errors.INVALID_ARGUMENT, f"placement {start}:{size} is not legal for {profile.name}")
        if start not in free_gi_starts(gpu, profile):
            raise NvmlError(errors.INSUFFICIENT_RESOURCES, f"placement {start}:{size} is taken")
    gi = {
        "id": gi_id_for(model, start, profile.placement_size),
        "profile_id": profile.id,
        "start": start,
        "size": profile.placement_size,
        "serial": next_serial(state),
        "compute_instances": [],
    }
    gpu["gpu_instances"].append(gi)
    gpu["gpu_instances"].sort(key=lambda g: g["id"])
    return gi


def destroy_gpu_instance(state: State, gpu: Gpu, gi: dict[str, Any]) -> None:
    if gi["compute_instances"]:
        raise NvmlError(errors.IN_USE, f"GPU instance {gi['id']} has compute instances")
    gpu["gpu_instances"] = [g for g in gpu["gpu_instances"] if g["serial"] != gi["serial"]]


# --- compute instances ------------------------------------------------------------------------

def gi_profile_of(model: GpuModel, gi: dict[str, Any]) -> GpuInstanceProfile:
    profile = model.gi_profile_by_id(gi["profile_id"])
    assert profile is not None, gi
    return profile


def ci_profile_of(model: GpuModel, gi: dict[str, Any], ci: dict[str, Any]) -> ComputeInstanceProfile:
    profile = model.ci_profile_by_id(gi_profile_of(model, gi), ci["profile_id"])
    assert profile is not None, ci
    return profile


def free_ci_starts(gi: dict[str, Any], profile: ComputeInstanceProfile) -> list[int]:
    taken = [(ci["start"], ci["start"] + ci["size"]) for ci in gi["compute_instances"]]
    return [s for s in profile.placement_starts if not _overlaps(s, profile.slice_count, taken)]


def ci_remaining_capacity(gi: dict[str, Any], profile: ComputeInstanceProfile) -> int:
    return len(free_ci_starts(gi, profile))


def check_engine_profile(eng_profile: int) -> None:
    if eng_profile != CI_ENGINE_PROFILE_SHARED:
        raise NvmlError(errors.INVALID_ARGUMENT if eng_profile >= 1 else errors.NOT_SUPPORTED,
                        f"engine profile {eng_profile}")


def create_compute_instance(state: State, gpu: Gpu, gi: dict[str, Any], profile_id: int, start: int | None = None,
                            size: int | None = None) -> dict[str, Any]:
    model = model_of(gpu)
    profile = model.ci_profile_by_id(gi_profile_of(model, gi), profile_id)
    if profile is None:
        code = errors.NOT_SUPPORTED if 0 <= profile_id < CI_PROFILE_COUNT else errors.INVALID_ARGUMENT
        raise NvmlError(code, f"no compute instance profile id {profile_id} in this GPU instance")
    free = free_ci_starts(gi, profile)
    if start is None:
        if not free:
            raise NvmlError(errors.INSUFFICIENT_RESOURCES, "no room in the GPU instance")
        start = free[0]
    else:
        if start not in profile.placement_starts or size != profile.slice_count:
            raise NvmlError(errors.INVALID_ARGUMENT, f"placement {start}:{size} is not legal")
        if start not in free:
            raise NvmlError(errors.INSUFFICIENT_RESOURCES, f"placement {start}:{size} is taken")
    used_ids = {ci["id"] for ci in gi["compute_instances"]}
    serial = next_serial(state)
    ci = {
        "id": next(i for i in range(len(used_ids) + 1) if i not in used_ids),
        "profile_id": profile.id,
        "start": start,
        "size": profile.slice_count,
        "serial": serial,
        "uuid": "MIG-" + derived_uuid(state["seed"], gpu["uuid"], "mig", serial),
    }
    gi["compute_instances"].append(ci)
    gi["compute_instances"].sort(key=lambda c: c["id"])
    return ci


def destroy_compute_instance(state: State, gi: dict[str, Any], ci: dict[str, Any]) -> None:
    if processes_on(state, {ci["uuid"]}):
        raise NvmlError(errors.IN_USE, f"processes run on compute instance {ci['id']}")
    gi["compute_instances"] = [c for c in gi["compute_instances"] if c["serial"] != ci["serial"]]


def iter_compute_instances(gpu: Gpu) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for gi in gpu["gpu_instances"]:
        for ci in gi["compute_instances"]:
            yield gi, ci
