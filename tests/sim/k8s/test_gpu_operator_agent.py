# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The simulated GPU Operator on fresh nodes: the gpu-operator chart (the tests' helm stand-in)
creates the ClusterPolicy and the operator's Deployment; the operator's driver pod loads the driver
on each GPU node (NVML opens without a reboot), and the device plugin and GFD start there once it
has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import yaml

from gpuops_sim.k8s import gpu_operator as operator
from gpuops_sim.k8s.agents import AgentSettings
from gpuops_sim.k8s.cluster import Cluster, ClusterOptions, parse_pool
from gpuops_sim.nvml import state as nvml_state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HELM = os.path.join(ROOT, "tests", "integration", "roles", "standin", "helm")
POOL = [parse_pool("a100:2:A100-40GB:2")]


def wait(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def helm_install(cluster: Cluster, tmp_path, values: dict) -> None:
    """`helm upgrade -i` of the gpu-operator chart as kubernetes.core.helm runs it."""
    values_file = tmp_path / "values.yml"
    values_file.write_text(yaml.safe_dump(values), encoding="utf-8")
    env = dict(os.environ, KUBECONFIG=cluster.kubeconfig, GPUOPS_HELM_STANDIN_DIR=str(tmp_path / "helm"))
    done = subprocess.run([sys.executable, HELM, "upgrade", "-i", "--create-namespace", "--namespace", "gpu-operator",
                           "--version=v26.3.3", "--repo=https://helm.ngc.nvidia.com/nvidia", f"--values={values_file}",
                           "gpu-operator", "gpu-operator"], env=env, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0 and "helm stand-in" not in done.stderr, done.stderr


def test_load_driver_opens_nvml_at_once_and_drops_a_staged_driver(tmp_path):
    path = str(tmp_path / "node.json")
    nvml_state.init_node(path, "A100-40GB", 1, driver_version=None)
    nvml_state.install_driver(path, "550.54.15")
    nvml_state.load_driver(path, "570.86.15")
    read = nvml_state.read_state(path)
    assert read["driver_version"] == "570.86.15" and "installed_driver_version" not in read


def test_the_charts_policy_with_its_driver_brings_fresh_nodes_up_without_a_reboot(tmp_path):
    options = ClusterOptions(pools=POOL, fresh=True, settings=AgentSettings(plugin_delay=0.05))
    with Cluster(str(tmp_path / "sim"), options) as cluster:
        store = cluster.emulator.store
        boots = {node: nvml_state.read_state(cluster.state_path(node))["boot_count"] for node in cluster.nodes}
        helm_install(cluster, tmp_path, {"driver": {"enabled": True}, "migManager": {"enabled": False}, "mig": {"strategy": "mixed"},
                                         "toolkit": {"enabled": False}})
        policy = store.get("clusterpolicies", None, "cluster-policy")
        assert policy["spec"]["driver"]["enabled"] is True and policy["spec"]["mig"]["strategy"] == "mixed"
        assert store.get("deployments", "gpu-operator", "gpu-operator") is not None
        for node in cluster.nodes:
            wait(lambda node=node: store.get("nodes", None, node)["status"]["allocatable"].get("nvidia.com/gpu") == "2", f"{node} advertises")
            read = nvml_state.read_state(cluster.state_path(node))
            assert read["driver_version"] == operator.DEFAULT_DRIVER_VERSION and read["boot_count"] == boots[node]
            wait(lambda node=node: "nvidia.com/gpu.product" in store.get("nodes", None, node)["metadata"]["labels"], f"{node} GFD labels")
        daemonsets = {ds["metadata"]["name"] for ds in store.list("daemonsets", "gpu-operator")}
        # nfd-worker: the chart's NFD subchart, which GFD's labels go through.
        assert daemonsets == {operator.DRIVER_DAEMONSET, "nvidia-device-plugin-daemonset", "gpu-feature-discovery", "nfd-worker"}
        assert sorted(cluster.gpu_operator.loaded) == sorted(cluster.nodes)
        calls = [json.loads(line) for line in (tmp_path / "helm" / "calls.jsonl").read_text(encoding="utf-8").splitlines()]
        assert calls[-1]["kubeconfig"] == cluster.kubeconfig


def test_without_its_driver_the_operands_wait_for_one_and_a_deploy_label_set_false_stays(tmp_path):
    options = ClusterOptions(pools=POOL, fresh=True, settings=AgentSettings(plugin_delay=0.05))
    with Cluster(str(tmp_path / "sim"), options) as cluster:
        store = cluster.emulator.store
        first, second = cluster.nodes
        store.patch("nodes", None, second, {"metadata": {"labels": {"nvidia.com/gpu.deploy.device-plugin": "false"}}}, patch_type="merge")
        helm_install(cluster, tmp_path, {"driver": {"enabled": False}, "migManager": {"enabled": True}})
        wait(lambda: cluster.api.get("daemonsets", "gpu-operator", "nvidia-mig-manager") is not None, "MIG manager")
        cluster.gpu_operator.reconcile()
        assert cluster.api.get("daemonsets", "gpu-operator", operator.DRIVER_DAEMONSET) is None
        for node in cluster.nodes:
            labels = store.get("nodes", None, node)["metadata"]["labels"]
            assert "nvidia.com/gpu.deploy.gpu-feature-discovery" not in labels, "an operand before the driver"
        # A driver from elsewhere (the site's package, loaded): the operands come.
        nvml_state.load_driver(cluster.state_path(first), "550.54.15")
        nvml_state.load_driver(cluster.state_path(second), "550.54.15")
        store.patch("nodes", None, first, {"metadata": {"labels": {"example.com/touched": "1"}}}, patch_type="merge")
        store.patch("nodes", None, second, {"metadata": {"labels": {"example.com/touched": "1"}}}, patch_type="merge")
        wait(lambda: store.get("nodes", None, first)["status"]["allocatable"].get("nvidia.com/gpu") == "2", "advertises")
        labels = store.get("nodes", None, second)["metadata"]["labels"]
        assert labels["nvidia.com/gpu.deploy.device-plugin"] == "false"
        wait(lambda: store.get("nodes", None, second)["metadata"]["labels"].get("nvidia.com/gpu.deploy.gpu-feature-discovery") == "true",
             "GFD label")
        store.patch("clusterpolicies", None, "cluster-policy", {"spec": {"migManager": {"enabled": False}}}, patch_type="merge")
        wait(lambda: cluster.api.get("daemonsets", "gpu-operator", "nvidia-mig-manager") is None, "MIG manager removed")
