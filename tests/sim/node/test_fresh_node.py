"""A fresh simulated node (``cluster up --fresh``) at its interfaces: NVML cannot be loaded and
nvidia-smi is not on the node's PATH until a driver is installed and the node rebooted; root-only
work is refused to the unprivileged login user and allowed through the node's sudo; the node's
Python has no third-party libraries."""

from __future__ import annotations

import os
import subprocess
import sys

import pynvml
import pytest

from gpuops_sim import nvml
from gpuops_sim.k8s import cluster as sim_cluster
from gpuops_sim.node import systemd

NODE = "gpu-node-1"
SIM = [sys.executable, "-m", "gpuops_sim"]


@pytest.fixture
def node(tmp_path):
    state = str(tmp_path / f"{NODE}.json")
    root = str(tmp_path / f"{NODE}-root")
    nvml.init_node(state, "A100-40GB", 2, node_name=NODE, driver_version=None)
    systemd.set_host(state, root, node=NODE)
    python = sim_cluster.make_fresh_node(root)
    return state, root, python


def nvml_init(state: str) -> None:
    with pynvml.libLoadLock:
        pynvml.nvmlLib = nvml.load_library(state)
        pynvml._nvmlGetFunctionPointer_cache.clear()  # pylint: disable=protected-access
    pynvml.nvmlInit()


def on_node(state: str, root: str, argv: list[str], user: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **sim_cluster.fresh_node_environment(state, root, os.environ.get("PATH", "")))
    env.pop("GPUOPS_SIM_USER", None)
    if user:
        env["GPUOPS_SIM_USER"] = user
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=120)


def test_nvml_cannot_be_loaded_until_a_driver_is_installed_and_the_node_rebooted(node):
    state, root, _python = node
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        nvml_init(state)
    assert on_node(state, root, ["sh", "-c", "command -v nvidia-smi"]).returncode != 0
    installed = on_node(state, root, [*SIM, "nvml", "driver", "--state", state, "--install", "570.86.15"])
    assert installed.returncode == 0, installed.stderr
    # Installed, not loaded: NVML still cannot be opened; the driver's nvidia-smi is on PATH.
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        nvml_init(state)
    assert on_node(state, root, ["sh", "-c", "command -v nvidia-smi"]).stdout.strip() == os.path.join(root, "usr", "bin", "nvidia-smi")
    assert on_node(state, root, [*SIM, "nvml", "reboot", "--state", state]).returncode == 0
    nvml_init(state)
    try:
        assert pynvml.nvmlSystemGetDriverVersion() == "570.86.15"
        assert pynvml.nvmlDeviceGetCount() == 2
    finally:
        pynvml.nvmlShutdown()


def test_root_only_work_is_refused_to_the_login_user_and_allowed_through_sudo(node):
    state, root, _python = node
    sudo = os.path.join(os.path.dirname(systemd.__file__), "bin", "sudo")
    install = [*SIM, "nvml", "driver", "--state", state, "--install", "570.86.15"]
    refused = on_node(state, root, install, user="gpuops")
    assert refused.returncode == 1 and "permission denied (running as gpuops, not root" in refused.stderr
    assert "installed_driver_version" not in nvml.read_state(state)
    for argv in ([*SIM, "node", "reboot", "--state", state], ["systemctl", "daemon-reload"], ["systemctl", "stop", "kubelet"]):
        denied = on_node(state, root, argv, user="gpuops")
        assert denied.returncode == 1 and "Access denied" in denied.stderr, argv
    assert nvml.read_state(state)["boot_count"] == 0
    # As Ansible's sudo become plugin calls it.
    allowed = on_node(state, root, [sudo, "-H", "-S", "-n", "-u", "root", *install], user="gpuops")
    assert allowed.returncode == 0, allowed.stderr
    assert nvml.read_state(state)["installed_driver_version"] == "570.86.15"


def test_nvml_changes_need_root(node, monkeypatch):
    state, _root, _python = node
    from gpuops_sim.nvml import state as node_state  # pylint: disable=import-outside-toplevel
    node_state.install_driver(state, "570.86.15")
    nvml.reboot(state)
    monkeypatch.setenv("GPUOPS_SIM_USER", "gpuops")
    nvml_init(state)
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        assert pynvml.nvmlDeviceGetMigMode(handle) == [0, 0]
        with pytest.raises(pynvml.NVMLError_NoPermission):
            pynvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
        monkeypatch.setenv("GPUOPS_SIM_USER", "root")
        pynvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
    finally:
        pynvml.nvmlShutdown()


def test_the_node_python_has_no_third_party_libraries(node):
    _state, _root, python = node
    for module in ("pynvml", "yaml", "grpc", "google.protobuf"):
        found = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True, check=False)
        assert found.returncode != 0, module
