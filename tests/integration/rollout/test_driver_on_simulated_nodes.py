# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The nvidia_driver role on simulated nodes: it installs nothing there, and refuses a node whose
simulated driver is not the wanted one, whether the caller passed the NVML reading or the role
read it itself."""

from __future__ import annotations

import pytest

# The simulator's default driver (gpuops_sim.nvml.state.DEFAULT_DRIVER_VERSION).
SIMULATED = "550.54.15"

PLAY = """\
- name: Apply the driver role to simulated nodes
  hosts: gpu_nodes
  gather_facts: false
  roles:
    - role: gpuops.nvidia.nvidia_driver
"""


@pytest.fixture
def node(sim_cluster, tmp_path):
    cluster = sim_cluster(["a100:1:A100-40GB:1"])
    cluster.play = tmp_path / "driver.yml"
    cluster.play.write_text(PLAY)
    return cluster


def test_a_simulated_node_with_the_wanted_driver_is_left_alone(node):
    read = node.playbook(str(node.play), "-e", "nvidia_driver_branch=550")
    assert read.changed == 0
    # Without a reading from the caller the role reads NVML itself, then ends before the OS checks
    # that lead to packages.
    assert "TASK [gpuops.nvidia.nvidia_driver : Read the driver version that NVML reports.]" in read.output
    assert "Work out the repository URL" not in read.output

    reading = node.write_vars("reading.yml", {"nvidia_driver_gpu_info": {"driver_version": SIMULATED}})
    given = node.playbook(str(node.play), "-e", "nvidia_driver_version=" + SIMULATED, "-e", "@%s" % reading)
    assert given.changed == 0
    # With the caller's reading the role ends right after checking the settings.
    assert "Read the driver version that NVML reports" not in given.output
    assert "Check the OS" not in given.output and "Refuse a node the role cannot install on" not in given.output


@pytest.mark.parametrize("given", [False, True], ids=["role-reads-nvml", "caller-passes-reading"])
def test_a_simulated_node_with_another_driver_is_refused_naming_both_drivers(node, given):
    extra = ["-e", "nvidia_driver_branch=570"]
    if given:
        extra += ["-e", "@%s" % node.write_vars("reading.yml", {"nvidia_driver_gpu_info": {"driver_version": SIMULATED}})]
    run = node.playbook(str(node.play), *extra, check=False)
    assert run.rc != 0
    assert "is a simulated node (gpuops_simulated=true) whose NVML reports driver %s, not the wanted branch 570" % SIMULATED in run.output
    # A passed reading is refused with the settings, before NVML is read; otherwise once it was read.
    refusing = "Refuse settings that contradict each other" if given else "Refuse a node the role cannot install on"
    assert ("TASK [gpuops.nvidia.nvidia_driver : %s" % refusing) in run.output
    assert ("Read the driver version that NVML reports" in run.output) is not given
