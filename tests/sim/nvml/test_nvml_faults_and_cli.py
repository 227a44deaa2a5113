"""Fault injection, the `nvml` CLI and the nvidia-smi stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pynvml
import pytest

from gpuops_sim import nvml as sim
from gpuops_sim.cli import main as sim_main

NVIDIA_SMI = Path(sim.__file__).parent / "bin" / "nvidia-smi"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = sim_main(["nvml", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fail_next_n_calls_then_recover(simulated_node):
    path = simulated_node("NVIDIA A100-SXM4-40GB", mig_enabled=True)
    sim.add_fault(path, "nvmlDeviceCreateGpuInstance", "INSUFFICIENT_RESOURCES", count=2)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    for _attempt in range(2):
        with pytest.raises(pynvml.NVMLError_InsufficientResources):
            pynvml.nvmlDeviceCreateGpuInstance(handle, 0)
    pynvml.nvmlDeviceCreateGpuInstance(handle, 0)
    assert sim.show(path)["faults"] == []


def test_fault_limited_to_one_gpu_and_permanent_until_cleared(simulated_node):
    path = simulated_node("NVIDIA H100 80GB HBM3", count=2)
    sim.add_fault(path, "nvmlDeviceGetMigMode", "GPU_IS_LOST", count=0, gpu=1)
    assert pynvml.nvmlDeviceGetMigMode(pynvml.nvmlDeviceGetHandleByIndex(0)) == [0, 0]
    for _attempt in range(3):
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            pynvml.nvmlDeviceGetMigMode(pynvml.nvmlDeviceGetHandleByIndex(1))
    sim.clear_faults(path)
    assert pynvml.nvmlDeviceGetMigMode(pynvml.nvmlDeviceGetHandleByIndex(1)) == [0, 0]


def test_fault_on_a_gpu_instance_handle_matches_its_gpu(simulated_node):
    path = simulated_node("NVIDIA A100-SXM4-40GB", count=2, mig_enabled=True)
    gis = [pynvml.nvmlDeviceCreateGpuInstance(pynvml.nvmlDeviceGetHandleByIndex(i), 0) for i in range(2)]
    sim.add_fault(path, "nvmlGpuInstanceDestroy", 19, gpu=1)
    pynvml.nvmlGpuInstanceDestroy(gis[0])
    with pytest.raises(pynvml.NVMLError_InUse):
        pynvml.nvmlGpuInstanceDestroy(gis[1])
    pynvml.nvmlGpuInstanceDestroy(gis[1])


def test_bad_fault_arguments_are_rejected_by_name(tmp_path):
    path = tmp_path / "n.json"
    sim.init_node(path, "a30", 1)
    with pytest.raises(ValueError, match="unknown NVML error code 'NOPE'"):
        sim.add_fault(path, "nvmlDeviceGetCount_v2", "NOPE")
    with pytest.raises(ValueError, match="function must be an NVML symbol"):
        sim.add_fault(path, "rm -rf", 3)
    with pytest.raises(LookupError, match="no GPU 5 on node"):
        sim.add_fault(path, "nvmlDeviceGetCount_v2", 3, gpu=5)
    assert sim.show(path)["faults"] == []


def test_cli_init_models_show_fault_reset_reboot(tmp_path, capsys):
    path = str(tmp_path / "node.json")
    code, out, _unused = run_cli(capsys, "init", "--state", path, "--model", "a100", "--count", "2", "--node", "w1")
    assert code == 0 and "2 x NVIDIA A100-SXM4-40GB" in out
    code, out, _unused = run_cli(capsys, "models")
    assert "0x233510DE  NVIDIA H200" in out and "Tesla T4" in out
    code, out, _unused = run_cli(capsys, "models", "--json")
    assert {m["name"] for m in json.loads(out)} >= {"NVIDIA A30", "NVIDIA L4"}
    code, out, _unused = run_cli(capsys, "show", "--state", path)
    shown = json.loads(out)
    assert shown["node"] == "w1" and shown["cuda_version"] == "12.4"
    assert [g["pci_device_id"] for g in shown["gpus"]] == ["0x20B010DE"] * 2
    assert sim.set_mig_mode(path, 0, 1) == 0

    code, out, _unused = run_cli(capsys, "fault", "--state", path, "--process", shown["gpus"][1]["uuid"], "--pid", "321")
    assert (code, out.strip()) == (0, "321")
    code, _unused, err = run_cli(capsys, "reset", "--state", path, "--gpu", "1")
    assert code == 255 and "In use by another client" in err
    run_cli(capsys, "fault", "--state", path, "--detach", "321")
    run_cli(capsys, "fault", "--state", path, "--client", "0", "--name", "nvidia-persistenced")
    assert sim.show(path)["gpus"][0]["clients"] == ["nvidia-persistenced"]
    code, out, err = run_cli(capsys, "reset", "--state", path, "--gpu", "1")
    assert code == 0 and "successfully reset" in out
    run_cli(capsys, "fault", "--state", path, "--fail", "nvmlDeviceGetCount_v2", "--error", "NVML_ERROR_TIMEOUT",
            "--count", "3")
    assert sim.show(path)["faults"] == [
        {"function": "nvmlDeviceGetCount_v2", "error": 10, "remaining": 3, "gpu": None}]
    run_cli(capsys, "fault", "--state", path, "--reset-policy", "reboot")
    code, _unused, err = run_cli(capsys, "reset", "--state", path, "--gpu", "1")
    assert code == 3 and "not supported" in err
    run_cli(capsys, "fault", "--state", path, "--clear")
    shown = sim.show(path)
    assert shown["faults"] == [] and shown["gpus"][0]["clients"] == [] and shown["reset_policy"] == "reboot"
    code, _out, _err = run_cli(capsys, "reboot", "--state", path)
    assert code == 0 and sim.show(path)["boot_count"] == 1
    code, _unused, err = run_cli(capsys, "fault", "--state", path, "--fail", "nvmlDeviceGetCount_v2")
    assert code == 1 and "--fail needs --error" in err


def smi(path: Path | None, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GPUOPS_NVML_SIMULATOR"}
    if path is not None:
        env["GPUOPS_NVML_SIMULATOR"] = str(path)
    return subprocess.run([sys.executable, str(NVIDIA_SMI), *args], env=env, capture_output=True, text=True,
                          check=False)


def test_nvidia_smi_stand_in(tmp_path):
    assert os.access(NVIDIA_SMI, os.X_OK)
    path = tmp_path / "node.json"
    sim.init_node(path, "NVIDIA A100-SXM4-80GB", 2, node_name="smi")
    assert smi(None, "-L").returncode == 9
    result = smi(path, "-i", "0", "-mig", "1")
    assert result.returncode == 0 and "Enabled MIG Mode for GPU 00000000:07:00.0" in result.stdout
    sim.add_client(path, 1, "nvidia-persistenced")
    result = smi(path, "-i", "1", "-mig", "1")
    assert result.returncode == 0 and "pending enable state" in result.stdout
    result = smi(path, "--gpu-reset", "-i", "00000000:0F:00.0")
    assert result.returncode != 0 and "In use by another client" in result.stderr
    sim.remove_client(path, 1)
    result = smi(path, "-r", "-i", sim.show(path)["gpus"][1]["uuid"])
    assert result.returncode == 0 and "GPU 00000000:0F:00.0 was successfully reset." in result.stdout
    assert sim.show(path)["gpus"][1]["mig"]["current"] is True
    result = smi(path, "-r", "-i", "7")
    assert result.returncode == 6
    state = sim.read_state(path)
    from gpuops_sim.nvml import mig  # pylint: disable=import-outside-toplevel
    gi = mig.create_gpu_instance(state, state["gpus"][0], 9)
    mig.create_compute_instance(state, state["gpus"][0], gi, 2)
    with sim.state.transaction(path) as stored:
        stored.update(state)
    listing = smi(path, "-L").stdout.splitlines()
    assert listing[0].startswith("GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-")
    assert listing[1].startswith("  MIG 3g.40gb       Device  0: (UUID: MIG-")
