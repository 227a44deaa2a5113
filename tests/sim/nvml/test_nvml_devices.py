"""Device identity, string/struct marshalling, handles and running processes under real pynvml."""

from __future__ import annotations

import pynvml
import pytest

from gpuops_sim import nvml as sim
from gpuops_sim.nvml.models import MIB
from nvml_sim_support import install, uninstall


def test_system_strings_and_versions(simulated_node):
    simulated_node("NVIDIA A100-SXM4-40GB", count=8)
    assert pynvml.nvmlSystemGetDriverVersion() == "550.54.15"
    assert pynvml.nvmlSystemGetNVMLVersion() == "12.550.54.15"
    assert pynvml.nvmlSystemGetCudaDriverVersion() == 12040
    assert pynvml.nvmlSystemGetCudaDriverVersion_v2() == 12040
    assert pynvml.nvmlDeviceGetCount() == 8


def test_device_identity_and_pci_info(simulated_node):
    simulated_node("NVIDIA A100-SXM4-40GB", count=8, node_name="dgx-a")
    handle = pynvml.nvmlDeviceGetHandleByIndex(2)
    assert pynvml.nvmlDeviceGetName(handle) == "NVIDIA A100-SXM4-40GB"
    assert pynvml.nvmlDeviceGetIndex(handle) == 2
    assert pynvml.nvmlDeviceGetMinorNumber(handle) == 2
    assert pynvml.nvmlDeviceGetArchitecture(handle) == pynvml.NVML_DEVICE_ARCH_AMPERE
    assert pynvml.nvmlDeviceGetCudaComputeCapability(handle) == (8, 0)
    pci = pynvml.nvmlDeviceGetPciInfo(handle)
    assert (pci.busId, pci.busIdLegacy, pci.bus, pci.pciDeviceId, pci.pciSubSystemId) == (
        "00000000:47:00.0", "0000:47:00.0", 0x47, 0x20B010DE, 0x134F10DE)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    assert (memory.total, memory.used, memory.free) == (40960 * MIB, 0, 40960 * MIB)
    memory_v2 = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
    assert memory_v2.total == 40960 * MIB
    uuid = pynvml.nvmlDeviceGetUUID(handle)
    assert uuid.startswith("GPU-") and len(uuid) == 40
    for lookup in (lambda: pynvml.nvmlDeviceGetHandleByUUID(uuid),
                   lambda: pynvml.nvmlDeviceGetHandleByPciBusId("00000000:47:00.0"),
                   lambda: pynvml.nvmlDeviceGetHandleByPciBusId("0000:47:00.0"),
                   lambda: pynvml.nvmlDeviceGetHandleByPciBusId("47:00.0")):
        assert pynvml.nvmlDeviceGetIndex(lookup()) == 2
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlDeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000")
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlDeviceGetHandleByPciBusId("00000000:99:00.0")
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetHandleByIndex(8)
    assert pynvml.nvmlDeviceGetPersistenceMode(handle) == 1
    pynvml.nvmlDeviceSetPersistenceMode(handle, 0)
    assert pynvml.nvmlDeviceGetPersistenceMode(handle) == 0


def test_uuids_are_deterministic_per_node_name(tmp_path):
    first = sim.init_node(tmp_path / "a.json", "a30", 2, node_name="n1")
    again = sim.init_node(tmp_path / "b.json", "a30", 2, node_name="n1")
    other = sim.init_node(tmp_path / "c.json", "a30", 2, node_name="n2")
    assert [g["uuid"] for g in first["gpus"]] == [g["uuid"] for g in again["gpus"]]
    assert [g["uuid"] for g in first["gpus"]] != [g["uuid"] for g in other["gpus"]]


def test_mig_device_handles(simulated_node):
    simulated_node("NVIDIA A100-SXM4-40GB", mig_enabled=True)
    parent = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceGetMaxMigDeviceCount(parent) == 7
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, 0)
    gi = pynvml.nvmlDeviceCreateGpuInstance(parent, 19)
    pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 0)
    mig_device = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, 0)
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, 1)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, 7)
    assert pynvml.nvmlDeviceIsMigDeviceHandle(mig_device).value == 1
    assert pynvml.nvmlDeviceIsMigDeviceHandle(parent).value == 0
    assert pynvml.nvmlDeviceGetName(mig_device) == "NVIDIA A100-SXM4-40GB MIG 1g.5gb"
    gi_info = pynvml.nvmlGpuInstanceGetInfo(gi)
    assert pynvml.nvmlDeviceGetGpuInstanceId(mig_device) == gi_info.id
    assert pynvml.nvmlDeviceGetComputeInstanceId(mig_device) == 0
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetGpuInstanceId(parent)
    uuid = pynvml.nvmlDeviceGetUUID(mig_device)
    assert uuid.startswith("MIG-")
    same = pynvml.nvmlDeviceGetHandleByUUID(uuid)
    assert pynvml.nvmlDeviceGetUUID(same) == uuid
    back = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig_device)
    assert pynvml.nvmlDeviceGetIndex(back) == 0
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(parent)
    assert pynvml.nvmlDeviceGetMemoryInfo(mig_device).total == 4864 * MIB
    assert pynvml.nvmlDeviceGetAttributes(mig_device).multiprocessorCount == 14
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetAttributes(parent)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetIndex(mig_device)
    assert pynvml.nvmlGpuInstanceGetInfo(gi).device is not None


def test_running_processes_two_phase_protocol(simulated_node):
    path = simulated_node("NVIDIA A100-SXM4-40GB", count=2, mig_enabled=True)
    parent = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceGetComputeRunningProcesses(parent) == []
    devices = []
    for _attempt in range(2):
        gi = pynvml.nvmlDeviceCreateGpuInstance(parent, 14)
        pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 1)
    for index in range(2):
        devices.append(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, index))
    uuids = [pynvml.nvmlDeviceGetUUID(d) for d in devices]
    for pid, uuid in ((100, uuids[0]), (101, uuids[0]), (102, uuids[1])):
        sim.attach_process(path, uuid, pid, pid)
    everything = pynvml.nvmlDeviceGetComputeRunningProcesses(parent)
    assert sorted(p.pid for p in everything) == [100, 101, 102]
    first = pynvml.nvmlDeviceGetComputeRunningProcesses_v3(devices[0])
    assert sorted((p.pid, p.usedGpuMemory) for p in first) == [(100, 100 * MIB), (101, 101 * MIB)]
    assert {(p.gpuInstanceId, p.computeInstanceId) for p in first} == {
        (pynvml.nvmlDeviceGetGpuInstanceId(devices[0]), 0)}
    other = pynvml.nvmlDeviceGetHandleByIndex(1)
    pynvml.nvmlDeviceSetMigMode(other, 0)
    sim.attach_process(path, pynvml.nvmlDeviceGetUUID(other), 200, 1)
    (whole,) = pynvml.nvmlDeviceGetComputeRunningProcesses(other)
    assert (whole.pid, whole.gpuInstanceId, whole.computeInstanceId) == (200, 0xFFFFFFFF, 0xFFFFFFFF)
    assert pynvml.nvmlDeviceGetMemoryInfo(other).used == 1 * MIB
    assert sim.detach_process(path, 100) is True
    assert sim.detach_process(path, 100) is False
    assert len(pynvml.nvmlDeviceGetComputeRunningProcesses(parent)) == 2
    shown = sim.show(path)["gpus"][0]["processes"]
    assert {(p["pid"], p["ci_id"]) for p in shown} == {(101, 0), (102, 0)}


def test_error_strings_come_from_the_library(simulated_node):
    simulated_node("NVIDIA A30")
    assert str(pynvml.NVMLError(pynvml.NVML_ERROR_IN_USE)) == "In use by another client"
    assert str(pynvml.NVMLError(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)) == "Insufficient Resources"
    assert pynvml.nvmlErrorString(pynvml.NVML_ERROR_NOT_SUPPORTED) == "Not Supported"


def test_library_lifecycle(tmp_path):
    path = tmp_path / "node.json"
    sim.init_node(path, "a30", 1)
    lib = sim.load_library(path)
    assert lib.nvmlDeviceGetCount_v2(pynvml.byref(pynvml.c_uint())) == pynvml.NVML_ERROR_UNINITIALIZED
    assert lib.nvmlShutdown() == pynvml.NVML_ERROR_UNINITIALIZED
    assert lib.nvmlInit_v2() == pynvml.NVML_SUCCESS
    assert lib.nvmlShutdown() == pynvml.NVML_SUCCESS
    lib.nvmlErrorString.restype = pynvml.c_char_p  # pynvml does this; it must be allowed
    assert not hasattr(lib, "nvmlDeviceGetFanSpeed")
    missing = sim.load_library(tmp_path / "absent.json")
    assert missing.nvmlInitWithFlags(0) == pynvml.NVML_ERROR_DRIVER_NOT_LOADED


def test_real_pynvml_lifecycle_and_missing_symbols(tmp_path):
    path = tmp_path / "node.json"
    sim.init_node(path, "h200", 1)
    try:
        install(path)
        with pytest.raises(pynvml.NVMLError_FunctionNotFound):
            pynvml.nvmlDeviceGetFanSpeed(pynvml.nvmlDeviceGetHandleByIndex(0))
        pynvml.nvmlShutdown()
        with pytest.raises(pynvml.NVMLError_Uninitialized):
            pynvml.nvmlDeviceGetCount()
    finally:
        uninstall()


def test_a_second_library_sees_changes_made_through_the_first(simulated_node):
    path = simulated_node("NVIDIA A100-SXM4-40GB", mig_enabled=True)
    other = sim.load_library(path)
    other.nvmlInit_v2()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    gi = pynvml.nvmlDeviceCreateGpuInstance(handle, 0)
    info = pynvml.c_nvmlGpuInstanceInfo_t()
    assert other.nvmlGpuInstanceGetInfo(gi, pynvml.byref(info)) == pynvml.NVML_SUCCESS
    assert info.profileId == 0
    pynvml.nvmlGpuInstanceDestroy(gi)
    assert other.nvmlGpuInstanceGetInfo(gi, pynvml.byref(info)) == pynvml.NVML_ERROR_INVALID_ARGUMENT
