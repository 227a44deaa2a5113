# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mig_config clears the known GPU reset blockers around a reset, or refuses naming them."""

from __future__ import annotations

import os
from pathlib import Path

import gpuops_sim.nvml
import pytest
from gpuops_sim.nvml import host

A100 = "NVIDIA A100-SXM4-40GB"
STAND_INS = Path(gpuops_sim.nvml.__file__).parent / "bin"


@pytest.fixture
def blocked_node(node, monkeypatch):
    """A node whose host commands (systemctl, lsmod, nvidia-smi) are the simulator's stand-ins."""
    monkeypatch.setenv("PATH", "%s%s%s" % (STAND_INS, os.pathsep, os.environ["PATH"]))
    node.init(A100, count=2, mig_enabled=False)
    return node


ALL_1G = {"version": "v1", "mig-configs": {"all-1g.5gb": [
    {"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 7}}]}}


def enable_all_1g(node, check=False, **args):
    return node.run("mig_config", dict({"config": ALL_1G, "config_name": "all-1g.5gb",
                                        "reset_command": node.reset_command}, **args), check=check)


def active(node, service):
    return gpuops_sim.nvml.read_state(node.path)["services"][service]["active"]


def test_active_blocking_services_are_stopped_for_the_reset_and_started_again(blocked_node):
    node = blocked_node
    gpuops_sim.nvml.set_service(node.path, "nvidia-persistenced", True)
    gpuops_sim.nvml.set_service(node.path, "nvidia-dcgm", True)
    gpuops_sim.nvml.set_service(node.path, "nvsm", False)

    result = enable_all_1g(node)

    assert not result.get("failed"), result.get("msg")
    assert [g["mig"]["current"] for g in node.show()["gpus"]] == [True, True]
    assert node.layout(0) == {"1g.5gb": 7} and node.layout(1) == {"1g.5gb": 7}
    blockers = result["reset_blockers"]
    assert blockers["services_active"] == ["nvidia-persistenced", "nvidia-dcgm"]
    assert blockers["services_stopped"] == ["nvidia-persistenced", "nvidia-dcgm"]
    assert blockers["services_restarted"] == ["nvidia-dcgm", "nvidia-persistenced"]
    assert blockers["problems"] == []
    # Exactly what was stopped runs again; a service that was stopped before stays stopped.
    assert active(node, "nvidia-persistenced") and active(node, "nvidia-dcgm") and not active(node, "nvsm")


def test_check_mode_reports_the_blockers_and_stops_nothing(blocked_node):
    node = blocked_node
    gpuops_sim.nvml.set_service(node.path, "nvidia-persistenced", True)
    result = enable_all_1g(node, check=True)
    assert result["changed"]
    assert result["reset_blockers"]["services_active"] == ["nvidia-persistenced"]
    assert result["reset_blockers"]["services_stopped"] == []
    assert active(node, "nvidia-persistenced")
    assert [g["mig"]["pending"] for g in node.show()["gpus"]] == [False, False]


def test_a_loaded_nvidia_drm_is_named_and_no_reset_is_tried(blocked_node):
    node = blocked_node
    gpuops_sim.nvml.set_service(node.path, "nvidia-persistenced", True)
    gpuops_sim.nvml.set_kernel_module(node.path, "nvidia_drm", True)

    result = enable_all_1g(node)

    assert result["failed"]
    assert "nvidia_drm" in result["msg"] and "Reboot" in result["msg"]
    assert result["reset_blockers"]["kernel_modules_loaded"] == ["nvidia_drm"]
    # Nothing was stopped for a reset that was never tried.
    assert result["reset_blockers"]["services_stopped"] == []
    assert active(node, "nvidia-persistenced")
    assert node.show()["gpus"][0]["mig"] == {"capable": True, "current": False, "pending": True}


def test_with_allow_pending_the_blocked_mode_change_asks_for_a_reboot(blocked_node):
    node = blocked_node
    gpuops_sim.nvml.set_kernel_module(node.path, "nvidia_drm", True)
    result = enable_all_1g(node, allow_pending=True)
    assert not result.get("failed") and result["reboot_required"]
    assert any("nvidia_drm" in m["reset_output"] for m in result["modes"])
    # The reboot applies the pending mode; the next run creates the instances.
    gpuops_sim.nvml.reboot(node.path)
    again = enable_all_1g(node)
    assert not again.get("failed"), again.get("msg")
    assert node.layout(0) == {"1g.5gb": 7}


def test_a_failed_reset_still_starts_the_stopped_services(blocked_node):
    node = blocked_node
    gpuops_sim.nvml.set_service(node.path, "nvidia-persistenced", True)
    # A CUDA process keeps GPU 0 busy: its reset fails whatever was stopped.
    gpu0 = node.show()["gpus"][0]["uuid"]
    gpuops_sim.nvml.attach_process(node.path, gpu0, 4242, 100)
    result = enable_all_1g(node, in_use="ignore")
    assert result["failed"]
    assert result["reset_blockers"]["services_stopped"] == ["nvidia-persistenced"]
    assert result["reset_blockers"]["services_restarted"] == ["nvidia-persistenced"]
    assert active(node, "nvidia-persistenced")


def test_systemctl_and_lsmod_stand_ins(tmp_path, monkeypatch, capsys):
    path = tmp_path / "node.json"
    gpuops_sim.nvml.init_node(path, A100, 1)
    monkeypatch.setenv("GPUOPS_NVML_SIMULATOR", str(path))
    assert host.systemctl(["is-active", "--quiet", "nvidia-persistenced"]) == 3
    assert host.systemctl(["stop", "nvidia-persistenced"]) == 5
    gpuops_sim.nvml.set_service(path, "nvidia-persistenced", True)
    assert host.systemctl(["is-active", "nvidia-persistenced.service"]) == 0
    assert host.systemctl(["stop", "nvidia-persistenced.service"]) == 0
    assert host.systemctl(["is-active", "nvidia-persistenced"]) == 3
    gpuops_sim.nvml.set_kernel_module(path, "nvidia_drm", True)
    capsys.readouterr()
    assert host.lsmod([]) == 0
    assert "nvidia_drm" in capsys.readouterr().out.split()
    # A reboot starts the enabled services again.
    gpuops_sim.nvml.reboot(path)
    assert host.systemctl(["is-active", "nvidia-persistenced"]) == 0
