# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The nvidia_driver role on simulated nodes, driven by the settings real sites use.

A simulated node's image ships its driver (nvidia_driver_install: false, as on managed node
pools), so the role ends at once. A node whose driver the site installs with its own tooling
(nvidia_driver_install_command) gets it installed when NVML reports another one: the simulator's
stand-in (``python -m gpuops_sim nvml driver --install``) stages it as a package install does, NVML
reports it after the next reboot. In the playbook a node with a loaded driver of another version is
upgraded by the rolling change instead (test_driver_rollout.py).
"""

from __future__ import annotations

import sys

import pytest

# The simulator's default driver (gpuops_sim.nvml.state.DEFAULT_DRIVER_VERSION).
SIMULATED = "550.54.15"
WANTED = "570.86.15"

PLAY = """\
- name: Apply the driver role to simulated nodes
  hosts: gpu_nodes
  gather_facts: false
  roles:
    - role: gpuops.nvidia.nvidia_driver
"""


def site_install(cluster, version: str = WANTED) -> dict:
    """The settings of a site that installs the driver with its own command."""
    state = str(cluster.directory / "nodes" / "{{ inventory_hostname }}.json")
    return {"nvidia_driver_install": True, "nvidia_driver_branch": version.split(".")[0], "nvidia_driver_version": version,
            "nvidia_driver_install_command": [sys.executable, "-m", "gpuops_sim", "nvml", "driver", "--state", state,
                                              "--install", "{version}"]}


@pytest.fixture
def node(sim_cluster, tmp_path):
    cluster = sim_cluster(["a100:1:A100-40GB:1"])
    cluster.play = tmp_path / "driver.yml"
    cluster.play.write_text(PLAY)
    return cluster


def test_a_node_whose_image_ships_the_driver_is_left_alone(node):
    run = node.playbook(str(node.play), "-e", "nvidia_driver_branch=570")
    assert run.changed == 0
    # nvidia_driver_install is false in the simulator's inventory: the role ends after its settings.
    assert "Read the driver version that NVML reports" not in run.output
    assert "Install the driver with the site's command" not in run.output


def test_a_node_with_the_wanted_driver_installs_nothing(node):
    settings = node.write_vars("site.yml", site_install(node, SIMULATED))
    run = node.playbook(str(node.play), "-e", "@%s" % settings)
    assert run.changed == 0
    assert "TASK [gpuops.nvidia.nvidia_driver : Read the driver version that NVML reports.]" in run.output
    assert "Work out the repository URL" not in run.output


def test_a_node_with_another_driver_gets_it_installed_and_reports_the_pending_reboot(node):
    from gpuops_sim import nvml
    settings = node.write_vars("site.yml", site_install(node))
    run = node.playbook(str(node.play), "-e", "@%s" % settings)
    assert "needs a reboot to load the NVIDIA driver" in run.output
    state = nvml.read_state(node.cluster.state_path(node.nodes[0]))
    assert state["driver_version"] == SIMULATED and state["installed_driver_version"] == WANTED
