# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Which pod holds which device, read from each node's kubelet PodResources socket on the simulated
cluster: the node module, and the rollout that evicts by it (or, without it, every GPU pod, saying why)."""

from __future__ import annotations

import json

import pytest
import yaml

from test_rollout import evictions, pod_deletes, taints, wait_running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TAINT = "gpuops.io/mig-reconfigure"
STATE = "nvidia.com/mig.config.state"
UNKNOWN = "which pod holds which device was unknown, so every GPU pod of the node was a target"


def configs(gpus: int) -> dict:
    """before: every GPU 7 x 1g.5gb; after: GPU 0 2 x 3g.20gb, the others unchanged."""
    def entry(devices, name, count):
        return {"devices": devices, "mig-enabled": True, "mig-devices": {name: count}}
    return {"mig_configs": {"before": [entry("all", "1g.5gb", 7)],
                            "after": [entry([0], "3g.20gb", 2), entry(list(range(1, gpus)), "1g.5gb", 7)]}}


def gpu_devices(cluster, node: str, index: int) -> set[str]:
    gpu = cluster.nvml(node)["gpus"][index]
    return {gpu["uuid"]} | {ci["device_uuid"] for gi in gpu["gpu_instances"] for ci in gi["compute_instances"]}


READ_PLAY = """
- name: Read the pod -> device map of every GPU node
  hosts: gpu_nodes
  gather_facts: false
  environment: "{{ gpuops_environment | default({}) }}"
  tasks:
    - name: Ask the node's kubelet
      gpuops.nvidia.gpu_pod_devices:
        socket: "{{ kubelet_pod_resources_socket }}"
      register: held
    - name: Keep the result for the test
      ansible.builtin.copy:
        content: "{{ held | to_json }}"
        dest: "{{ out }}/{{ inventory_hostname }}.json"
        mode: "0644"
      check_mode: false
"""


def test_the_node_module_maps_each_pod_to_its_mig_devices_and_gpus(sim_cluster, tmp_path):
    cluster = sim_cluster(["a100:1:A100-40GB:2"])
    config = cluster.write_vars("configs.yml", configs(2))
    cluster.playbook("nvidia-gpu-operator.yml", "-e", "@%s" % config, "-e", "k8s_gpu_mig_strategy=mixed",
                     "-e", "mig_config_name=before")
    cluster.workload(name="infer", resource="nvidia.com/mig-1g.5gb", count=5, per_pod=2)
    assert len(wait_running(cluster, "infer", 5)) == 5
    node = cluster.nodes[0]
    play = tmp_path / "read.yml"
    play.write_text(READ_PLAY)
    for check in ([], ["--check"]):
        out = tmp_path / ("out" + "".join(check))
        out.mkdir()
        cluster.playbook(str(play), "-e", "out=%s" % out, *check)
        result = json.loads((out / ("%s.json" % node)).read_text())
        assert result["available"] is True and result["changed"] is False and result["error"] is None
        held = cluster.held(node)
        by_name = {entry["name"]: entry for entry in result["pods"]}
        assert set(by_name) == set(held) and len(held) == 5
        gpus = {index: gpu_devices(cluster, node, index) for index in (0, 1)}
        for name, entry in by_name.items():
            assert entry["namespace"] == "default"
            assert entry["resources"] == {"nvidia.com/mig-1g.5gb": held[name]}
            assert entry["devices"] == held[name] and all(d.startswith("MIG-") for d in entry["devices"])
            assert set(entry["gpus"]) == {cluster.nvml(node)["gpus"][i]["uuid"] for i in (0, 1) if gpus[i] & set(held[name])}
        assert sum(len(ids) for ids in result["allocatable"].values()) == 14
    assert not any("gpuops.io/device-ids" in (p["metadata"].get("annotations") or {}) for p in cluster.pods("default"))


def test_the_rollout_evicts_by_the_map_and_every_gpu_pod_of_a_node_without_it(sim_cluster):
    """gpu-node-1 reads its map: only the pods on GPU 0 (the one that changes) go. gpu-node-2's socket is
    not where the inventory says (a kubelet whose root directory moved): all its GPU pods go, and the
    check-mode preview and the summary say so and why."""
    cluster = sim_cluster(["a100:2:A100-40GB:2"])
    first, second = cluster.nodes
    config = cluster.write_vars("configs.yml", configs(2))
    common = ["-e", "@%s" % config, "-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_rollout_batch=100%",
              "-e", "mig_reconfigure_wait_timeout=120"]
    cluster.playbook("nvidia-gpu-operator.yml", *common, "-e", "mig_config_name=before")
    cluster.workload(name="infer", resource="nvidia.com/mig-1g.5gb", count=28)
    running = wait_running(cluster, "infer", 28)
    assert len(running) == 28
    missing = str(cluster.directory / "elsewhere" / "kubelet.sock")
    host_vars = cluster.directory / "host_vars"
    host_vars.mkdir()
    (host_vars / ("%s.yml" % second)).write_text(yaml.safe_dump({"kubelet_pod_resources_socket": missing}))
    on_gpu0 = {name for name, ids in cluster.held(first).items() if set(ids) & gpu_devices(cluster, first, 0)}
    assert len(on_gpu0) == 7
    on_second = {name for name, node in running.items() if node == second}
    assert len(on_second) == 14

    cluster.clear_requests()
    preview = cluster.playbook("mig-reconfigure.yml", *common, "-e", "mig_config_name=after", "--check")
    assert not evictions(cluster.requests())
    summary = preview.output.split("MIG ROLLOUT SUMMARY")[1]
    assert sorted(summary.count("  would evict default/%s: uses MIG-" % name) for name in on_gpu0) == [1] * 7
    reason = "the kubelet's PodResources socket %s does not exist" % missing
    assert UNKNOWN in summary and reason in summary
    assert all("  would evict default/%s: its devices are unknown" % name in summary for name in on_second)
    assert "%s: 2 GPU(s): 7x1g.5gb -> 2x3g.20gb on GPU 0, 7x1g.5gb on GPU 1; 14 pod(s) to evict" % second in summary

    cluster.clear_requests()
    run = cluster.playbook("mig-reconfigure.yml", *common, "-e", "mig_config_name=after")
    requests = cluster.requests()
    evicted = {r["name"] for r in evictions(requests) if r["status"] < 300}
    assert evicted == on_gpu0 | on_second
    assert not pod_deletes(requests)
    summary = run.output.split("MIG ROLLOUT SUMMARY")[1]
    lines = [line for line in summary.splitlines() if line.startswith(second + ":")]
    assert len(lines) == 1 and UNKNOWN in lines[0] and reason in lines[0] and "14 pod(s) evicted" in lines[0]
    assert [line for line in summary.splitlines() if line.startswith(first + ":")][0].count(UNKNOWN) == 0
    assert "evicted default/" in summary
    for node in cluster.nodes:
        assert cluster.layout(node) == [["3g.20gb", "3g.20gb"], ["1g.5gb"] * 7]
        obj = cluster.node(node)
        assert obj["metadata"]["labels"][STATE] == "success" and TAINT not in taints(obj)
