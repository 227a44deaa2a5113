# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A first install as the README's steps run it: settings in the inventory only (no -e), the API host
named by the inventory group gpuops_api, and the refusals a fresh cluster can meet (a node without a
driver that nothing installs, GFD labels that cannot arrive) before anything changes."""

from __future__ import annotations

import os
import sys

import pytest

from test_rollout import mutations

STANDIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "roles", "standin")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

PLUGIN_CONFIG = "nvidia.com/device-plugin.config"


def site_inventory(cluster, name: str, all_vars: dict, hosts: dict | None = None, api_host: bool = True):
    """The site's own inventory beside the simulated one: its settings (group_vars of all) and its API host."""
    children = {"gpu_nodes": {"hosts": hosts or {}}}
    if api_host:
        children["gpuops_api"] = {"hosts": {"api": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}
    return ["-i", str(cluster.write_vars(name, {"all": {"vars": all_vars, "children": children}}))]


@pytest.mark.acceptance
def test_the_api_host_set_only_in_the_inventory_runs_every_api_task(sim_cluster):
    cluster = sim_cluster(["a100:2:A100-40GB:1"])
    site = site_inventory(cluster, "site.yml", {"k8s_gpu_mig_strategy": "mixed", "mig_config_name": "all-1g.5gb"})
    run = cluster.playbook("nvidia_gpu_operator.yml", *site)
    recap = run.recap()
    # The deploy plays ran on the group's host, and nothing on an implicit localhost.
    assert "api" in recap and "localhost" not in recap, run.output[-3000:]
    for node in cluster.nodes:
        labels = cluster.node(node)["metadata"]["labels"]
        assert labels.get(PLUGIN_CONFIG), (node, labels)
        assert labels["nvidia.com/mig.config.state"] == "success"
        assert cluster.node(node)["status"]["allocatable"]["nvidia.com/mig-1g.5gb"] == "7"
    again = cluster.playbook("nvidia_gpu_operator.yml", *site)
    assert again.changed == 0, again.output[-3000:]


@pytest.mark.parametrize("settings, named", [
    ({"nvidia_driver_install": False}, "nvidia_driver_install=false"),
    ({"gpu_stack": "operator"}, "gpu_operator_driver_enabled=false"),
])
def test_a_node_without_a_driver_that_nothing_installs_is_refused(sim_cluster, settings, named):
    cluster = sim_cluster(["a100:2:A100-40GB:1"])
    first, second = cluster.nodes
    # The second node's NVML cannot be opened: no driver loaded (the simulator's node without a state file).
    environment = {"GPUOPS_NVML_SIMULATOR": str(cluster.directory / "nodes" / "no-driver.json"), "PATH": os.environ.get("PATH", "")}
    site = site_inventory(cluster, "site.yml", dict({"k8s_gpu_mig_strategy": "mixed", "mig_config_name": "all-1g.5gb"}, **settings),
                          hosts={second: {"gpuops_environment": environment}})
    cluster.clear_requests()
    run = cluster.playbook("nvidia-gpu-operator.yml", *site, check=False)
    assert run.rc != 0
    assert "Node %s has no usable NVIDIA driver" % second in run.output and named in run.output, run.output[-3000:]
    assert "Node %s has no usable" % first not in run.output
    assert "Install the NVIDIA driver" not in run.output, "it failed in the first play"
    assert not mutations(cluster.requests())
    assert all(not gpu["mig"]["current"] for gpu in cluster.nvml(first)["gpus"])


def test_nfd_none_on_a_cluster_without_nfd_or_a_helm_install_without_helm_is_refused(sim_cluster):
    cluster = sim_cluster(["a100:1:A100-40GB:1"])
    base = {"k8s_gpu_mig_strategy": "mixed", "mig_config_name": "all-1g.5gb"}
    cluster.clear_requests()
    refused = cluster.playbook("nvidia-gpu-operator.yml", *site_inventory(cluster, "none.yml", dict(base, nvidia_device_plugin_nfd="none")),
                               check=False)
    assert refused.rc != 0
    assert "nvidia_device_plugin_nfd=none: the cluster has no Node Feature Discovery" in refused.output, refused.output[-3000:]
    assert "Install the NVIDIA driver" not in refused.output, "it failed in the first play"
    assert not mutations(cluster.requests())
    if any(os.access(os.path.join(folder, "helm"), os.X_OK) for folder in os.environ.get("PATH", "").split(os.pathsep) if folder):
        return  # a helm binary is on PATH here
    helm = cluster.playbook("nvidia-gpu-operator.yml", *site_inventory(
        cluster, "helm.yml", dict(base, nvidia_device_plugin_nfd_install="helm")), check=False)
    assert helm.rc != 0
    assert "nvidia_device_plugin_nfd=auto: the cluster has no Node Feature Discovery" in helm.output, helm.output[-3000:]
    assert "api has no helm binary" in helm.output
    assert not mutations(cluster.requests())


NFD_NAMESPACE = "node-feature-discovery"
GFD_LABELS = ("nvidia.com/gpu.product", "nvidia.com/mig.strategy", "nvidia.com/gfd.timestamp")
PCI_LABEL = "feature.node.kubernetes.io/pci-10de.present"


def test_a_cluster_without_nfd_gets_it_and_gfds_labels_arrive_through_it(sim_cluster):
    cluster = sim_cluster(["a100:1:A100-40GB:1"])
    (node,) = cluster.nodes
    assert cluster.store.list("daemonsets", NFD_NAMESPACE) == []
    site = site_inventory(cluster, "site.yml", {"k8s_gpu_mig_strategy": "mixed", "mig_config_name": "all-1g.5gb"})
    cluster.playbook("nvidia-gpu-operator.yml", *site)
    # NFD's own deployment, applied by the device plugin role (no helm here).
    assert [d["metadata"]["name"] for d in cluster.store.list("daemonsets", NFD_NAMESPACE)] == ["nfd-worker"]
    assert sorted(d["metadata"]["name"] for d in cluster.store.list("deployments", NFD_NAMESPACE)) == ["nfd-gc", "nfd-master"]
    labels = cluster.node(node)["metadata"]["labels"]
    assert all(key in labels for key in GFD_LABELS), labels
    assert labels["nvidia.com/mig.strategy"] == "mixed" and labels[PCI_LABEL] == "true"
    assert labels["nvidia.com/mig.config.state"] == "success"
    # GFD wrote them into NFD's feature directory on the node, NFD's worker and master labelled the node.
    features = cluster.directory / "nodes" / ("%s-root" % node) / "etc/kubernetes/node-feature-discovery/features.d/gfd"
    assert "nvidia.com/mig.strategy=mixed" in features.read_text(encoding="utf-8")
    assert [f["metadata"]["name"] for f in cluster.store.list("nodefeatures", NFD_NAMESPACE)] == [node]
    again = cluster.playbook("nvidia-gpu-operator.yml", *site)
    assert again.changed == 0, again.output[-3000:]


def test_an_nfd_the_cluster_has_is_left_alone(sim_cluster):
    cluster = sim_cluster(["a100:1:A100-40GB:1"])
    (node,) = cluster.nodes
    cluster.cluster.install_nfd()

    def nfd_objects():
        """Each NFD object's spec and data (status is written by the daemons themselves)."""
        return {(kind, o["metadata"]["name"]): (o.get("spec"), o.get("data"), o["metadata"].get("labels"))
                for kind in ("daemonsets", "deployments", "configmaps") for o in cluster.store.list(kind, NFD_NAMESPACE)}
    before = nfd_objects()
    site = site_inventory(cluster, "site.yml", {"k8s_gpu_mig_strategy": "mixed", "mig_config_name": "all-1g.5gb"})
    cluster.playbook("nvidia-gpu-operator.yml", *site)
    # No second NFD, nothing of the existing one changed.
    assert nfd_objects() == before
    assert not any(d["metadata"]["name"].startswith("nfd") for ns in ("nvidia-device-plugin",)
                   for d in cluster.store.list("daemonsets", ns))
    labels = cluster.node(node)["metadata"]["labels"]
    assert labels["nvidia.com/mig.strategy"] == "mixed" and labels["nvidia.com/mig.config.state"] == "success"


def test_with_the_operators_driver_the_rollout_waits_for_nvml_then_fails_the_node_naming_why(sim_cluster, monkeypatch, tmp_path):
    """gpu_stack=operator with its driver: a node without a driver passes the validating play and
    is planned in the rollout once NVML opens; here it never does, and the wait ends the node before
    anything is fenced."""
    monkeypatch.setenv("PATH", os.pathsep.join([STANDIN_DIR, os.environ.get("PATH", "")]))
    monkeypatch.setenv("GPUOPS_HELM_STANDIN_DIR", str(tmp_path / "helm"))
    cluster = sim_cluster(["a100:1:A100-40GB:1"])
    (node,) = cluster.nodes
    environment = {"GPUOPS_NVML_SIMULATOR": str(cluster.directory / "nodes" / "no-driver.json"), "PATH": os.environ["PATH"]}
    site = site_inventory(cluster, "site.yml", {
        "k8s_gpu_mig_strategy": "mixed", "mig_config_name": "all-1g.5gb", "gpu_stack": "operator",
        "gpu_operator_driver_enabled": True, "mig_reconfigure_driver_timeout": 10}, hosts={node: {"gpuops_environment": environment}})
    run = cluster.playbook("nvidia-gpu-operator.yml", *site, check=False)
    assert run.rc != 0
    assert "Apply MIG mode and geometry" in run.output, "the validating play let the node through"
    assert "NVML cannot be opened yet" in run.output, run.output[-3000:]
    # Planned, then planned again after the wait (mig_reconfigure_driver_timeout // 10 retries).
    assert "FAILED - RETRYING: [%s]: Read the node's GPUs and plan the MIG layout change (1 retries left)" % node in run.output
    assert "gpuops.io/mig-reconfigure" not in [t["key"] for t in cluster.node(node).get("spec", {}).get("taints") or []]
