# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection: no compatibility promise outside gpuops.nvidia.
"""The one door to NVML: opens it (contract 1 of docs/architecture.md) and adapts pynvml.

Reads return the plain data of ``mig/facts.py``; the few mutating calls are methods named for what
they change, and only ``mig/apply.py`` and the mig_mode module call them. Profile names are
computed per GPU from that GPU's NVML values; nothing here knows a GPU model.
"""

from __future__ import annotations

import ctypes
import importlib
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.facts import (
    Gpu, GpuInstance, GpuProcess, GpuProfile, MigDevice, NodeGpus, Placement,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.naming import (
    CI_ENUM_COUNT, CI_ENUM_SLICES, GI_ENUM_COUNT, GI_ENUM_SHAPES, memory_gb, profile_name,
)

try:
    import pynvml
    HAS_PYNVML = True
    PYNVML_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the node
    pynvml = None
    HAS_PYNVML = False
    PYNVML_IMPORT_ERROR = _exc

SIMULATOR_ENV = "GPUOPS_NVML_SIMULATOR"
# Why NVML cannot be opened on a node whose Python lacks pynvml (mig_config's nvml_unavailable, which
# the mig_node_decision filter tells apart from a missing driver).
PYNVML_MISSING = "the Python library pynvml (PyPI nvidia-ml-py) is not installed"

# NVML return codes (nvml.h) used below.
ERROR_INVALID_ARGUMENT = 2
ERROR_NOT_SUPPORTED = 3
ERROR_NOT_FOUND = 6
ERROR_INSUFFICIENT_SIZE = 7
ERROR_DRIVER_NOT_LOADED = 9
ERROR_LIBRARY_NOT_FOUND = 12
ERROR_FUNCTION_NOT_FOUND = 13
ERROR_GPU_IS_LOST = 15
ERROR_IN_USE = 19
ERROR_NO_PERMISSION = 4
UNAVAILABLE_CODES = (ERROR_DRIVER_NOT_LOADED, ERROR_LIBRARY_NOT_FOUND, ERROR_FUNCTION_NOT_FOUND)
SKIPPED_PROFILE_CODES = (ERROR_NOT_SUPPORTED, ERROR_INVALID_ARGUMENT)
NO_MIG_ID = 0xFFFFFFFF
MIB = 1024 * 1024


class NvmlUnavailable(Exception):
    """No NVIDIA driver or library on this node."""


class NvmlCallError(Exception):
    """An NVML call failed; says which call, about what, and with which NVML code."""

    def __init__(self, step: str, code: int, text: str):
        self.step = step
        self.code = code
        self.text = text
        super().__init__("%s failed: %s (NVML error %d)" % (step, text, code))


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _code(exc: Exception) -> int:
    return int(getattr(exc, "value", -1))


def install_simulator(path: str) -> None:
    """Contract 1: pynvml talks to the simulator's library object instead of libnvidia-ml.so.1."""
    library = importlib.import_module("gpuops_sim.nvml").load_library(path)
    with pynvml.libLoadLock:
        pynvml.nvmlLib = library
        pynvml._nvmlGetFunctionPointer_cache.clear()  # pylint: disable=protected-access


def open_nvml(environ: Optional[Dict[str, str]] = None) -> "Nvml":
    """Initialise NVML (the simulator when GPUOPS_NVML_SIMULATOR names a state file)."""
    if not HAS_PYNVML:
        raise NvmlUnavailable(PYNVML_MISSING)
    env = os.environ if environ is None else environ
    simulator = env.get(SIMULATOR_ENV)
    if simulator:
        install_simulator(simulator)
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        if _code(exc) in UNAVAILABLE_CODES:
            raise NvmlUnavailable("NVML is not available: %s" % exc)
        raise NvmlCallError("nvmlInit", _code(exc), str(exc))
    return Nvml()


class Nvml:
    """pynvml, adapted: GPU inventory, MIG state, and the mutating calls apply needs."""

    def __init__(self) -> None:
        self.lib = pynvml
        #: Indexes of the GPUs that a mutating NVML call succeeded on: what apply reports as changed,
        #: whatever failed after it.
        self.mutated: set = set()

    # --- plumbing --------------------------------------------------------------------------------

    def call(self, step: str, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(*args)
        except self.lib.NVMLError as exc:
            raise NvmlCallError(step, _code(exc), str(exc))

    def try_call(self, function: Callable[..., Any], *args: Any, skip: Tuple[int, ...] = SKIPPED_PROFILE_CODES) -> Any:
        """The call's result, or None when NVML answers one of the ``skip`` codes."""
        try:
            return function(*args)
        except self.lib.NVMLError as exc:
            if _code(exc) in skip:
                return None
            raise

    def mutate(self, index: int, step: str, function: Callable[..., Any], *args: Any) -> Any:
        """A mutating call: as :meth:`call`, and GPU ``index`` counts as changed once it succeeded."""
        result = self.call(step, function, *args)
        self.mutated.add(index)
        return result

    def close(self) -> None:
        try:
            self.lib.nvmlShutdown()
        except self.lib.NVMLError:
            pass

    def handle(self, index: int) -> Any:
        return self.call("nvmlDeviceGetHandleByIndex(%d)" % index, self.lib.nvmlDeviceGetHandleByIndex, index)

    # --- reads -------------------------------------------------------------------------------------

    def count(self) -> int:
        return int(self.call("nvmlDeviceGetCount", self.lib.nvmlDeviceGetCount))

    def versions(self) -> Dict[str, str]:
        try:
            return self._versions()
        except self.lib.NVMLError as exc:
            raise NvmlCallError("reading the driver, CUDA and NVML versions", _code(exc), str(exc))

    def _versions(self) -> Dict[str, str]:
        driver = _text(self.call("nvmlSystemGetDriverVersion", self.lib.nvmlSystemGetDriverVersion))
        nvml_version = _text(self.try_call(self.lib.nvmlSystemGetNVMLVersion, skip=(ERROR_NOT_SUPPORTED, ERROR_FUNCTION_NOT_FOUND)) or "")
        cuda = self.try_call(self.lib.nvmlSystemGetCudaDriverVersion, skip=(ERROR_NOT_SUPPORTED, ERROR_FUNCTION_NOT_FOUND))
        cuda_text = "%d.%d" % (cuda // 1000, (cuda % 1000) // 10) if cuda else ""
        return {"driver_version": driver, "cuda_version": cuda_text, "nvml_version": nvml_version}

    def mig_mode(self, index: int) -> Optional[Tuple[bool, bool]]:
        """(current, pending), or None for a GPU that is not MIG-capable."""
        handle = self.handle(index)
        try:
            mode = self.try_call(self.lib.nvmlDeviceGetMigMode, handle, skip=(ERROR_NOT_SUPPORTED,))
        except self.lib.NVMLError as exc:
            raise NvmlCallError("GPU %d: nvmlDeviceGetMigMode" % index, _code(exc), str(exc))
        if mode is None:
            return None
        return bool(mode[0]), bool(mode[1])

    def read_node(self) -> NodeGpus:
        versions = self.versions()
        return NodeGpus(gpus=tuple(self.read_gpu(i) for i in range(self.count())), **versions)

    def read_gpu(self, index: int) -> Gpu:
        try:
            return self._read_gpu(index)
        except self.lib.NVMLError as exc:
            raise NvmlCallError("GPU %d: reading its state" % index, _code(exc), str(exc))

    def _read_gpu(self, index: int) -> Gpu:
        lib = self.lib
        handle = self.handle(index)
        where = "GPU %d: " % index
        pci = self.call(where + "nvmlDeviceGetPciInfo", lib.nvmlDeviceGetPciInfo, handle)
        total_bytes = int(self.call(where + "nvmlDeviceGetMemoryInfo", lib.nvmlDeviceGetMemoryInfo, handle).total)
        mode = self.mig_mode(index)
        profiles: Tuple[GpuProfile, ...] = ()
        instances: Tuple[GpuInstance, ...] = ()
        if mode is not None:
            profiles = self._profiles(handle, total_bytes, mig_on=mode[0])
            if mode[0]:
                instances = self._instances(handle, profiles, index)
        return Gpu(
            index=index,
            uuid=_text(self.call(where + "nvmlDeviceGetUUID", lib.nvmlDeviceGetUUID, handle)),
            name=_text(self.call(where + "nvmlDeviceGetName", lib.nvmlDeviceGetName, handle)),
            pci_device_id="0x%08X" % pci.pciDeviceId,
            pci_subsystem_id="0x%08X" % pci.pciSubSystemId,
            pci_bus_id=_text(pci.busId),
            memory_total_mib=total_bytes // MIB,
            mig_capable=mode is not None,
            mig_current=bool(mode and mode[0]),
            mig_pending=bool(mode and mode[1]),
            profiles=profiles,
            instances=instances,
            processes=tuple(self._processes(handle, index, mig_on=bool(mode and mode[0]))),
        )

    def device_table(self) -> List[Dict[str, Any]]:
        """Every GPU and MIG device by the names device plugins give them, for podresources/devices.py.

        ``[{"index", "uuid", "migs": [{"index", "uuid", "gi_id", "ci_id"}]}]``; a MIG device's index
        is its ``nvmlDeviceGetMigDeviceHandleByIndex`` index on its GPU (the ``<gpu>:<mig>`` of
        NVIDIA's device plugin). Cheap: no profile or placement reads.
        """
        lib = self.lib
        gpus: List[Dict[str, Any]] = []
        for index in range(self.count()):
            handle = self.handle(index)
            where = "GPU %d: " % index
            migs: List[Dict[str, Any]] = []
            mode = self.mig_mode(index)
            if mode is not None and mode[0]:
                maximum = self.try_call(lib.nvmlDeviceGetMaxMigDeviceCount, handle, skip=(ERROR_NOT_SUPPORTED,)) or 0
                for mig_index in range(maximum):
                    mig = self.try_call(lib.nvmlDeviceGetMigDeviceHandleByIndex, handle, mig_index,
                                        skip=(ERROR_NOT_FOUND, ERROR_INVALID_ARGUMENT, ERROR_NOT_SUPPORTED))
                    if mig is None:
                        continue
                    migs.append({
                        "index": mig_index,
                        "uuid": _text(self.call(where + "nvmlDeviceGetUUID (MIG)", lib.nvmlDeviceGetUUID, mig)),
                        "gi_id": int(self.call(where + "nvmlDeviceGetGpuInstanceId", lib.nvmlDeviceGetGpuInstanceId, mig)),
                        "ci_id": int(self.call(where + "nvmlDeviceGetComputeInstanceId", lib.nvmlDeviceGetComputeInstanceId, mig)),
                    })
            gpus.append({"index": index, "uuid": _text(self.call(where + "nvmlDeviceGetUUID", lib.nvmlDeviceGetUUID, handle)),
                         "migs": migs})
        return gpus

    def _gi_profile_info(self, handle: Any, enum: int) -> Any:
        try:
            return self.try_call(self.lib.nvmlDeviceGetGpuInstanceProfileInfo, handle, enum)
        except self.lib.NVMLError as exc:
            if _code(exc) != ERROR_FUNCTION_NOT_FOUND:
                raise
            return self.try_call(self.lib.nvmlDeviceGetGpuInstanceProfileInfo, handle, enum, 1)

    def _placements(self, handle: Any, profile_id: int) -> Tuple[Placement, ...]:
        lib = self.lib
        count = ctypes.c_uint(0)
        try:
            lib.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, None, ctypes.byref(count))
        except lib.NVMLError as exc:
            if _code(exc) != ERROR_INSUFFICIENT_SIZE:
                raise
        if count.value == 0:
            return ()
        array = (lib.c_nvmlGpuInstancePlacement_t * count.value)()
        lib.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, array, ctypes.byref(count))
        return tuple(sorted(Placement(int(array[i].start), int(array[i].size)) for i in range(count.value)))

    def _profiles(self, handle: Any, total_bytes: int, mig_on: bool) -> Tuple[GpuProfile, ...]:
        """Every GPU instance profile this GPU offers: enums 0..COUNT-1, skipping the ones it lacks."""
        lib = self.lib
        result = []
        for enum in range(GI_ENUM_COUNT):
            if enum not in GI_ENUM_SHAPES:
                continue
            try:
                info = self._gi_profile_info(handle, enum)
            except lib.NVMLError as exc:
                raise NvmlCallError("nvmlDeviceGetGpuInstanceProfileInfo(enum %d)" % enum, _code(exc), str(exc))
            if info is None:
                continue
            slices, suffix = GI_ENUM_SHAPES[enum]
            memory_mib = int(info.memorySizeMB)
            free = 0
            if mig_on:
                free = self.try_call(lib.nvmlDeviceGetGpuInstanceRemainingCapacity, handle, info.id,
                                     skip=(ERROR_NOT_SUPPORTED, ERROR_INVALID_ARGUMENT, ERROR_NO_PERMISSION)) or 0
            result.append(GpuProfile(
                name=profile_name(slices, memory_gb(memory_mib, total_bytes), suffix),
                id=int(info.id),
                enum=enum,
                slices=int(info.sliceCount) or slices,
                memory_mib=memory_mib,
                instance_count=int(info.instanceCount),
                placements=self.call("nvmlDeviceGetGpuInstancePossiblePlacements(profile %d)" % info.id,
                                     self._placements, handle, int(info.id)),
                suffix=suffix,
                multiprocessors=int(info.multiprocessorCount),
                copy_engines=int(info.copyEngineCount),
                decoders=int(info.decoderCount),
                encoders=int(info.encoderCount),
                jpegs=int(info.jpegCount),
                ofas=int(info.ofaCount),
                free=int(free),
            ))
        return tuple(result)

    def _gpu_instance_handles(self, handle: Any, profile: GpuProfile) -> List[Any]:
        lib = self.lib
        capacity = max(profile.instance_count, 1)
        array = (lib.c_nvmlGpuInstance_t * capacity)()
        count = ctypes.c_uint(capacity)
        self.call("nvmlDeviceGetGpuInstances(profile %d)" % profile.id,
                  lib.nvmlDeviceGetGpuInstances, handle, profile.id, array, ctypes.byref(count))
        return [array[i] for i in range(count.value)]

    def _compute_profiles(self, gi: Any) -> List[Tuple[int, Any]]:
        """(enum, info) of each compute instance profile a GPU instance offers, each profile once.

        They follow from the GPU instance's profile, so a reading asks once per GPU instance profile.
        """
        found = []
        seen_ids = set()
        for enum in range(CI_ENUM_COUNT):
            info = self.try_call(self.lib.nvmlGpuInstanceGetComputeInstanceProfileInfo, gi, enum, 0)
            if info is None or int(info.id) in seen_ids:
                continue
            seen_ids.add(int(info.id))
            found.append((enum, info))
        return found

    def _compute_instances(self, gi: Any, profiles: Optional[List[Tuple[int, Any]]] = None) -> List[Tuple[Any, Any, int]]:
        """(handle, info, slices) of each compute instance of a GPU instance; ``profiles``: its
        compute instance profiles when they are known already."""
        lib = self.lib
        found = []
        for enum, info in self._compute_profiles(gi) if profiles is None else profiles:
            capacity = max(int(info.instanceCount), 1)
            array = (lib.c_nvmlComputeInstance_t * capacity)()
            count = ctypes.c_uint(capacity)
            self.call("nvmlGpuInstanceGetComputeInstances", lib.nvmlGpuInstanceGetComputeInstances, gi, info.id, array, ctypes.byref(count))
            for i in range(count.value):
                ci_info = self.call("nvmlComputeInstanceGetInfo", lib.nvmlComputeInstanceGetInfo, array[i])
                found.append((array[i], ci_info, int(info.sliceCount) or CI_ENUM_SLICES[enum]))
        return found

    def _mig_device_uuids(self, handle: Any) -> Dict[Tuple[int, int], Tuple[str, Any]]:
        """(gi_id, ci_id) -> (MIG device UUID, MIG device handle)."""
        lib = self.lib
        result: Dict[Tuple[int, int], Tuple[str, Any]] = {}
        maximum = self.try_call(lib.nvmlDeviceGetMaxMigDeviceCount, handle, skip=(ERROR_NOT_SUPPORTED,)) or 0
        for i in range(maximum):
            mig = self.try_call(lib.nvmlDeviceGetMigDeviceHandleByIndex, handle, i,
                                skip=(ERROR_NOT_FOUND, ERROR_INVALID_ARGUMENT, ERROR_NOT_SUPPORTED))
            if mig is None:
                continue
            key = (int(lib.nvmlDeviceGetGpuInstanceId(mig)), int(lib.nvmlDeviceGetComputeInstanceId(mig)))
            result[key] = (_text(lib.nvmlDeviceGetUUID(mig)), mig)
        return result

    def _instances(self, handle: Any, profiles: Tuple[GpuProfile, ...], index: int) -> Tuple[GpuInstance, ...]:
        lib = self.lib
        uuids = self._mig_device_uuids(handle)
        instances = []
        for profile in profiles:
            compute_profiles = None
            for gi in self._gpu_instance_handles(handle, profile):
                info = self.call("GPU %d: nvmlGpuInstanceGetInfo" % index, lib.nvmlGpuInstanceGetInfo, gi)
                if compute_profiles is None:
                    compute_profiles = self._compute_profiles(gi)
                devices = []
                for _ci, ci_info, ci_slices in self._compute_instances(gi, compute_profiles):
                    uuid = uuids.get((int(info.id), int(ci_info.id)), ("", None))[0]
                    full = ci_slices == profile.slices
                    devices.append(MigDevice(
                        ci_id=int(ci_info.id),
                        profile=profile.name if full else "%dc.%s" % (ci_slices, profile.name),
                        uuid=uuid,
                        ci_profile_id=int(ci_info.profileId),
                        full_width=full,
                    ))
                instances.append(GpuInstance(
                    gi_id=int(info.id),
                    profile_id=int(info.profileId),
                    profile=profile.name,
                    placement=Placement(int(info.placement.start), int(info.placement.size)),
                    devices=tuple(sorted(devices, key=lambda d: d.ci_id)),
                ))
        return tuple(sorted(instances, key=lambda gi: (gi.placement.start, gi.gi_id)))

    def _running(self, handle: Any) -> List[Any]:
        return self.try_call(self.lib.nvmlDeviceGetComputeRunningProcesses, handle,
                             skip=(ERROR_NOT_SUPPORTED, ERROR_NO_PERMISSION)) or []

    def _processes(self, handle: Any, index: int, mig_on: bool) -> List[GpuProcess]:
        found: Dict[Tuple[int, Optional[int], Optional[int]], GpuProcess] = {}

        def add(process: Any, gi_id: Optional[int], ci_id: Optional[int]) -> None:
            used = getattr(process, "usedGpuMemory", None)
            gi = getattr(process, "gpuInstanceId", NO_MIG_ID) if gi_id is None else gi_id
            ci = getattr(process, "computeInstanceId", NO_MIG_ID) if ci_id is None else ci_id
            gi = None if gi is None or gi == NO_MIG_ID else int(gi)
            ci = None if ci is None or ci == NO_MIG_ID else int(ci)
            entry = GpuProcess(pid=int(process.pid), used_memory_mib=None if used is None else int(used) // MIB, gi_id=gi, ci_id=ci)
            found[(entry.pid, gi, ci)] = entry

        mig_keyed = set()
        if mig_on:
            for (gi_id, ci_id), (_uuid, mig) in self._mig_device_uuids(handle).items():
                for process in self._running(mig):
                    add(process, gi_id, ci_id)
                    mig_keyed.add(int(process.pid))
        for process in self._running(handle):
            # The parent's aggregate list repeats MIG processes, sometimes without their IDs.
            if int(process.pid) in mig_keyed:
                continue
            add(process, None, None)
        return sorted(found.values(), key=lambda p: (p.pid, p.gi_id or -1, p.ci_id or -1))

    # --- mutations (apply.py and mig_mode only) --------------------------------------------------

    def set_mig_mode(self, index: int, enabled: bool) -> int:
        """nvmlDeviceSetMigMode; returns the activation status (pynvml returns it, never raises on it)."""
        handle = self.handle(index)
        mode = self.lib.NVML_DEVICE_MIG_ENABLE if enabled else self.lib.NVML_DEVICE_MIG_DISABLE
        return int(self.mutate(index, "GPU %d: nvmlDeviceSetMigMode(%d)" % (index, mode), self.lib.nvmlDeviceSetMigMode, handle, mode))

    def destroy_gpu_instance(self, index: int, gi_id: int) -> None:
        """Destroy the compute instances of GPU instance ``gi_id``, then the GPU instance."""
        lib = self.lib
        handle = self.handle(index)
        gi = self.call("GPU %d: nvmlDeviceGetGpuInstanceById(%d)" % (index, gi_id), lib.nvmlDeviceGetGpuInstanceById, handle, gi_id)
        cis = self.call("GPU %d: listing the compute instances of GI %d" % (index, gi_id), self._compute_instances, gi)
        for ci, ci_info, _slices in cis:
            self.mutate(index, "GPU %d: nvmlComputeInstanceDestroy(GI %d, CI %d)" % (index, gi_id, ci_info.id), lib.nvmlComputeInstanceDestroy, ci)
        self.mutate(index, "GPU %d: nvmlGpuInstanceDestroy(GI %d)" % (index, gi_id), lib.nvmlGpuInstanceDestroy, gi)

    def create_gpu_instance(self, index: int, profile_id: int, placement: Placement) -> int:
        """Create a GPU instance at an explicit placement; return its ID."""
        lib = self.lib
        handle = self.handle(index)
        where = "GPU %d: nvmlDeviceCreateGpuInstanceWithPlacement(profile %d, %d:%d)" % (index, profile_id, placement.start, placement.size)
        c_placement = lib.c_nvmlGpuInstancePlacement_t()
        c_placement.start = placement.start
        c_placement.size = placement.size
        gi = self.mutate(index, where, lib.nvmlDeviceCreateGpuInstanceWithPlacement, handle, profile_id, ctypes.byref(c_placement))
        return int(self.call("GPU %d: nvmlGpuInstanceGetInfo" % index, lib.nvmlGpuInstanceGetInfo, gi).id)

    def create_full_compute_instance(self, index: int, gi_id: int, slices: int) -> int:
        """Create the default compute instance (as wide as its GPU instance) in ``gi_id``; return its ID."""
        lib = self.lib
        handle = self.handle(index)
        gi = self.call("GPU %d: nvmlDeviceGetGpuInstanceById(%d)" % (index, gi_id), lib.nvmlDeviceGetGpuInstanceById, handle, gi_id)
        for enum in sorted(CI_ENUM_SLICES):
            if CI_ENUM_SLICES[enum] != slices:
                continue
            info = self.try_call(lib.nvmlGpuInstanceGetComputeInstanceProfileInfo, gi, enum, 0)
            if info is None or int(info.sliceCount) not in (0, slices):
                continue
            ci = self.mutate(index, "GPU %d: nvmlGpuInstanceCreateComputeInstance(GI %d, profile %d)" % (index, gi_id, info.id),
                             lib.nvmlGpuInstanceCreateComputeInstance, gi, info.id)
            return int(self.call("GPU %d: nvmlComputeInstanceGetInfo" % index, lib.nvmlComputeInstanceGetInfo, ci).id)
        raise NvmlCallError("GPU %d: GPU instance %d offers no %d-slice compute instance profile" % (index, gi_id, slices),
                            ERROR_NOT_SUPPORTED, "Not Supported")
