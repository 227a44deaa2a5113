# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A driver version change goes through the rolling engine: the validating play plans it (NVML's
loaded driver against nvidia_driver_version), the driver play leaves the node's packages alone, and
each batch drains the node whole, installs, reboots, checks through NVML that the wanted driver is
loaded, re-applies the layout and releases the node. Each node's progress is its
gpuops.io/driver-upgrade.state label; a failure at any step leaves the node fenced, upgrade-failed,
with the reason, while the other nodes of its batch finish; a re-run after the fault is cleared
converges, and one more changes nothing.

The faults are those of a real node, injected at the simulator's interfaces: the site's install
command fails, the reboot loads another driver than the installed one, the kubelet does not come
back after the reboot, and a PodDisruptionBudget never allows an eviction.
"""

from __future__ import annotations

import pytest

from gpuops_sim.node import boot
from gpuops_sim.nvml import state as sim_state

from test_driver_on_simulated_nodes import SIMULATED, WANTED, site_install
from test_rollout import mutations

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

STATE = "gpuops.io/driver-upgrade.state"
MESSAGE = "gpuops.io/mig-reconfigure.message"
TAINT = "gpuops.io/mig-reconfigure"
SETTINGS = ["-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_config_name=all-1g.5gb", "-e", "mig_allow_reboot=true",
            "-e", "mig_reconfigure_wait_timeout=120"]
# Batches of three; a failed node does not stop the run, so each batch shows its other nodes finish.
ROLLING = ["-e", "mig_rollout_batch=3", "-e", "mig_max_fail_percentage=100", "-e", "mig_reconfigure_evacuate_timeout=15",
           "-e", "mig_reconfigure_reboot_timeout=30"]


def killed_by_kubelet(requests: list[dict]) -> set[str]:
    """Pods deleted by a kubelet going down with its node: killed without eviction."""
    return {r["name"] for r in requests if r["method"] == "DELETE" and r["resource"] == "pods"
            and "kubelet" in (r.get("user_agent") or "")}


@pytest.mark.acceptance
def test_a_driver_change_rolls_through_drained_batches_and_each_failing_step_leaves_its_node_fenced(sim_cluster):
    cluster = sim_cluster(["a100:6:A100-40GB:1"])
    nodes = cluster.nodes
    install_fails, wrong_driver, healthy_1, not_ready, pdb_blocked, healthy_2 = nodes
    cluster.playbook("nvidia-gpu-operator.yml", *SETTINGS)
    layouts = {node: cluster.layout(node) for node in nodes}
    cluster.workload(name="infer", resource="nvidia.com/mig-1g.5gb", count=4, pdb_max_unavailable="1")
    cluster.workload(name="pinned", resource="nvidia.com/mig-1g.5gb", count=1, node=pdb_blocked, pdb_max_unavailable="0")
    site = ["-e", "@%s" % cluster.write_vars("site.yml", site_install(cluster))]

    states = {node: cluster.cluster.state_path(node) for node in nodes}
    sim_state.set_driver_faults(states[install_fails], install_error="DKMS build of nvidia failed")
    sim_state.set_driver_faults(states[wrong_driver], loads="565.57.01")
    sim_state.set_driver_faults(states[not_ready], kubelet_down=True)
    cluster.clear_requests()
    run = cluster.playbook("nvidia-gpu-operator.yml", *SETTINGS, *ROLLING, *site, check=False)
    assert run.rc != 0
    # The driver play installed nothing: every install ran in a batch, on a drained node.
    driver_play = run.output.split("PLAY [Install the NVIDIA driver and the container toolkit]")[1].split("PLAY [")[0]
    assert "Install the driver with the site's command" not in driver_play

    for node in (healthy_1, healthy_2):
        obj = cluster.node(node)
        assert cluster.nvml_state(node)["driver_version"] == WANTED, node
        assert obj["metadata"]["labels"][STATE] == "upgrade-done"
        assert TAINT not in [t["key"] for t in obj["spec"].get("taints") or []]
        assert obj["status"]["allocatable"]["nvidia.com/mig-1g.5gb"] == "7"
        assert cluster.layout(node) == layouts[node]
    failures = {install_fails: "non-zero return code (", wrong_driver: "wrong driver loaded", not_ready: "Ready",
                pdb_blocked: "pinned"}
    for node, reason in failures.items():
        obj = cluster.node(node)
        assert obj["metadata"]["labels"][STATE] == "upgrade-failed", (node, obj["metadata"]["labels"])
        assert obj["metadata"]["labels"]["nvidia.com/mig.config.state"] == "failed"
        assert TAINT in [t["key"] for t in obj["spec"].get("taints") or []]
        assert reason in obj["metadata"]["annotations"][MESSAGE], (node, obj["metadata"]["annotations"][MESSAGE])
    assert "DKMS build of nvidia failed" in cluster.node(install_fails)["metadata"]["annotations"][MESSAGE]
    assert cluster.nvml_state(install_fails)["driver_version"] == SIMULATED
    assert cluster.nvml_state(wrong_driver)["driver_version"] == "565.57.01"
    assert cluster.nvml_state(pdb_blocked)["driver_version"] == SIMULATED
    # Every node that rebooted was drained first: no workload pod died with a reboot.
    assert not {name for name in killed_by_kubelet(cluster.requests()) if name.startswith(("infer-", "pinned-"))}
    assert any(pod["metadata"]["name"].startswith("pinned-") and pod["spec"].get("nodeName") == pdb_blocked
               for pod in cluster.pods("default"))

    # The faults cleared (the kubelet repaired and the node rebooted, the budget lifted), a re-run converges.
    for node in nodes:
        sim_state.set_driver_faults(states[node], install_error=None, loads=None, kubelet_down=None)
    boot.reboot(states[not_ready])
    cluster.store.delete("poddisruptionbudgets", "default", "pinned")
    again = cluster.playbook("nvidia-gpu-operator.yml", *SETTINGS, *ROLLING, *site)
    for node in nodes:
        obj = cluster.node(node)
        assert cluster.nvml_state(node)["driver_version"] == WANTED, (node, again.output[-3000:])
        assert obj["metadata"]["labels"][STATE] == "upgrade-done"
        assert obj["metadata"]["labels"]["nvidia.com/mig.config.state"] == "success"
        assert not [t for t in obj["spec"].get("taints") or [] if t["key"] == TAINT]
        assert cluster.layout(node) == layouts[node]
    assert not {name for name in killed_by_kubelet(cluster.requests()) if name.startswith(("infer-", "pinned-"))}

    converged = cluster.playbook("nvidia-gpu-operator.yml", *SETTINGS, *ROLLING, *site)
    assert converged.changed == 0, converged.output[-5000:]


def test_a_driver_change_is_refused_without_reboots_allowed_and_rehearsed_with_them(sim_cluster):
    cluster = sim_cluster(["a100:1:A100-40GB:1"])
    node = cluster.nodes[0]
    site = ["-e", "@%s" % cluster.write_vars("site.yml", site_install(cluster))]
    cluster.clear_requests()
    run = cluster.playbook("nvidia-gpu-operator.yml", "-e", "k8s_gpu_mig_strategy=mixed", *site, check=False)
    assert run.rc != 0
    assert "Node %s: driver %s is loaded and %s is wanted" % (node, SIMULATED, WANTED) in run.output
    assert "mig_allow_reboot=true" in run.output
    assert "installed_driver_version" not in cluster.nvml_state(node)
    assert STATE not in cluster.node(node)["metadata"]["labels"]

    # The rehearsal names the node's driver change and changes nothing.
    rehearsal = cluster.playbook("nvidia-gpu-operator.yml", "-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_allow_reboot=true",
                                 *site, "--check")
    assert "; driver %s -> " % SIMULATED in rehearsal.output and "; driver %s;" % WANTED in rehearsal.output, rehearsal.output[-4000:]
    assert cluster.nvml_state(node)["driver_version"] == SIMULATED and "installed_driver_version" not in cluster.nvml_state(node)
    assert STATE not in cluster.node(node)["metadata"]["labels"]
    assert not [r for r in mutations(cluster.requests()) if r.get("resource") in ("nodes", "pods")]


def unavailable(availability: dict) -> bool:
    """Out of service as mig_max_unavailable counts it: NotReady, cordoned, or tainted NoSchedule/NoExecute."""
    return not availability["ready"] or availability["unschedulable"] or bool(availability["taints"])


def most_unavailable(initial: dict[str, dict], requests: list[dict]) -> int:
    """The most GPU nodes out of service at once, replaying every node write of the request log in order."""
    current = dict(initial)
    most = sum(unavailable(a) for a in current.values())
    for request in sorted(requests, key=lambda r: r["seq"]):
        if request.get("node_after") is not None and request.get("name") in current:
            current[request["name"]] = request["node_after"]
            most = max(most, sum(unavailable(a) for a in current.values()))
    return most


@pytest.mark.fleet
@pytest.mark.timeout(7200)
def test_fleet_driver_upgrade_keeps_within_max_unavailable_and_leaves_nodes_out_of_service_alone(sim_cluster):
    """The acceptance case: 20 nodes x 8 GPUs, two cordoned by an operator and one NotReady beforehand,
    max_unavailable 25 % (5 nodes): batches of 2 fill the budget."""
    rolling_driver_upgrade(sim_cluster, nodes=20, gpus=8, cordoned=(3, 4), down=10, max_unavailable="25%", most=5, batch=2)


def rolling_driver_upgrade(sim_cluster, nodes: int, gpus: int, cordoned: tuple, down: int, max_unavailable: str, most: int,
                           batch: int) -> None:
    """A driver version change on a fleet with workloads behind PodDisruptionBudgets and nodes out of
    service beforehand: at no time more than ``most`` nodes out (replayed from the request log), no
    pod killed by a reboot, the nodes out of service left alone (cordon kept, driver unchanged), every
    other node upgraded and advertising its resources, and a re-run changes nothing."""
    from gpuops_sim.k8s.server import node_availability  # pylint: disable=import-outside-toplevel
    from gpuops_sim.node import kubelet  # pylint: disable=import-outside-toplevel

    cluster = sim_cluster(["a100:%d:A100-40GB:%d" % (nodes, gpus)])
    names = cluster.nodes
    common = ["-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_config_name=all-1g.5gb", "-e", "mig_reconfigure_wait_timeout=300"]
    cluster.playbook("nvidia-gpu-operator.yml", *common, "-e", "mig_rollout_batch=100%", timeout=3000)
    cluster.workload(name="infer", resource="nvidia.com/mig-1g.5gb", count=2 * nodes, pdb_max_unavailable="25%")
    cluster.workload(name="serve", resource="nvidia.com/mig-1g.5gb", count=nodes, pdb_min_available="75%")
    # Nodes cordoned by an operator, and one down, before the run.
    held_cordoned, held_down = [names[i] for i in cordoned], names[down]
    for node in held_cordoned:
        cluster.store.patch("nodes", None, node, {"spec": {"unschedulable": True}})
    kubelet.shut_down(cluster.cluster.state_path(held_down))
    assert not any(c["status"] == "True" for c in cluster.node(held_down)["status"]["conditions"] if c["type"] == "Ready")
    site = ["-e", "@%s" % cluster.write_vars("site.yml", site_install(cluster)), "-e", "mig_allow_reboot=true",
            "-e", "mig_max_unavailable=%s" % max_unavailable, "-e", "mig_rollout_batch=%d" % batch]
    initial = {node: node_availability(cluster.node(node)) for node in names}
    cluster.clear_requests()

    run = cluster.playbook("nvidia-gpu-operator.yml", *common, *site, timeout=3000)
    requests = cluster.requests()
    assert most_unavailable(initial, requests) <= most
    assert not {name for name in killed_by_kubelet(requests) if name.startswith(("infer-", "serve-"))}
    for node in names:
        obj = cluster.node(node)
        if node in held_cordoned or node == held_down:
            assert cluster.nvml_state(node)["driver_version"] == SIMULATED, node
            assert STATE not in obj["metadata"]["labels"]
            assert TAINT not in [t["key"] for t in obj["spec"].get("taints") or []]
            if node in held_cordoned:
                assert obj["spec"].get("unschedulable") is True
            continue
        assert cluster.nvml_state(node)["driver_version"] == WANTED, (node, run.output[-3000:])
        assert obj["metadata"]["labels"][STATE] == "upgrade-done"
        assert obj["status"]["allocatable"]["nvidia.com/mig-1g.5gb"] == str(7 * gpus)
        assert TAINT not in [t["key"] for t in obj["spec"].get("taints") or []]
    assert "is cordoned by someone else: its driver upgrade is left for later" in run.output
    assert "is NotReady: its driver upgrade is left for later" in run.output

    again = cluster.playbook("nvidia-gpu-operator.yml", *common, *site, timeout=3000)
    assert again.changed == 0, again.output[-5000:]
