"""A stand-in for ``libnvidia-ml.so.1`` that the real pynvml drives unchanged.

``load_library(path)`` returns an object whose attributes are NVML C symbols. Each is a callable
object (pynvml sets ``restype`` on ``nvmlErrorString``, which a bound method would refuse) that
takes the ctypes arguments exactly as pynvml passes them (handles as ``LP_struct_…`` pointers,
out-parameters as ``byref(...)``, string buffers, caller arrays or None) and returns an NVML
return code, like the C function.

Every call re-reads the node-state file (another process may have changed it); calls that change
the node do so in one locked read-modify-write. Handles are fake addresses that name a GPU index,
or the serial number of a GPU instance, compute instance or MIG device; a handle whose instance
was destroyed answers INVALID_ARGUMENT.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any, Callable

import pynvml

from gpuops_sim.node import user
from gpuops_sim.nvml import errors, mig
from gpuops_sim.nvml.errors import NvmlError
from gpuops_sim.nvml.models import CI_PROFILE_COUNT, GI_PROFILE_COUNT, MIB, GpuModel
from gpuops_sim.nvml.state import StateFile, find_gpu, nvml_version, parse_bus_id, read_state

_TAG = 0x5E5E
KIND_GPU, KIND_MIG_DEVICE, KIND_GPU_INSTANCE, KIND_COMPUTE_INSTANCE = 1, 2, 3, 4
_CARG = type(ctypes.byref(ctypes.c_int()))
NOT_AVAILABLE_U64 = 0xFFFFFFFFFFFFFFFF


def encode_handle(kind: int, payload: int) -> int:
    return (_TAG << 48) | (kind << 32) | payload


def decode_handle(value: Any) -> tuple[int, int] | None:
    address = _address(value)
    if not address or address >> 48 != _TAG:
        return None
    return (address >> 32) & 0xFFFF, address & 0xFFFFFFFF


# --- ctypes marshalling ---------------------------------------------------------------------------

def _address(ref: Any) -> int | None:
    """The memory address a ctypes argument points at (None for NULL)."""
    if ref is None:
        return None
    if isinstance(ref, _CARG):
        return ctypes.addressof(ref._obj)
    if isinstance(ref, ctypes._Pointer):  # pylint: disable=protected-access
        return ctypes.cast(ref, ctypes.c_void_p).value
    if isinstance(ref, ctypes.c_void_p):
        return ref.value
    if isinstance(ref, (ctypes.Array, ctypes.Structure)):
        return ctypes.addressof(ref)
    if isinstance(ref, int):
        return ref
    raise NvmlError(errors.INVALID_ARGUMENT, f"cannot take the address of {type(ref).__name__}")


def _out(ref: Any) -> int:
    address = _address(ref)
    if not address:
        raise NvmlError(errors.INVALID_ARGUMENT, "NULL output pointer")
    return address


def _int(value: Any) -> int:
    if isinstance(value, ctypes._SimpleCData):  # pylint: disable=protected-access
        value = value.value
    if isinstance(value, _CARG):
        value = value._obj.value
    if not isinstance(value, int):
        raise NvmlError(errors.INVALID_ARGUMENT, f"expected an integer, got {type(value).__name__}")
    return value


def _text(value: Any) -> str:
    if isinstance(value, ctypes.c_char_p):
        value = value.value
    elif isinstance(value, ctypes.Array):
        value = value.value
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode()
    raise NvmlError(errors.INVALID_ARGUMENT, "expected a string")


def _set_uint(ref: Any, value: int) -> None:
    ctypes.c_uint.from_address(_out(ref)).value = value


def _set_int(ref: Any, value: int) -> None:
    ctypes.c_int.from_address(_out(ref)).value = value


def _set_handle(ref: Any, handle: int) -> None:
    ctypes.c_void_p.from_address(_out(ref)).value = handle


def _set_string(buffer: Any, length: Any, text: str) -> None:
    data = text.encode() + b"\0"
    if len(data) > _int(length):
        raise NvmlError(errors.INSUFFICIENT_SIZE, f"{text!r} needs {len(data)} bytes")
    ctypes.memmove(_out(buffer), data, len(data))


def _struct(ref: Any, cls: type) -> Any:
    if isinstance(ref, _CARG) and isinstance(ref._obj, cls):
        return ref._obj
    if isinstance(ref, cls):
        return ref
    return cls.from_address(_out(ref))


def _read_placement(ref: Any) -> tuple[int, int]:
    if isinstance(ref, ctypes.Structure):
        return ref.start, ref.size
    placement = pynvml.c_nvmlGpuInstancePlacement_t.from_address(_out(ref))
    return placement.start, placement.size


def _fill_array(array: Any, count_ref: Any, items: list[Any], write: Callable[[int, int, Any], None], size: int) -> None:
    """NVML's array protocol: NULL array → count only; too small → INSUFFICIENT_SIZE with the
    needed count; otherwise write the items and set count."""
    capacity = ctypes.c_uint.from_address(_out(count_ref))
    address = _address(array)
    if address is None:
        capacity.value = len(items)
        return
    if capacity.value < len(items):
        capacity.value = len(items)
        raise NvmlError(errors.INSUFFICIENT_SIZE, f"{len(items)} entries needed")
    for i, item in enumerate(items):
        write(address + i * size, i, item)
    capacity.value = len(items)


def _write_placement(address: int, _i: int, placement: tuple[int, int]) -> None:
    target = pynvml.c_nvmlGpuInstancePlacement_t.from_address(address)
    target.start, target.size = placement


def _write_handle(address: int, _i: int, handle: int) -> None:
    ctypes.c_void_p.from_address(address).value = handle


# --- the call context --------------------------------------------------------------------------

class _Index:
    """Lookups derived from one version of the state (rebuilt when the file changes)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.gpu_instances: dict[int, tuple[dict, dict]] = {}
        self.compute_instances: dict[int, tuple[dict, dict, dict]] = {}
        self.uuids: dict[str, tuple[int, int]] = {}
        for gpu in state["gpus"]:
            self.uuids[gpu["uuid"].lower()] = (KIND_GPU, gpu["index"])
            for gi in gpu["gpu_instances"]:
                self.gpu_instances[gi["serial"]] = (gpu, gi)
                for ci in gi["compute_instances"]:
                    self.compute_instances[ci["serial"]] = (gpu, gi, ci)
                    self.uuids[ci["uuid"].lower()] = (KIND_MIG_DEVICE, ci["serial"])


@dataclass
class _Call:
    lib: "SimulatedNvml"
    state: dict[str, Any]
    index: _Index

    def gpu(self, handle: Any, mig_code: int = errors.INVALID_ARGUMENT) -> dict[str, Any]:
        """The GPU a full-GPU handle names; a MIG device handle answers ``mig_code``."""
        kind, payload = self._decode(handle)
        if kind == KIND_MIG_DEVICE:
            self.mig_device(handle)  # stale MIG handles are invalid before anything else
            raise NvmlError(mig_code, "not supported on a MIG device handle")
        if kind != KIND_GPU or payload >= len(self.state["gpus"]):
            raise NvmlError(errors.INVALID_ARGUMENT, "not a device handle")
        return self.state["gpus"][payload]

    def device(self, handle: Any) -> tuple[dict[str, Any], tuple[dict, dict] | None]:
        """(gpu, None) for a GPU handle, (parent gpu, (gi, ci)) for a MIG device handle."""
        kind, _payload = self._decode(handle)
        if kind == KIND_MIG_DEVICE:
            gpu, gi, ci = self.mig_device(handle)
            return gpu, (gi, ci)
        return self.gpu(handle), None

    def mig_device(self, handle: Any) -> tuple[dict, dict, dict]:
        return self._instance(handle, KIND_MIG_DEVICE, self.index.compute_instances)

    def gpu_instance(self, handle: Any) -> tuple[dict, dict]:
        return self._instance(handle, KIND_GPU_INSTANCE, self.index.gpu_instances)

    def compute_instance(self, handle: Any) -> tuple[dict, dict, dict]:
        return self._instance(handle, KIND_COMPUTE_INSTANCE, self.index.compute_instances)

    def _instance(self, handle: Any, kind: int, table: dict[int, Any]) -> Any:
        found_kind, serial = self._decode(handle)
        if found_kind != kind or serial not in table:
            raise NvmlError(errors.INVALID_ARGUMENT, "stale or wrong handle")
        return table[serial]

    @staticmethod
    def _decode(handle: Any) -> tuple[int, int]:
        decoded = decode_handle(handle)
        if decoded is None:
            raise NvmlError(errors.INVALID_ARGUMENT, "not a handle of this library")
        return decoded


@dataclass(frozen=True)
class _Spec:
    impl: Callable[..., int | None]
    mutates: bool
    needs_init: bool


_SYMBOLS: dict[str, _Spec] = {}


def _symbol(*names: str, mutates: bool = False, needs_init: bool = True) -> Callable:
    def register(func: Callable[..., int | None]) -> Callable[..., int | None]:
        for name in names or (func.__name__,):
            _SYMBOLS[name] = _Spec(func, mutates, needs_init)
        return func
    return register


class _Function:
    """One exported C symbol. A plain callable object so that pynvml may set ``restype``."""

    def __init__(self, lib: "SimulatedNvml", name: str, spec: _Spec) -> None:
        self.__name__ = name
        self._lib = lib
        self._spec = spec
        self.restype: Any = ctypes.c_int
        self.argtypes: Any = None

    def __call__(self, *args: Any) -> Any:
        return self._lib.dispatch(self.__name__, self._spec, args)

    def __repr__(self) -> str:
        return f"<simulated NVML symbol {self.__name__}>"


class SimulatedNvml:
    """The fake library for one node-state file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._file = StateFile(self.path)
        self._init_count = 0
        for name, spec in _SYMBOLS.items():
            setattr(self, name, _Function(self, name, spec))

    def __repr__(self) -> str:
        return f"<simulated libnvidia-ml for {self.path}>"

    def dispatch(self, name: str, spec: _Spec, args: tuple[Any, ...]) -> Any:
        if spec.needs_init and self._init_count <= 0:
            return errors.UNINITIALIZED
        try:
            if not spec.needs_init:
                return spec.impl(self, *args)
            state = self._file.read()
            if state["faults"]:
                injected = self._injected_fault(name, state, args)
                if injected:
                    return injected
            if spec.mutates:
                if not user.is_root():
                    return errors.NO_PERMISSION
                with self._file.transaction() as fresh:
                    return spec.impl(_Call(self, fresh, _Index(fresh)), *args) or errors.SUCCESS
            index = self._file.index.get("library")
            if index is None:
                index = self._file.index["library"] = _Index(state)
            return spec.impl(_Call(self, state, index), *args) or errors.SUCCESS
        except NvmlError as exc:
            return exc.code
        except FileNotFoundError:
            return errors.DRIVER_NOT_LOADED

    def _injected_fault(self, name: str, state: dict[str, Any], args: tuple[Any, ...]) -> int:
        if not any(f["function"] == name for f in state["faults"]):
            return 0
        gpu_index = self._gpu_index_of(name, state, args)
        with self._file.transaction() as fresh:
            for fault in fresh["faults"]:
                if fault["function"] != name or fault["gpu"] not in (None, gpu_index):
                    continue
                if fault["remaining"] is not None:
                    fault["remaining"] -= 1
                    if fault["remaining"] <= 0:
                        fresh["faults"].remove(fault)
                return int(fault["error"])
        return 0

    @staticmethod
    def _gpu_index_of(name: str, state: dict[str, Any], args: tuple[Any, ...]) -> int | None:
        if not args:
            return None
        if name.startswith("nvmlDeviceGetHandleByIndex"):
            return _int(args[0])
        decoded = decode_handle(args[0]) if isinstance(args[0], ctypes._Pointer) else None  # pylint: disable=protected-access
        if decoded is None:
            return None
        kind, payload = decoded
        if kind == KIND_GPU:
            return payload
        index = _Index(state)
        found = index.gpu_instances.get(payload) if kind == KIND_GPU_INSTANCE else index.compute_instances.get(payload)
        return found[0]["index"] if found else None

    # Used by _symbol functions that manage initialisation (they receive the library itself).
    def initialize(self) -> int:
        try:
            state = self._file.read()
        except FileNotFoundError:
            return errors.DRIVER_NOT_LOADED
        if not state.get("driver_version"):
            # A node without a driver has no libnvidia-ml.so.1: pynvml's load fails (NVMLError_LibraryNotFound).
            return errors.LIBRARY_NOT_FOUND
        self._init_count += 1
        return errors.SUCCESS

    def shutdown(self) -> int:
        if self._init_count <= 0:
            return errors.UNINITIALIZED
        self._init_count -= 1
        if self._init_count == 0:
            self._file.close()
        return errors.SUCCESS


def load_library(path: str | os.PathLike[str]) -> SimulatedNvml:
    """Contract §1: the object pynvml uses as ``nvmlLib`` for the node-state file ``path``."""
    return SimulatedNvml(path)


# --- helpers shared by the symbols ----------------------------------------------------------------

def _model(gpu: dict[str, Any]) -> GpuModel:
    return mig.model_of(gpu)


def _require_mig_capable(gpu: dict[str, Any]) -> GpuModel:
    model = _model(gpu)
    if not model.mig_capable:
        raise NvmlError(errors.NOT_SUPPORTED, f"{model.name} has no MIG")
    return model


def _require_mig_enabled(gpu: dict[str, Any]) -> GpuModel:
    model = _require_mig_capable(gpu)
    if not gpu["mig_current"]:
        raise NvmlError(errors.NOT_SUPPORTED, "MIG mode is disabled")
    return model


def _profile_queries_allowed(call: _Call, gpu: dict[str, Any]) -> GpuModel:
    model = _require_mig_capable(gpu)
    if call.state["profile_queries_need_mig"] and not gpu["mig_current"]:
        raise NvmlError(errors.NOT_SUPPORTED, "this driver answers profile queries only with MIG enabled")
    return model


def _gi_profile_by_id(model: GpuModel, profile_id: int) -> Any:
    profile = model.gi_profile_by_id(profile_id)
    if profile is None:
        raise NvmlError(errors.NOT_SUPPORTED, f"{model.name} has no GPU instance profile id {profile_id}")
    return profile


def _ci_profile(model: GpuModel, gi: dict[str, Any], profile_id: int) -> Any:
    if not 0 <= profile_id < CI_PROFILE_COUNT:
        raise NvmlError(errors.INVALID_ARGUMENT, f"compute instance profile {profile_id}")
    profile = model.ci_profile_by_id(mig.gi_profile_of(model, gi), profile_id)
    if profile is None:
        raise NvmlError(errors.NOT_SUPPORTED, f"compute instance profile {profile_id} not offered by this GPU instance")
    return profile


def _check_version(struct: Any, expected: int) -> None:
    if struct.version != expected:
        raise NvmlError(errors.ARGUMENT_VERSION_MISMATCH, f"struct version 0x{struct.version:08X}")


def _gpu_handle(gpu: dict[str, Any]) -> int:
    return encode_handle(KIND_GPU, gpu["index"])


def _device_pointer(handle: int) -> Any:
    return ctypes.cast(ctypes.c_void_p(handle), pynvml.c_nvmlDevice_t)


def _used_memory_mib(state: dict[str, Any], uuids: set[str]) -> int:
    return sum(p["used_memory_mib"] for p in mig.processes_on(state, uuids))


# --- initialisation and system ------------------------------------------------------------------

@_symbol("nvmlInitWithFlags", needs_init=False)
def _init_with_flags(lib: SimulatedNvml, _flags: Any = 0) -> int:
    return lib.initialize()


@_symbol("nvmlInit_v2", "nvmlInit", needs_init=False)
def _init(lib: SimulatedNvml) -> int:
    return lib.initialize()


@_symbol("nvmlShutdown", needs_init=False)
def _shutdown(lib: SimulatedNvml) -> int:
    return lib.shutdown()


@_symbol("nvmlErrorString", needs_init=False)
def _error_string(_lib: SimulatedNvml, result: Any) -> bytes:
    return errors.error_string(_int(result)).encode()


@_symbol()
def nvmlSystemGetDriverVersion(call: _Call, buffer: Any, length: Any) -> None:
    _set_string(buffer, length, call.state["driver_version"])


@_symbol()
def nvmlSystemGetNVMLVersion(call: _Call, buffer: Any, length: Any) -> None:
    _set_string(buffer, length, nvml_version(call.state))


@_symbol("nvmlSystemGetCudaDriverVersion", "nvmlSystemGetCudaDriverVersion_v2")
def _cuda_driver_version(call: _Call, version: Any) -> None:
    _set_int(version, call.state["cuda_version"])


@_symbol()
def nvmlSystemGetProcessName(call: _Call, pid: Any, buffer: Any, length: Any) -> None:
    wanted = _int(pid)
    for process in call.state["processes"]:
        if process["pid"] == wanted:
            _set_string(buffer, length, process.get("name", "cuda-app"))
            return
    raise NvmlError(errors.NOT_FOUND, f"no process {wanted}")


# --- device discovery and identity -------------------------------------------------------------

@_symbol("nvmlDeviceGetCount_v2", "nvmlDeviceGetCount")
def _device_count(call: _Call, count: Any) -> None:
    _set_uint(count, len(call.state["gpus"]))


@_symbol("nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex")
def _handle_by_index(call: _Call, index: Any, device: Any) -> None:
    value = _int(index)
    if not 0 <= value < len(call.state["gpus"]):
        raise NvmlError(errors.INVALID_ARGUMENT, f"index {value}")
    _set_handle(device, encode_handle(KIND_GPU, value))


@_symbol()
def nvmlDeviceGetHandleByUUID(call: _Call, uuid: Any, device: Any) -> None:
    if uuid is None:
        raise NvmlError(errors.INVALID_ARGUMENT, "NULL uuid")
    found = call.index.uuids.get(_text(uuid).strip().lower())
    if found is None:
        raise NvmlError(errors.NOT_FOUND, f"uuid {_text(uuid)}")
    _set_handle(device, encode_handle(*found))


@_symbol("nvmlDeviceGetHandleByPciBusId_v2", "nvmlDeviceGetHandleByPciBusId")
def _handle_by_bus_id(call: _Call, bus_id: Any, device: Any) -> None:
    if bus_id is None:
        raise NvmlError(errors.INVALID_ARGUMENT, "NULL bus id")
    wanted = parse_bus_id(_text(bus_id))
    if wanted is None:
        raise NvmlError(errors.INVALID_ARGUMENT, f"bus id {_text(bus_id)!r}")
    for gpu in call.state["gpus"]:
        if parse_bus_id(gpu["pci_bus_id"]) == wanted:
            _set_handle(device, _gpu_handle(gpu))
            return
    raise NvmlError(errors.NOT_FOUND, f"bus id {_text(bus_id)}")


@_symbol()
def nvmlDeviceGetName(call: _Call, device: Any, buffer: Any, length: Any) -> None:
    gpu, mig_device = call.device(device)
    model = _model(gpu)
    name = model.name
    if mig_device:
        gi, ci = mig_device
        name = f"{model.name} MIG {mig.ci_profile_of(model, gi, ci).name}"
    _set_string(buffer, length, name)


@_symbol()
def nvmlDeviceGetUUID(call: _Call, device: Any, buffer: Any, length: Any) -> None:
    gpu, mig_device = call.device(device)
    _set_string(buffer, length, mig_device[1]["uuid"] if mig_device else gpu["uuid"])


@_symbol()
def nvmlDeviceGetIndex(call: _Call, device: Any, index: Any) -> None:
    _set_uint(index, call.gpu(device, mig_code=errors.NOT_SUPPORTED)["index"])


@_symbol()
def nvmlDeviceGetMinorNumber(call: _Call, device: Any, minor: Any) -> None:
    _set_uint(minor, call.gpu(device, mig_code=errors.NOT_SUPPORTED)["minor"])


def _memory(call: _Call, device: Any) -> tuple[int, int]:
    """(total, used) in bytes: a MIG device sees its GPU instance's memory."""
    gpu, mig_device = call.device(device)
    model = _model(gpu)
    if mig_device is None:
        return model.memory_total_mib * MIB, _used_memory_mib(call.state, mig.device_uuids(gpu)) * MIB
    gi, _ci = mig_device
    uuids = {ci["uuid"] for ci in gi["compute_instances"]}
    return mig.gi_profile_of(model, gi).memory_mib * MIB, _used_memory_mib(call.state, uuids) * MIB


@_symbol()
def nvmlDeviceGetMemoryInfo(call: _Call, device: Any, memory: Any) -> None:
    total, used = _memory(call, device)
    info = _struct(memory, pynvml.c_nvmlMemory_t)
    info.total, info.used, info.free = total, used, total - used


@_symbol()
def nvmlDeviceGetMemoryInfo_v2(call: _Call, device: Any, memory: Any) -> None:
    info = _struct(memory, pynvml.c_nvmlMemory_v2_t)
    _check_version(info, pynvml.nvmlMemory_v2)
    total, used = _memory(call, device)
    info.total, info.reserved, info.used, info.free = total, 0, used, total - used


@_symbol()
def nvmlDeviceGetPciInfo_v3(call: _Call, device: Any, pci: Any) -> None:
    gpu, _mig_device = call.device(device)
    model = _model(gpu)
    domain, bus, dev, function = parse_bus_id(gpu["pci_bus_id"])  # type: ignore[misc]
    info = _struct(pci, pynvml.nvmlPciInfo_t)
    info.busIdLegacy = f"{domain:04X}:{bus:02X}:{dev:02X}.{function}".encode()
    info.domain, info.bus, info.device = domain, bus, dev
    info.pciDeviceId = model.pci_device_id
    info.pciSubSystemId = model.pci_subsystem_id
    info.busId = gpu["pci_bus_id"].encode()


@_symbol()
def nvmlDeviceGetArchitecture(call: _Call, device: Any, arch: Any) -> None:
    gpu, _mig_device = call.device(device)
    _set_uint(arch, _model(gpu).architecture)


@_symbol()
def nvmlDeviceGetCudaComputeCapability(call: _Call, device: Any, major: Any, minor: Any) -> None:
    gpu, _mig_device = call.device(device)
    cc_major, cc_minor = _model(gpu).cuda_compute_capability
    _set_int(major, cc_major)
    _set_int(minor, cc_minor)


@_symbol("nvmlDeviceGetAttributes_v2", "nvmlDeviceGetAttributes")
def _attributes(call: _Call, device: Any, attributes: Any) -> None:
    gpu, mig_device = call.device(device)
    if mig_device is None:
        raise NvmlError(errors.NOT_SUPPORTED, "attributes exist for MIG device handles only")
    gi, ci = mig_device
    model = _model(gpu)
    gi_profile = mig.gi_profile_of(model, gi)
    ci_profile = mig.ci_profile_of(model, gi, ci)
    info = _struct(attributes, pynvml.c_nvmlDeviceAttributes)
    info.multiprocessorCount = ci_profile.multiprocessors
    info.sharedCopyEngineCount = gi_profile.copy_engines
    info.sharedDecoderCount = gi_profile.decoders
    info.sharedEncoderCount = gi_profile.encoders
    info.sharedJpegCount = gi_profile.jpegs
    info.sharedOfaCount = gi_profile.ofas
    info.gpuInstanceSliceCount = gi_profile.slice_count
    info.computeInstanceSliceCount = ci_profile.slice_count
    info.memorySizeMB = gi_profile.memory_mib


@_symbol()
def nvmlDeviceGetPersistenceMode(call: _Call, device: Any, mode: Any) -> None:
    _set_uint(mode, call.gpu(device, mig_code=errors.NOT_SUPPORTED)["persistence_mode"])


@_symbol(mutates=True)
def nvmlDeviceSetPersistenceMode(call: _Call, device: Any, mode: Any) -> None:
    value = _int(mode)
    if value not in (0, 1):
        raise NvmlError(errors.INVALID_ARGUMENT, f"persistence mode {value}")
    call.gpu(device, mig_code=errors.NOT_SUPPORTED)["persistence_mode"] = value


# --- MIG mode ----------------------------------------------------------------------------------

@_symbol()
def nvmlDeviceGetMigMode(call: _Call, device: Any, current: Any, pending: Any) -> None:
    gpu = call.gpu(device, mig_code=errors.NOT_SUPPORTED)
    _require_mig_capable(gpu)
    _set_uint(current, int(gpu["mig_current"]))
    _set_uint(pending, int(gpu["mig_pending"]))


@_symbol(mutates=True)
def nvmlDeviceSetMigMode(call: _Call, device: Any, mode: Any, activation_status: Any) -> None:
    gpu = call.gpu(device, mig_code=errors.NOT_SUPPORTED)
    _out(activation_status)
    _set_uint(activation_status, mig.set_mig_mode(call.state, gpu, _int(mode)))


@_symbol()
def nvmlDeviceGetMaxMigDeviceCount(call: _Call, device: Any, count: Any) -> None:
    gpu = call.gpu(device)
    model = _model(gpu)
    _set_uint(count, model.compute_slices if model.mig_capable and gpu["mig_current"] else 0)


@_symbol()
def nvmlDeviceIsMigDeviceHandle(call: _Call, device: Any, is_mig: Any) -> None:
    _gpu, mig_device = call.device(device)
    _set_uint(is_mig, int(mig_device is not None))


@_symbol()
def nvmlDeviceGetGpuInstanceId(call: _Call, device: Any, gi_id: Any) -> None:
    _gpu, mig_device = call.device(device)
    if mig_device is None:
        raise NvmlError(errors.NOT_SUPPORTED, "not a MIG device handle")
    _set_uint(gi_id, mig_device[0]["id"])


@_symbol()
def nvmlDeviceGetComputeInstanceId(call: _Call, device: Any, ci_id: Any) -> None:
    _gpu, mig_device = call.device(device)
    if mig_device is None:
        raise NvmlError(errors.NOT_SUPPORTED, "not a MIG device handle")
    _set_uint(ci_id, mig_device[1]["id"])


@_symbol()
def nvmlDeviceGetMigDeviceHandleByIndex(call: _Call, device: Any, index: Any, mig_device: Any) -> None:
    gpu = call.gpu(device)
    model = _require_mig_enabled(gpu)
    value = _int(index)
    if not 0 <= value < model.compute_slices:
        raise NvmlError(errors.INVALID_ARGUMENT, f"MIG device index {value}")
    devices = mig.mig_devices(gpu)
    if value >= len(devices):
        raise NvmlError(errors.NOT_FOUND, f"no MIG device {value}")
    _set_handle(mig_device, encode_handle(KIND_MIG_DEVICE, devices[value][1]["serial"]))


@_symbol()
def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(call: _Call, mig_device: Any, device: Any) -> None:
    gpu, _gi, _ci = call.mig_device(mig_device)
    _set_handle(device, _gpu_handle(gpu))


# --- GPU instance profiles and placements -----------------------------------------------------

def _fill_gi_profile_info(info: Any, profile: Any, with_name: bool) -> None:
    info.id = profile.id
    info.isP2pSupported = 0
    info.sliceCount = profile.slice_count
    info.instanceCount = profile.instance_count
    info.multiprocessorCount = profile.multiprocessors
    info.copyEngineCount = profile.copy_engines
    info.decoderCount = profile.decoders
    info.encoderCount = profile.encoders
    info.jpegCount = profile.jpegs
    info.ofaCount = profile.ofas
    info.memorySizeMB = profile.memory_mib
    if with_name:
        info.name = profile.nvml_name.encode()


def _gi_profile_by_enum(call: _Call, device: Any, enum: Any) -> Any:
    gpu = call.gpu(device)
    value = _int(enum)
    if not 0 <= value < GI_PROFILE_COUNT:
        raise NvmlError(errors.INVALID_ARGUMENT, f"GPU instance profile {value}")
    model = _profile_queries_allowed(call, gpu)
    profile = model.gi_profile_by_enum(value)
    if profile is None:
        raise NvmlError(errors.NOT_SUPPORTED, f"{model.name} has no GPU instance profile {value}")
    return profile


@_symbol()
def nvmlDeviceGetGpuInstanceProfileInfo(call: _Call, device: Any, profile: Any, info: Any) -> None:
    found = _gi_profile_by_enum(call, device, profile)
    _fill_gi_profile_info(_struct(info, pynvml.c_nvmlGpuInstanceProfileInfo_t), found, with_name=False)


@_symbol()
def nvmlDeviceGetGpuInstanceProfileInfoV(call: _Call, device: Any, profile: Any, info: Any) -> None:
    target = _struct(info, pynvml.c_nvmlGpuInstanceProfileInfo_v2_t)
    _check_version(target, pynvml.nvmlGpuInstanceProfileInfo_v2)
    _fill_gi_profile_info(target, _gi_profile_by_enum(call, device, profile), with_name=True)


@_symbol()
def nvmlDeviceGetGpuInstanceProfileInfoByIdV(call: _Call, device: Any, profile_id: Any, info: Any) -> None:
    target = _struct(info, pynvml.c_nvmlGpuInstanceProfileInfo_v2_t)
    _check_version(target, pynvml.nvmlGpuInstanceProfileInfo_v2)
    model = _profile_queries_allowed(call, call.gpu(device))
    _fill_gi_profile_info(target, _gi_profile_by_id(model, _int(profile_id)), with_name=True)


@_symbol()
def nvmlDeviceGetGpuInstanceRemainingCapacity(call: _Call, device: Any, profile_id: Any, count: Any) -> None:
    gpu = call.gpu(device)
    model = _profile_queries_allowed(call, gpu)
    _set_uint(count, mig.gi_remaining_capacity(gpu, _gi_profile_by_id(model, _int(profile_id))))


@_symbol("nvmlDeviceGetGpuInstancePossiblePlacements_v2", "nvmlDeviceGetGpuInstancePossiblePlacements")
def _gi_possible_placements(call: _Call, device: Any, profile_id: Any, placements: Any, count: Any) -> None:
    gpu = call.gpu(device)
    model = _profile_queries_allowed(call, gpu)
    profile = _gi_profile_by_id(model, _int(profile_id))
    items = [(start, profile.placement_size) for start in profile.placement_starts]
    _fill_array(placements, count, items, _write_placement, ctypes.sizeof(pynvml.c_nvmlGpuInstancePlacement_t))


# --- GPU instances -------------------------------------------------------------------------------

@_symbol(mutates=True)
def nvmlDeviceCreateGpuInstance(call: _Call, device: Any, profile_id: Any, gpu_instance: Any) -> None:
    gpu = call.gpu(device)
    _out(gpu_instance)
    gi = mig.create_gpu_instance(call.state, gpu, _int(profile_id))
    _set_handle(gpu_instance, encode_handle(KIND_GPU_INSTANCE, gi["serial"]))


@_symbol(mutates=True)
def nvmlDeviceCreateGpuInstanceWithPlacement(call: _Call, device: Any, profile_id: Any, placement: Any,
                                             gpu_instance: Any) -> None:
    gpu = call.gpu(device)
    _out(gpu_instance)
    start, size = _read_placement(placement)
    gi = mig.create_gpu_instance(call.state, gpu, _int(profile_id), start, size)
    _set_handle(gpu_instance, encode_handle(KIND_GPU_INSTANCE, gi["serial"]))


@_symbol(mutates=True)
def nvmlGpuInstanceDestroy(call: _Call, gpu_instance: Any) -> None:
    gpu, gi = call.gpu_instance(gpu_instance)
    mig.destroy_gpu_instance(call.state, gpu, gi)


@_symbol()
def nvmlDeviceGetGpuInstances(call: _Call, device: Any, profile_id: Any, instances: Any, count: Any) -> None:
    gpu = call.gpu(device)
    model = _require_mig_enabled(gpu)
    profile = _gi_profile_by_id(model, _int(profile_id))
    items = [encode_handle(KIND_GPU_INSTANCE, gi["serial"]) for gi in gpu["gpu_instances"] if gi["profile_id"] == profile.id]
    _fill_array(instances, count, items, _write_handle, ctypes.sizeof(ctypes.c_void_p))


@_symbol()
def nvmlDeviceGetGpuInstanceById(call: _Call, device: Any, gi_id: Any, gpu_instance: Any) -> None:
    gpu = call.gpu(device)
    _require_mig_enabled(gpu)
    wanted = _int(gi_id)
    for gi in gpu["gpu_instances"]:
        if gi["id"] == wanted:
            _set_handle(gpu_instance, encode_handle(KIND_GPU_INSTANCE, gi["serial"]))
            return
    raise NvmlError(errors.NOT_FOUND, f"no GPU instance {wanted}")


@_symbol()
def nvmlGpuInstanceGetInfo(call: _Call, gpu_instance: Any, info: Any) -> None:
    gpu, gi = call.gpu_instance(gpu_instance)
    target = _struct(info, pynvml.c_nvmlGpuInstanceInfo_t)
    target.device = _device_pointer(_gpu_handle(gpu))
    target.id = gi["id"]
    target.profileId = gi["profile_id"]
    target.placement.start = gi["start"]
    target.placement.size = gi["size"]


# --- compute instances -----------------------------------------------------------------------------

def _fill_ci_profile_info(info: Any, gi_profile: Any, profile: Any, with_name: bool) -> None:
    info.id = profile.id
    info.sliceCount = profile.slice_count
    info.instanceCount = profile.instance_count
    info.multiprocessorCount = profile.multiprocessors
    info.sharedCopyEngineCount = gi_profile.copy_engines
    info.sharedDecoderCount = gi_profile.decoders
    info.sharedEncoderCount = gi_profile.encoders
    info.sharedJpegCount = gi_profile.jpegs
    info.sharedOfaCount = gi_profile.ofas
    if with_name:
        info.name = profile.nvml_name.encode()


def _ci_profile_query(call: _Call, gpu_instance: Any, profile: Any, eng_profile: Any) -> tuple[Any, Any]:
    gpu, gi = call.gpu_instance(gpu_instance)
    mig.check_engine_profile(_int(eng_profile))
    model = _model(gpu)
    return mig.gi_profile_of(model, gi), _ci_profile(model, gi, _int(profile))


@_symbol()
def nvmlGpuInstanceGetComputeInstanceProfileInfo(call: _Call, gpu_instance: Any, profile: Any, eng_profile: Any,
                                                 info: Any) -> None:
    gi_profile, ci_profile = _ci_profile_query(call, gpu_instance, profile, eng_profile)
    _fill_ci_profile_info(_struct(info, pynvml.c_nvmlComputeInstanceProfileInfo_t), gi_profile, ci_profile, False)


@_symbol()
def nvmlGpuInstanceGetComputeInstanceProfileInfoV(call: _Call, gpu_instance: Any, profile: Any, eng_profile: Any,
                                                  info: Any) -> None:
    target = _struct(info, pynvml.c_nvmlComputeInstanceProfileInfo_v2_t)
    _check_version(target, pynvml.nvmlComputeInstanceProfileInfo_v2)
    gi_profile, ci_profile = _ci_profile_query(call, gpu_instance, profile, eng_profile)
    _fill_ci_profile_info(target, gi_profile, ci_profile, True)


@_symbol()
def nvmlGpuInstanceGetComputeInstanceRemainingCapacity(call: _Call, gpu_instance: Any, profile_id: Any,
                                                       count: Any) -> None:
    gpu, gi = call.gpu_instance(gpu_instance)
    _set_uint(count, mig.ci_remaining_capacity(gi, _ci_profile(_model(gpu), gi, _int(profile_id))))


@_symbol()
def nvmlGpuInstanceGetComputeInstancePossiblePlacements(call: _Call, gpu_instance: Any, profile_id: Any,
                                                        placements: Any, count: Any) -> None:
    gpu, gi = call.gpu_instance(gpu_instance)
    profile = _ci_profile(_model(gpu), gi, _int(profile_id))
    items = [(start, profile.slice_count) for start in profile.placement_starts]
    _fill_array(placements, count, items, _write_placement, ctypes.sizeof(pynvml.c_nvmlComputeInstancePlacement_t))


@_symbol(mutates=True)
def nvmlGpuInstanceCreateComputeInstance(call: _Call, gpu_instance: Any, profile_id: Any, compute_instance: Any) -> None:
    gpu, gi = call.gpu_instance(gpu_instance)
    _out(compute_instance)
    ci = mig.create_compute_instance(call.state, gpu, gi, _int(profile_id))
    _set_handle(compute_instance, encode_handle(KIND_COMPUTE_INSTANCE, ci["serial"]))


@_symbol(mutates=True)
def nvmlGpuInstanceCreateComputeInstanceWithPlacement(call: _Call, gpu_instance: Any, profile_id: Any, placement: Any,
                                                      compute_instance: Any) -> None:
    gpu, gi = call.gpu_instance(gpu_instance)
    _out(compute_instance)
    start, size = _read_placement(placement)
    ci = mig.create_compute_instance(call.state, gpu, gi, _int(profile_id), start, size)
    _set_handle(compute_instance, encode_handle(KIND_COMPUTE_INSTANCE, ci["serial"]))


@_symbol(mutates=True)
def nvmlComputeInstanceDestroy(call: _Call, compute_instance: Any) -> None:
    _gpu, gi, ci = call.compute_instance(compute_instance)
    mig.destroy_compute_instance(call.state, gi, ci)


@_symbol()
def nvmlGpuInstanceGetComputeInstances(call: _Call, gpu_instance: Any, profile_id: Any, instances: Any,
                                       count: Any) -> None:
    gpu, gi = call.gpu_instance(gpu_instance)
    profile = _ci_profile(_model(gpu), gi, _int(profile_id))
    items = [encode_handle(KIND_COMPUTE_INSTANCE, ci["serial"]) for ci in gi["compute_instances"] if ci["profile_id"] == profile.id]
    _fill_array(instances, count, items, _write_handle, ctypes.sizeof(ctypes.c_void_p))


@_symbol()
def nvmlGpuInstanceGetComputeInstanceById(call: _Call, gpu_instance: Any, ci_id: Any, compute_instance: Any) -> None:
    _gpu, gi = call.gpu_instance(gpu_instance)
    wanted = _int(ci_id)
    for ci in gi["compute_instances"]:
        if ci["id"] == wanted:
            _set_handle(compute_instance, encode_handle(KIND_COMPUTE_INSTANCE, ci["serial"]))
            return
    raise NvmlError(errors.NOT_FOUND, f"no compute instance {wanted}")


@_symbol("nvmlComputeInstanceGetInfo_v2", "nvmlComputeInstanceGetInfo")
def _compute_instance_info(call: _Call, compute_instance: Any, info: Any) -> None:
    gpu, gi, ci = call.compute_instance(compute_instance)
    target = _struct(info, pynvml.c_nvmlComputeInstanceInfo_t)
    target.device = _device_pointer(_gpu_handle(gpu))
    target.gpuInstance = ctypes.cast(ctypes.c_void_p(encode_handle(KIND_GPU_INSTANCE, gi["serial"])),
                                     pynvml.c_nvmlGpuInstance_t)
    target.id = ci["id"]
    target.profileId = ci["profile_id"]
    target.placement.start = ci["start"]
    target.placement.size = ci["size"]


# --- processes ---------------------------------------------------------------------------------------

def _write_process(address: int, _i: int, item: tuple[int, int, int, int]) -> None:
    target = pynvml.c_nvmlProcessInfo_v3_t.from_address(address)
    target.pid, target.usedGpuMemory, target.gpuInstanceId, target.computeInstanceId = item


@_symbol("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2")
def _running_processes(call: _Call, device: Any, count: Any, infos: Any) -> None:
    gpu, mig_device = call.device(device)
    ids = {ci["uuid"]: (gi["id"], ci["id"]) for gi, ci in mig.iter_compute_instances(gpu)}
    uuids = {mig_device[1]["uuid"]} if mig_device else mig.device_uuids(gpu)
    items = [(p["pid"], p["used_memory_mib"] * MIB, *ids.get(p["device_uuid"], (mig.NO_ID, mig.NO_ID)))
             for p in mig.processes_on(call.state, uuids)]
    capacity = ctypes.c_uint.from_address(_out(count))
    if items and (_address(infos) is None or capacity.value < len(items)):
        capacity.value = len(items)
        raise NvmlError(errors.INSUFFICIENT_SIZE, f"{len(items)} processes")
    _fill_array(infos, count, items, _write_process, ctypes.sizeof(pynvml.c_nvmlProcessInfo_v3_t))


def exported_symbols() -> list[str]:
    return sorted(_SYMBOLS)


def gpu_of(path: str, ident: int | str) -> dict[str, Any]:
    """The state record of one GPU (for tests and tools)."""
    return find_gpu(read_state(path), ident)
