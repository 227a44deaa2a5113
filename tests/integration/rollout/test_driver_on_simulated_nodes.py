# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The nvidia_driver role on simulated nodes, driven by the settings real sites use.

A simulated node's image ships its driver (nvidia_driver_install: false, as on managed node
pools), so the role ends at once. A node whose driver the site installs with its own tooling
(nvidia_driver_install_command) gets it installed when NVML reports another one: the simulator's
stand-in (``python -m gpuops_sim nvml driver --install``) stages it as a package install does, NVML
reports it after the next reboot, and the playbook sends the node through its rolling, drained
change, which reboots it and re-applies its layout.
"""

from __future__ import annotations

import sys

import pytest

# The simulator's default driver (gpuops_sim.nvml.state.DEFAULT_DRIVER_VERSION).
SIMULATED = "550.54.15"
WANTED = "570.86.15"
MIXED = ["-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_reconfigure_wait_timeout=120"]

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


@pytest.mark.slow
def test_a_driver_changed_node_goes_through_the_rollout_and_is_rebooted_there(sim_cluster):
    from gpuops_sim import nvml
    cluster = sim_cluster(["a100:1:A100-40GB:2"])
    node = cluster.nodes[0]
    state = cluster.cluster.state_path(node)
    cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "mig_config_name=all-1g.5gb")
    layout = cluster.layout(node)
    cluster.workload(name="infer", resource="nvidia.com/mig-1g.5gb", count=3, node=None)
    boots = nvml.read_state(state)["boot_count"]
    cluster.clear_requests()

    settings = cluster.write_vars("site.yml", site_install(cluster))
    run = cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "mig_config_name=all-1g.5gb",
                           "-e", "mig_allow_reboot=true", "-e", "@%s" % settings)

    # The driver play installed it and sent the node through the rollout (its handler), which read
    # the node's GPUs again and rebooted it, drained, as part of its change.
    assert "changed: [%s]" % node in run.output.split("Install the driver with the site's command.]")[1].split("TASK")[0]
    assert "RUNNING HANDLER [Send a node whose driver changed through the rollout]" in run.output
    rollout = run.output.split("PLAY [Apply MIG mode and geometry, batch by batch]")[1]
    assert "TASK [gpuops.nvidia.mig_reconfigure : Read the node's GPUs and plan the MIG layout change]" in rollout
    assert "changed: [%s]" % node in rollout.split("TASK [gpuops.nvidia.mig_reconfigure : Reboot the node]")[1].split("TASK")[0]
    after = nvml.read_state(state)
    assert after["driver_version"] == WANTED and "installed_driver_version" not in after
    assert after["boot_count"] == boots + 1
    # The layout is back (the boot-time applier, then the rollout's apply found it in place).
    assert cluster.layout(node) == layout
    obj = cluster.node(node)
    assert obj["metadata"]["labels"]["nvidia.com/mig.config.state"] == "success"
    assert "gpuops.io/mig-reconfigure" not in [t["key"] for t in obj["spec"].get("taints") or []]
    # Every pod moved before the reboot: evicted, none killed by the reboot.
    requests = cluster.requests()
    evicted = {r["name"] for r in requests if r["subresource"] == "eviction" and r["status"] == 201}
    killed = {r["name"] for r in requests if r["method"] == "DELETE" and r["resource"] == "pods"
              and "kubelet" in (r["user_agent"] or "")}
    assert {name for name in evicted if name.startswith("infer-")}
    assert not {name for name in killed if name.startswith("infer-")}

    again = cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "mig_config_name=all-1g.5gb",
                             "-e", "mig_allow_reboot=true", "-e", "@%s" % settings)
    assert again.changed == 0
