# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A driver upgrade through the batch steps (module_utils/k8s/rollout.py): the whole node is drained,
and the driver upgrade's state label goes draining → upgrade-done, or upgrade-failed."""

from __future__ import annotations

from ansible_collections.gpuops.nvidia.plugins.module_utils import driver_upgrade as d
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s import rollout as r

from k8s_unit_helpers import make_node, make_pod

PLUGIN = "nvidia.com/gpu.deploy.device-plugin"
UPGRADE = {"layout_changes": False, "advertised_current": True, "reboot": True,
           "driver_upgrade": {"from": "550.54.15", "to": "570.86.15"}}
PLAN = {"changing_devices": [], "expected": {"allocatable": {"nvidia.com/gpu": "2"}, "labels": {}}}


def entry(name, decision=None):
    return {"name": name, "plan": PLAN, "decision": decision or UPGRADE, "config_name": None, "pod_devices": None}


def cluster(fake_kube):
    nodes = [make_node("gpu-node-1", labels={PLUGIN: "true"}, allocatable={"nvidia.com/gpu": "2"}),
             make_node("gpu-node-2", labels={PLUGIN: "true"}, allocatable={"nvidia.com/gpu": "2"})]
    pods = [make_pod("train", gpus={"nvidia.com/gpu": "1"}), make_pod("web"),
            make_pod("agent", owner_kind="DaemonSet")]
    return fake_kube(nodes=nodes, pods=pods, pdbs=[])


def test_begin_and_finish_carry_the_driver_state_only_for_a_driver_upgrade():
    settings = r.RolloutSettings()
    assert r.begin_change(None, settings, UPGRADE["driver_upgrade"])["labels"][d.DRIVER_STATE_LABEL] == d.DRAINING
    assert r.finish_change(None, settings, UPGRADE["driver_upgrade"])["labels"][d.DRIVER_STATE_LABEL] == d.UPGRADE_DONE
    assert d.DRIVER_STATE_LABEL not in r.begin_change("all-1g.5gb", settings)["labels"]
    assert d.DRIVER_STATE_LABEL not in r.finish_change("all-1g.5gb", settings, None)["labels"]


def test_a_driver_upgrade_drains_the_whole_node_but_its_daemonset_pods_and_finishes_done(fake_kube):
    kube = cluster(fake_kube)
    fenced = r.fence(kube, [entry("gpu-node-1")], r.RolloutSettings(gpu_clients=["device-plugin"]), check_mode=False)
    assert sorted(pod["name"] for pod in fenced["gpu-node-1"]["evicted"]) == ["train", "web"]
    labels = kube.nodes["gpu-node-1"]["metadata"]["labels"]
    assert labels[d.DRIVER_STATE_LABEL] == d.DRAINING
    released = r.release(kube, [entry("gpu-node-1")], r.RolloutSettings(gpu_clients=["device-plugin"]), check_mode=False)
    assert not released["gpu-node-1"]["failed"], released
    assert kube.nodes["gpu-node-1"]["metadata"]["labels"][d.DRIVER_STATE_LABEL] == d.UPGRADE_DONE
    assert released["gpu-node-1"]["diff"]["after"]["labels"][d.DRIVER_STATE_LABEL] == d.UPGRADE_DONE


def test_a_failure_under_way_marks_the_upgrade_failed_and_a_node_without_one_gets_no_driver_state(fake_kube):
    kube = cluster(fake_kube)
    r.fence(kube, [entry("gpu-node-1")], r.RolloutSettings(), check_mode=False)
    kube.nodes["gpu-node-1"]["metadata"]["labels"][d.DRIVER_STATE_LABEL] = d.REBOOTING
    r.fail(kube, [{"name": "gpu-node-1", "reason": "wrong driver loaded"}, {"name": "gpu-node-2", "reason": "x"}],
           r.RolloutSettings(), check_mode=False)
    first = kube.nodes["gpu-node-1"]["metadata"]
    assert first["labels"][d.DRIVER_STATE_LABEL] == d.UPGRADE_FAILED and first["labels"][r.STATE_LABEL] == "failed"
    assert first["annotations"][r.MESSAGE_ANNOTATION] == "wrong driver loaded"
    assert d.DRIVER_STATE_LABEL not in kube.nodes["gpu-node-2"]["metadata"]["labels"]
    # The cause fixed, the node already runs the wanted driver (it failed after its reboot): the
    # change that releases it finishes its upgrade.
    kube.nodes["gpu-node-1"]["status"]["allocatable"] = {"nvidia.com/gpu": "2"}
    converged = {"layout_changes": False, "advertised_current": True, "tainted": True, "reboot": False, "driver_upgrade": None}
    r.fence(kube, [entry("gpu-node-1", converged)], r.RolloutSettings(), check_mode=False)
    released = r.release(kube, [entry("gpu-node-1", converged)], r.RolloutSettings(), check_mode=False)
    assert not released["gpu-node-1"]["failed"], released
    assert kube.nodes["gpu-node-1"]["metadata"]["labels"][d.DRIVER_STATE_LABEL] == d.UPGRADE_DONE
