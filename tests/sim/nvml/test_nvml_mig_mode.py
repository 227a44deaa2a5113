"""MIG mode: pending vs current, activation, reset and reboot, per architecture and reset policy."""

from __future__ import annotations

import pynvml
import pytest

from gpuops_sim import nvml as sim


def mode(index: int = 0) -> list[int]:
    return pynvml.nvmlDeviceGetMigMode(pynvml.nvmlDeviceGetHandleByIndex(index))


def set_mode(value: int, index: int = 0) -> int:
    return pynvml.nvmlDeviceSetMigMode(pynvml.nvmlDeviceGetHandleByIndex(index), value)


def test_ampere_idle_gpu_activates_immediately(simulated_node):
    simulated_node("NVIDIA A100-SXM4-40GB", count=2)
    assert mode() == [0, 0]
    assert set_mode(1) == pynvml.NVML_SUCCESS
    assert mode() == [1, 1]
    assert mode(1) == [0, 0]


@pytest.mark.parametrize("holder", ["process", "client"])
def test_ampere_busy_gpu_stays_pending_until_reset(simulated_node, holder):
    path = simulated_node("NVIDIA A100-SXM4-80GB", count=2)
    gpu_uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(0))
    if holder == "process":
        sim.attach_process(path, gpu_uuid, 777, 100)
    else:
        sim.add_client(path, 0, "nvidia-persistenced")
    assert set_mode(1) == pynvml.NVML_ERROR_IN_USE  # the call succeeds, activation does not
    assert mode() == [0, 1]
    with pytest.raises(sim.ResetError, match="In use by another client"):
        sim.reset_gpu(path, 0)
    if holder == "process":
        sim.detach_process(path, 777)
    else:
        sim.remove_client(path, 0)
    assert "successfully reset" in sim.reset_gpu(path, gpu_uuid)
    assert mode() == [1, 1]


def test_vm_passthrough_needs_a_reboot(simulated_node):
    path = simulated_node("NVIDIA A100-SXM4-40GB", reset_policy="reboot")
    assert set_mode(1) == pynvml.NVML_ERROR_RESET_REQUIRED
    assert mode() == [0, 1]
    with pytest.raises(sim.ResetError, match="not supported") as failure:
        sim.reset_gpu(path, 0)
    assert failure.value.exit_code == 3
    sim.reboot(path)
    assert mode() == [1, 1]  # Ampere keeps MIG mode across reboots (InfoROM)
    sim.reboot(path)
    assert mode() == [1, 1]


def test_hopper_enables_without_reset_even_with_clients_and_forgets_on_reboot(simulated_node):
    path = simulated_node("NVIDIA H100 80GB HBM3", reset_policy="reboot")
    sim.add_client(path, 0, "nvidia-persistenced")
    assert set_mode(1) == pynvml.NVML_SUCCESS
    assert mode() == [1, 1]
    pynvml.nvmlDeviceCreateGpuInstance(pynvml.nvmlDeviceGetHandleByIndex(0), 0)
    sim.reboot(path)
    assert mode() == [0, 0]
    assert sim.show(path)["gpus"][0]["gpu_instances"] == []


def test_hopper_running_process_blocks_activation(simulated_node):
    path = simulated_node("NVIDIA H200")
    sim.attach_process(path, sim.show(path)["gpus"][0]["uuid"], 55, 10)
    assert set_mode(1) == pynvml.NVML_ERROR_IN_USE
    assert mode() == [0, 1]


def test_reset_applies_pending_and_drops_instances(simulated_node):
    path = simulated_node("NVIDIA A100-SXM4-40GB", mig_enabled=True)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    gi = pynvml.nvmlDeviceCreateGpuInstance(handle, 9)
    pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 2)
    sim.add_client(path, 0, "dcgm")
    assert sim.show(path)["gpus"][0]["mig"] == {"capable": True, "current": True, "pending": True}
    sim.remove_client(path, 0, "dcgm")
    sim.reset_gpu(path, "00000000:07:00.0")
    assert sim.show(path)["gpus"][0]["gpu_instances"] == []
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlGpuInstanceGetInfo(gi)
    assert mode() == [1, 1]


def test_disable_with_instances_is_refused_by_default_or_tears_down_when_configured(simulated_node):
    path = simulated_node("NVIDIA A100-SXM4-40GB", mig_enabled=True)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    pynvml.nvmlDeviceCreateGpuInstance(handle, 19)
    with pytest.raises(pynvml.NVMLError_InUse):
        set_mode(0)
    assert mode() == [1, 1]
    sim.set_setting(path, "mig_disable_with_instances", "destroy")
    assert set_mode(0) == pynvml.NVML_SUCCESS
    assert mode() == [0, 0]
    assert sim.show(path)["gpus"][0]["gpu_instances"] == []


def test_setting_the_current_mode_again_clears_a_pending_change(simulated_node):
    path = simulated_node("NVIDIA A30")
    sim.add_client(path, 0, "nvidia-persistenced")
    assert set_mode(1) == pynvml.NVML_ERROR_IN_USE
    assert mode() == [0, 1]
    assert set_mode(0) == pynvml.NVML_SUCCESS
    assert mode() == [0, 0]
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        set_mode(2)


@pytest.mark.parametrize("model", ["Tesla T4", "NVIDIA L4"])
def test_gpu_without_mig_answers_not_supported(simulated_node, model):
    simulated_node(model)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetMigMode(handle)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceSetMigMode(handle, 1)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, 0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceCreateGpuInstance(handle, 19)
    assert pynvml.nvmlDeviceGetMaxMigDeviceCount(handle) == 0
    assert pynvml.nvmlDeviceGetName(handle) == model
    with pytest.raises(ValueError, match="does not support MIG"):
        sim.init_node("/nonexistent/x.json", model, 1, mig_enabled=True)


def test_older_driver_refuses_profile_queries_while_mig_is_off(simulated_node):
    path = simulated_node("NVIDIA A100-SXM4-40GB")
    sim.set_setting(path, "profile_queries_need_mig", True)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, 0)
    set_mode(1)
    assert pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, 0).id == 19
