"""The node-state file of the NVML simulator, and the node-level operations on it.

One JSON file holds everything NVML would report for one node: driver versions, the GPUs, their
MIG mode and instances, running processes, clients that hold GPUs open, the reset policy and
injected faults. Every process of the node (Ansible modules, the simulated kubelet, the
``nvidia-smi`` stand-in) works on the same file:

- reads take a shared ``fcntl.flock`` on ``<file>.lock``, writes an exclusive one;
- writes go to a temporary file that is renamed over the state file, so a reader never sees a
  half-written file.

The format belongs to the simulator; product code never reads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sys
import tempfile
import weakref
from typing import Any, Iterator

from gpuops_sim.nvml import errors, mig
from gpuops_sim.nvml.models import GpuModel, find_model

FORMAT = 1
DEFAULT_DRIVER_VERSION = "550.54.15"
DEFAULT_CUDA_VERSION = 12040
DEFAULT_NODE = "node"

State = dict[str, Any]


# --- file access ------------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(path: str, exclusive: bool) -> Iterator[None]:
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _read_raw(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _encode(state: State) -> bytes:
    # Compact on purpose: the C encoder only runs without indent, and `nvml show` is for humans.
    return json.dumps(state, separators=(",", ":")).encode()


def _write(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".nvml-state.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _release(held: list[int | None]) -> None:
    if held[0] is not None:
        os.close(held[0])
        held[0] = None


class StateFile:
    """A node-state file. ``read()`` looks at the file on every call but reads it again only when
    it was replaced, and parses it only when its bytes changed; the dict it returns is shared and
    must not be mutated.

    Every write replaces the file (a new inode, see ``_write``), so a file whose inode, size and
    modification time are those of the last read holds the same bytes. A descriptor of the last
    file read is kept, so that its inode cannot be reused by a later write while it is the one
    compared with; it is closed with the object.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._raw: bytes | None = None
        self._state: State | None = None
        self._held: list[int | None] = [None]
        weakref.finalize(self, _release, self._held)
        self.index: dict[str, Any] = {}

    def read(self) -> State:
        held = self._held[0]
        if self._state is not None and held is not None:
            try:
                if _signature(os.stat(self.path)) == _signature(os.fstat(held)):
                    return self._state
            except FileNotFoundError:
                pass  # read below, which reports it
        with _locked(self.path, exclusive=False):
            with open(self.path, "rb") as handle:
                raw = handle.read()
                kept = os.dup(handle.fileno())
        _release(self._held)
        self._held[0] = kept
        if raw != self._raw or self._state is None:
            self._state = json.loads(raw)
            self._raw = raw
            self.index = {}  # derived lookups, rebuilt lazily by the library for this version
        return self._state

    def close(self) -> None:
        _release(self._held)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[State]:
        """Exclusive read-modify-write; the state is written back only if it changed."""
        with _locked(self.path, exclusive=True):
            raw = _read_raw(self.path)
            state = json.loads(raw)
            yield state
            data = _encode(state)
            if data != raw:
                _write(self.path, data)


def read_state(path: str | os.PathLike[str]) -> State:
    """A private copy of the node's state, read once."""
    path = os.fspath(path)
    with _locked(path, exclusive=False):
        return json.loads(_read_raw(path))


def transaction(path: str | os.PathLike[str]) -> contextlib.AbstractContextManager[State]:
    return StateFile(path).transaction()


# --- building a node --------------------------------------------------------------------------

def bus_id(model: GpuModel, index: int) -> str:
    buses = model.bus_numbers
    return f"{index // len(buses):08X}:{buses[index % len(buses)]:02X}:00.0"


def build_state(model: GpuModel, count: int, mig_enabled: bool = False, node_name: str = DEFAULT_NODE,
                reset_policy: str = "reset", driver_version: str | None = DEFAULT_DRIVER_VERSION,
                cuda_version: int = DEFAULT_CUDA_VERSION) -> State:
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if reset_policy not in mig.RESET_POLICIES:
        raise ValueError(f"reset_policy must be one of {', '.join(mig.RESET_POLICIES)}, got {reset_policy!r}")
    if mig_enabled and not model.mig_capable:
        raise ValueError(f"mig_enabled: {model.name} does not support MIG")
    gpus = [{
        "index": i,
        "uuid": "GPU-" + mig.derived_uuid(node_name, "gpu", i),
        "model": model.name,
        "pci_bus_id": bus_id(model, i),
        "minor": i,
        "mig_current": mig_enabled,
        "mig_pending": mig_enabled,
        "persistence_mode": 1,
        "clients": [],
        "gpu_instances": [],
    } for i in range(count)]
    return {
        "format": FORMAT,
        "node": node_name,
        "seed": node_name,
        "driver_version": driver_version,
        "cuda_version": cuda_version,
        "reset_policy": reset_policy,
        "mig_disable_with_instances": "in_use",
        "profile_queries_need_mig": False,
        "next_serial": 1,
        "boot_count": 0,
        "gpus": gpus,
        "processes": [],
        "faults": [],
    }


def init_node(path: str | os.PathLike[str], model: str | GpuModel, count: int, mig_enabled: bool = False,
              node_name: str = DEFAULT_NODE, reset_policy: str = "reset",
              driver_version: str | None = DEFAULT_DRIVER_VERSION, cuda_version: int = DEFAULT_CUDA_VERSION) -> State:
    """Create (or overwrite) a node-state file with ``count`` identical GPUs; return the state.
    ``driver_version`` None: a node without a driver (NVML cannot be loaded until one is installed
    and the node rebooted)."""
    gpu_model = model if isinstance(model, GpuModel) else find_model(model)
    state = build_state(gpu_model, count, mig_enabled, node_name, reset_policy, driver_version, cuda_version)
    target = os.fspath(path)
    with _locked(target, exclusive=True):
        _write(target, _encode(state))
    return state


# --- looking things up ------------------------------------------------------------------------

_BUS_RE = re.compile(r"^(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})(?:\.([0-9a-fA-F]))?$")


def parse_bus_id(text: str) -> tuple[int, int, int, int] | None:
    """Accept the forms NVML accepts (%x:%x:%x.%x, %x:%x:%x, %x:%x.%x); None if it is not one."""
    match = _BUS_RE.match(text.strip())
    if not match:
        return None
    domain, bus, device, function = match.groups()
    return int(domain or "0", 16), int(bus, 16), int(device, 16), int(function or "0", 16)


def find_gpu(state: State, ident: int | str) -> dict[str, Any]:
    """A GPU by index, UUID or PCI bus id; raise LookupError naming the value."""
    text = str(ident).strip()
    if text.isdigit() and int(text) < len(state["gpus"]):
        return state["gpus"][int(text)]
    for gpu in state["gpus"]:
        if gpu["uuid"].lower() == text.lower():
            return gpu
    wanted = parse_bus_id(text)
    if wanted is not None:
        for gpu in state["gpus"]:
            if parse_bus_id(gpu["pci_bus_id"]) == wanted:
                return gpu
    raise LookupError(f"no GPU {ident!r} on node {state['node']} (index, UUID or PCI bus id)")


def find_device_uuid(state: State, device_uuid: str) -> tuple[dict[str, Any], tuple[dict, dict] | None]:
    """(gpu, (gi, ci) or None) for a GPU or MIG device UUID; raise LookupError."""
    for gpu in state["gpus"]:
        if gpu["uuid"] == device_uuid:
            return gpu, None
        for gi, ci in mig.iter_compute_instances(gpu):
            if ci["uuid"] == device_uuid:
                return gpu, (gi, ci)
    raise LookupError(f"no GPU or MIG device with UUID {device_uuid!r} on node {state['node']}")


# --- what `nvml show` prints --------------------------------------------------------------------

def cuda_version_text(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"


def render(state: State) -> dict[str, Any]:
    gpus = []
    for gpu in state["gpus"]:
        model = mig.model_of(gpu)
        instances = []
        for gi in gpu["gpu_instances"]:
            profile = mig.gi_profile_of(model, gi)
            instances.append({
                "id": gi["id"],
                "profile_id": gi["profile_id"],
                "profile": profile.name,
                "placement": {"start": gi["start"], "size": gi["size"]},
                "memory_mib": profile.memory_mib,
                "multiprocessors": profile.multiprocessors,
                "slices": profile.slice_count,
                "compute_instances": [{
                    "id": ci["id"],
                    "profile_id": ci["profile_id"],
                    "profile": mig.ci_profile_of(model, gi, ci).name,
                    "multiprocessors": mig.ci_profile_of(model, gi, ci).multiprocessors,
                    "placement": {"start": ci["start"], "size": ci["size"]},
                    "device_uuid": ci["uuid"],
                } for ci in gi["compute_instances"]],
            })
        ids = {ci["uuid"]: (gi["id"], ci["id"]) for gi, ci in mig.iter_compute_instances(gpu)}
        processes = [{
            "pid": p["pid"],
            "used_memory_mib": p["used_memory_mib"],
            "device_uuid": p["device_uuid"],
            "gi_id": ids.get(p["device_uuid"], (None, None))[0],
            "ci_id": ids.get(p["device_uuid"], (None, None))[1],
        } for p in mig.processes_on(state, mig.device_uuids(gpu))]
        gpus.append({
            "index": gpu["index"],
            "uuid": gpu["uuid"],
            "name": model.name,
            "pci_device_id": f"0x{model.pci_device_id:08X}",
            "pci_subsystem_id": f"0x{model.pci_subsystem_id:08X}",
            "pci_bus_id": gpu["pci_bus_id"],
            "memory_total_mib": model.memory_total_mib,
            "architecture": model.architecture,
            "mig": {"capable": model.mig_capable, "current": gpu["mig_current"], "pending": gpu["mig_pending"]},
            "gpu_instances": instances,
            "processes": processes,
            "clients": list(gpu["clients"]),
            "persistence_mode": gpu["persistence_mode"],
        })
    return {
        "node": state["node"],
        "driver_version": state["driver_version"],
        "cuda_version": cuda_version_text(state["cuda_version"]),
        "nvml_version": nvml_version(state),
        "reset_policy": state["reset_policy"],
        "mig_disable_with_instances": state["mig_disable_with_instances"],
        "profile_queries_need_mig": state["profile_queries_need_mig"],
        "boot_count": state["boot_count"],
        "gpus": gpus,
        "faults": [dict(f) for f in state["faults"]],
    }


def nvml_version(state: State) -> str:
    return f"{state['cuda_version'] // 1000}.{state['driver_version']}"


def show(path: str | os.PathLike[str]) -> dict[str, Any]:
    return render(read_state(path))


# --- processes, clients, faults, policy ---------------------------------------------------------

def attach_process(path: str | os.PathLike[str], device_uuid: str, pid: int, used_memory_mib: int,
                   source: str = "api") -> None:
    """Register a process on a GPU or MIG device (replacing an earlier record of the same pid)."""
    if used_memory_mib < 0:
        raise ValueError(f"used_memory_mib must be >= 0, got {used_memory_mib}")
    with transaction(path) as state:
        find_device_uuid(state, device_uuid)
        state["processes"] = [p for p in state["processes"] if p["pid"] != pid]
        state["processes"].append({"pid": int(pid), "used_memory_mib": int(used_memory_mib),
                                   "device_uuid": device_uuid, "source": source})


def detach_process(path: str | os.PathLike[str], pid: int) -> bool:
    """Forget a process; True if it was there. Unknown pids are fine (the process already died)."""
    with transaction(path) as state:
        before = len(state["processes"])
        state["processes"] = [p for p in state["processes"] if p["pid"] != pid]
        return len(state["processes"]) != before


def next_fault_pid(state: State) -> int:
    return max([90000, *(p["pid"] + 1 for p in state["processes"])])


def add_fault(path: str | os.PathLike[str], function: str, error: int | str, count: int = 1,
              gpu: int | None = None) -> dict[str, Any]:
    """Make the next ``count`` calls of NVML symbol ``function`` fail (count 0: until cleared),
    optionally only calls about GPU ``gpu`` (by index)."""
    if not re.fullmatch(r"nvml\w+", function):
        raise ValueError(f"function must be an NVML symbol such as nvmlDeviceCreateGpuInstance, got {function!r}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    fault = {"function": function, "error": errors.parse_code(error), "remaining": count or None, "gpu": gpu}
    with transaction(path) as state:
        if gpu is not None:
            find_gpu(state, gpu)
        state["faults"].append(fault)
    return fault


def add_client(path: str | os.PathLike[str], gpu: int | str, name: str) -> None:
    """A client such as nvidia-persistenced or dcgm that keeps the GPU open (blocks a reset)."""
    with transaction(path) as state:
        target = find_gpu(state, gpu)
        if name not in target["clients"]:
            target["clients"].append(name)


def remove_client(path: str | os.PathLike[str], gpu: int | str, name: str | None = None) -> None:
    with transaction(path) as state:
        target = find_gpu(state, gpu)
        target["clients"] = [c for c in target["clients"] if name is not None and c != name]


def set_service(path: str | os.PathLike[str], name: str, active: bool) -> None:
    """A host service that keeps every GPU open while active (nvidia-persistenced, DCGM, ...)."""
    if not name:
        raise ValueError("service: a name is required")
    with transaction(path) as state:
        state.setdefault("services", {})[name] = {"active": bool(active)}


def service_active(path: str | os.PathLike[str], name: str) -> bool | None:
    """True/False for a simulated service, None for one the node does not have."""
    service = read_state(path).get("services", {}).get(name)
    return None if service is None else bool(service["active"])


def set_kernel_module(path: str | os.PathLike[str], name: str, loaded: bool) -> None:
    """Load or unload a simulated kernel module (nvidia_drm holds every GPU while loaded)."""
    with transaction(path) as state:
        modules = [m for m in state.get("kernel_modules", []) if m != name]
        state["kernel_modules"] = modules + ([name] if loaded else [])


def kernel_modules(path: str | os.PathLike[str]) -> list[str]:
    return ["nvidia", "nvidia_uvm", "nvidia_modeset", *read_state(path).get("kernel_modules", [])]


def set_setting(path: str | os.PathLike[str], key: str, value: Any) -> None:
    allowed = {
        "reset_policy": mig.RESET_POLICIES,
        "mig_disable_with_instances": mig.DISABLE_WITH_INSTANCES,
        "profile_queries_need_mig": (True, False),
    }
    if key not in allowed or value not in allowed[key]:
        raise ValueError(f"{key}: {value!r} is not one of {allowed.get(key)}")
    with transaction(path) as state:
        state[key] = value


#: The NVML calls that open a device: a fault injected on one of them makes the device unreachable
#: for every client that opens it that way (nvidia-smi in a container opens its devices by UUID).
HANDLE_FUNCTIONS = ("nvmlDeviceGetHandleByUUID", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByIndex_v2")


def device_error(path: str | os.PathLike[str], device_uuid: str) -> tuple[int, str] | None:
    """Why a client that opens ``device_uuid`` (a GPU or MIG device) could not use it, as NVML's
    return code and text: the device does not exist (any more), or a fault injected on a call that
    opens a device (HANDLE_FUNCTIONS) covers its GPU, e.g. GPU_IS_LOST for a GPU that fell off the
    bus. None when the device is usable. The faults are read, not used up."""
    state = read_state(path)
    try:
        gpu = find_device_uuid(state, device_uuid)[0]
    except LookupError:
        return errors.NOT_FOUND, errors.error_string(errors.NOT_FOUND)
    index = state["gpus"].index(gpu)
    for fault in state["faults"]:
        if fault["function"] in HANDLE_FUNCTIONS and fault["gpu"] in (None, index):
            return int(fault["error"]), errors.error_string(int(fault["error"]))
    return None


def clear_faults(path: str | os.PathLike[str]) -> None:
    """Drop injected function faults, blocking clients and processes added by ``nvml fault``."""
    with transaction(path) as state:
        state["faults"] = []
        state["processes"] = [p for p in state["processes"] if p.get("source") != "fault"]
        for gpu in state["gpus"]:
            gpu["clients"] = []


# --- reset and reboot ---------------------------------------------------------------------------

class ResetError(Exception):
    """A GPU reset that did not happen; ``exit_code`` is what nvidia-smi would exit with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def reset_gpus(path: str | os.PathLike[str], idents: list[int | str] | None = None) -> list[str]:
    """The simulator's ``nvidia-smi -r -i <ids>``: reset each GPU that nothing holds (pending MIG
    mode becomes current, all GPU/compute instances vanish). Returns one line per reset GPU;
    raises ResetError after resetting the others if any GPU could not be reset."""
    lines: list[str] = []
    failures: list[str] = []
    exit_code = 0
    with transaction(path) as state:
        targets = [find_gpu(state, i) for i in idents] if idents else list(state["gpus"])
        for gpu in targets:
            if state["reset_policy"] == "reboot":
                failures.append(f"Resetting GPU {gpu['pci_bus_id']} is not supported.")
                exit_code = exit_code or 3
                continue
            reason = mig.busy_reason(state, gpu)
            if reason:
                failures.append(f"Unable to reset GPU {gpu['pci_bus_id']}: In use by another client ({reason}).")
                exit_code = 255
                continue
            mig.apply_pending(gpu)
            lines.append(f"GPU {gpu['pci_bus_id']} was successfully reset.")
    if failures:
        raise ResetError("\n".join(lines + failures), exit_code)
    return lines


def reset_gpu(path: str | os.PathLike[str], gpu: int | str) -> str:
    return reset_gpus(path, [gpu])[0]


def reboot(path: str | os.PathLike[str]) -> None:
    """A node reboot: processes die, instances vanish, pending MIG modes apply; Hopper and later
    keep MIG mode only while the driver is loaded, so they come back with MIG disabled."""
    with transaction(path) as state:
        state["processes"] = []
        state["boot_count"] += 1
        # A driver installed since the last boot is the one the kernel loads now; with the
        # ``loads`` fault (set_driver_faults), a stale initramfs or a DKMS build for another kernel
        # loads that version instead.
        if state.get("installed_driver_version"):
            state["driver_version"] = state.pop("installed_driver_version")
            loads = (state.get("driver_faults") or {}).get("loads")
            if loads:
                state["driver_version"] = loads
        # Enabled host services start again at boot; a stop for a reset does not outlive it.
        for service in state.get("services", {}).values():
            service["active"] = True
        for gpu in state["gpus"]:
            mig.apply_pending(gpu)
            if mig.model_of(gpu).resetless_mig:
                gpu["mig_current"] = gpu["mig_pending"] = False


class DriverInstallError(RuntimeError):
    """The driver package failed to install (the ``install_error`` fault of set_driver_faults)."""


#: The faults of a node's driver and boot, as a real node shows them (see set_driver_faults).
DRIVER_FAULTS = ("install_error", "loads", "kubelet_down")


def set_driver_faults(path: str | os.PathLike[str], **faults: Any) -> dict[str, Any]:
    """Faults of the node's driver and boot, None clearing one: ``install_error`` (the install
    command fails with that message, as a failed DKMS build does), ``loads`` (the next reboot loads
    that driver version instead of the installed one), ``kubelet_down`` (the kubelet does not start
    at boot: the node stays NotReady). Returns the faults now set."""
    unknown = set(faults) - set(DRIVER_FAULTS)
    if unknown:
        raise ValueError(f"unknown driver faults {sorted(unknown)}: one of {', '.join(DRIVER_FAULTS)}")
    with transaction(path) as state:
        current = state.setdefault("driver_faults", {})
        for name, value in faults.items():
            if value in (None, False, ""):
                current.pop(name, None)
            else:
                current[name] = value
        return dict(current)


def install_driver(path: str | os.PathLike[str], version: str) -> str | None:
    """A driver package installed on the node: NVML keeps reporting the loaded driver (or, on a node
    that had none, cannot be opened) until the next reboot loads this one. Its nvidia-smi goes to
    the node's /usr/bin (under the node's root, where the node has one). Returns the loaded version.
    Raises DriverInstallError with the ``install_error`` fault set."""
    if not re.match(r"^[0-9]+\.[0-9]+(\.[0-9]+)?$", version):
        raise ValueError(f"driver version {version!r} is not like 570.86.15")
    error = (read_state(path).get("driver_faults") or {}).get("install_error")
    if error:
        raise DriverInstallError(f"driver {version}: {error}")
    with transaction(path) as state:
        if version == state["driver_version"]:
            state.pop("installed_driver_version", None)
        else:
            state["installed_driver_version"] = version
        root = (state.get("host") or {}).get("root")
        if root:
            install_driver_tools(root)
        return state["driver_version"]


def load_driver(path: str | os.PathLike[str], version: str) -> None:
    """A containerized driver (the GPU Operator's driver pod) built and loaded its kernel module:
    NVML opens with ``version`` at once, without a reboot."""
    if not re.match(r"^[0-9]+\.[0-9]+(\.[0-9]+)?$", version):
        raise ValueError(f"driver version {version!r} is not like 570.86.15")
    with transaction(path) as state:
        state["driver_version"] = version
        state.pop("installed_driver_version", None)


def install_driver_tools(root: str) -> None:
    """The driver's commands on the node's PATH (<root>/usr/bin): the simulated nvidia-smi."""
    bin_dir = os.path.join(root, "usr", "bin")
    os.makedirs(bin_dir, exist_ok=True)
    target = os.path.join(bin_dir, "nvidia-smi")
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(f"#!/bin/sh\nexec {sys.executable} {os.path.join(os.path.dirname(os.path.abspath(__file__)), 'bin', 'nvidia-smi')} \"$@\"\n")
    os.chmod(target, 0o755)


def set_mig_mode(path: str | os.PathLike[str], gpu: int | str, mode: int) -> int:
    """nvmlDeviceSetMigMode outside NVML (for the nvidia-smi stand-in); returns activationStatus."""
    with transaction(path) as state:
        return mig.set_mig_mode(state, find_gpu(state, gpu), mode)
