# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Clusters that already run NVIDIA software installed by other tools: the default run refuses in the
first play, changes nothing and names what it found; the run that allows a take-over ends with one
manager of each thing, and a re-run changes nothing."""

from __future__ import annotations

import json
import os
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

MIXED = ["-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_reconfigure_wait_timeout=120"]
POOL = ["a100:2:A100-40GB:2"]


def snapshot(cluster) -> str:
    """Everything a run could change: the API objects (no status), and each node's GPUs and files."""
    store = cluster.store
    objects = []
    kinds = ["nodes", "daemonsets", "configmaps", "namespaces"] + (["clusterpolicies"] if any(
        crd["metadata"]["name"] == "clusterpolicies.nvidia.com" for crd in store.list("customresourcedefinitions")) else [])
    for kind in kinds:
        for obj in store.list(kind):
            objects.append((kind, obj["metadata"].get("namespace"), obj["metadata"]["name"],
                            obj["metadata"].get("labels"), obj["metadata"].get("annotations"), obj.get("spec"), obj.get("data")))
    gpus = {node: cluster.layout(node) for node in cluster.nodes}
    return json.dumps([objects, gpus], sort_keys=True, default=str)


def settled(cluster) -> str:
    """The snapshot once the daemons already there have labelled every GPU node (GFD's product label)."""
    deadline = time.monotonic() + 60
    while any(ds["metadata"]["name"].endswith("gpu-feature-discovery") for ds in cluster.store.list("daemonsets")):
        if all("nvidia.com/gpu.product" in cluster.node(node)["metadata"]["labels"] for node in cluster.nodes):
            break
        assert time.monotonic() < deadline, "GFD never labelled the nodes"
        time.sleep(0.2)
    return snapshot(cluster)


def refused(run, *texts: str) -> None:
    assert run.rc != 0, run.output[-3000:]
    assert "Refuse to run beside another manager of what the collection manages" in run.output
    # The first play stopped: no task of a later play ran.
    assert "Install the NVIDIA driver and the container toolkit" not in run.output
    for text in texts:
        assert text in run.output, (text, run.output[-4000:])


def test_a_helm_device_plugin_and_gfd_are_refused_by_name_and_nothing_changes(sim_cluster):
    cluster = sim_cluster(POOL, strategy="single", installed_by="helm")
    before = settled(cluster)
    run = cluster.playbook("nvidia-gpu-operator.yml", "-e", "k8s_gpu_mig_strategy=single", check=False)
    refused(run, "DaemonSet nvidia-device-plugin-helm/nvdp-nvidia-device-plugin runs the NVIDIA device plugin v0.17.0",
            "DaemonSet nvidia-device-plugin-helm/nvdp-gpu-feature-discovery runs GPU Feature Discovery v0.17.0",
            "helm release nvdp in namespace nvidia-device-plugin-helm", "gpu-node-1, gpu-node-2",
            "helm uninstall nvdp -n nvidia-device-plugin-helm")
    assert snapshot(cluster) == before


def test_a_gpu_operator_is_refused_for_the_standalone_stack_and_its_mig_manager_for_the_operator_stack(sim_cluster):
    cluster = sim_cluster(POOL, strategy="mixed", installed_by="gpu-operator")
    before = settled(cluster)
    standalone = cluster.playbook("nvidia-gpu-operator.yml", *MIXED, check=False)
    refused(standalone, "ClusterPolicy cluster-policy (GPU Operator v25.3.0) manages device-plugin, gpu-feature-discovery, "
            "mig-manager", "Set gpu_stack: operator")
    operator = cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "gpu_stack=operator", check=False)
    refused(operator, "ClusterPolicy cluster-policy (GPU Operator v25.3.0) runs its MIG manager (migManager.enabled) on "
            "node(s) gpu-node-1, gpu-node-2", "existing_software_disable_operator_mig_manager: true")
    assert snapshot(cluster) == before


def test_a_deepops_mig_parted_service_is_refused_naming_its_config_and_nothing_changes(sim_cluster):
    cluster = sim_cluster(POOL, mig_parted_config="all-1g.5gb")
    before = settled(cluster)
    run = cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "mig_config_name=all-1g.5gb", check=False)
    refused(run, "Node gpu-node-1: systemd service nvidia-mig-manager.service (enabled; mig-parted, config all-1g.5gb",
            "Node gpu-node-2:", "existing_software_take_over_mig_parted_service: true")
    assert snapshot(cluster) == before


def device_daemons(cluster, node: str) -> list[tuple[str, str]]:
    """(namespace, DaemonSet) of each running device plugin or GFD pod on the node."""
    found = []
    for pod in cluster.pods():
        owner = (pod["metadata"].get("ownerReferences") or [{}])[0].get("name", "")
        if pod["spec"].get("nodeName") == node and pod.get("status", {}).get("phase") == "Running" and (
                "device-plugin" in owner or "feature-discovery" in owner):
            found.append((pod["metadata"]["namespace"], owner))
    return sorted(found)


def devices(cluster, node: str) -> list[str]:
    """The node's MIG device UUIDs: the same list means no instance was re-created."""
    return [ci["device_uuid"] for gpu in cluster.nvml(node)["gpus"] for gi in gpu["gpu_instances"] for ci in gi["compute_instances"]]


def test_taking_over_a_deepops_mig_parted_service_keeps_the_geometry_and_disables_the_service(sim_cluster):
    from gpuops_sim.node import boot, systemd  # pylint: disable=import-outside-toplevel
    cluster = sim_cluster(POOL, mig_parted_config="all-1g.5gb")
    uuids = {node: devices(cluster, node) for node in cluster.nodes}
    allow = [*MIXED, "-e", "mig_config_name=all-1g.5gb", "-e", "existing_software_take_over_mig_parted_service=true"]
    cluster.playbook("nvidia-gpu-operator.yml", *allow)
    for node in cluster.nodes:
        root = systemd.host(cluster.cluster.state_path(node))["root"]
        assert not systemd.is_enabled(root, "nvidia-mig-manager.service")
        assert systemd.unit_state(cluster.cluster.state_path(node), "nvidia-mig-manager.service").get("active") == "inactive"
        assert systemd.is_enabled(root, "gpuops-mig-apply.service")
        # Same config: the instances the service created are kept, not re-created.
        assert devices(cluster, node) == uuids[node]
        assert cluster.node(node)["status"]["allocatable"]["nvidia.com/mig-1g.5gb"] == "14"
        assert device_daemons(cluster, node) == [("nvidia-device-plugin", "gpu-feature-discovery"),
                                                 ("nvidia-device-plugin", "nvidia-device-plugin-daemonset")]
    assert cluster.playbook("nvidia-gpu-operator.yml", *allow).changed == 0
    # At the next boot only the collection's service applies a geometry.
    result = boot.reboot(cluster.cluster.state_path("gpu-node-1"))
    assert "nvidia-mig-manager.service" not in result["started"] and "gpuops-mig-apply.service" in result["started"]
    assert cluster.layout("gpu-node-1") == [["1g.5gb"] * 7] * 2


def test_with_the_operator_stack_its_mig_manager_is_switched_off_before_the_first_mig_change(sim_cluster, monkeypatch, tmp_path):
    from test_first_install import STANDIN_DIR  # pylint: disable=import-outside-toplevel
    monkeypatch.setenv("PATH", os.pathsep.join([STANDIN_DIR, os.environ.get("PATH", "")]))
    monkeypatch.setenv("GPUOPS_HELM_STANDIN_DIR", str(tmp_path / "helm"))
    cluster = sim_cluster(POOL, strategy="mixed", installed_by="gpu-operator")
    settled(cluster)
    allow = [*MIXED, "-e", "gpu_stack=operator", "-e", "mig_config_name=all-1g.5gb",
             "-e", "existing_software_disable_operator_mig_manager=true"]
    cluster.playbook("nvidia-gpu-operator.yml", *allow)
    policy = cluster.store.get("clusterpolicies", None, "cluster-policy")
    assert policy["spec"]["migManager"]["enabled"] is False
    assert cluster.cluster.mig_manager.reverted == []  # it never fought the rollout over the label
    assert not [ds for ds in cluster.store.list("daemonsets") if ds["metadata"]["name"] == "nvidia-mig-manager"]
    for node in cluster.nodes:
        assert cluster.node(node)["metadata"]["labels"]["nvidia.com/mig.config"] == "all-1g.5gb"
        assert cluster.node(node)["status"]["allocatable"]["nvidia.com/mig-1g.5gb"] == "14"
        assert device_daemons(cluster, node) == [("gpu-operator", "gpu-feature-discovery"),
                                                 ("gpu-operator", "nvidia-device-plugin-daemonset")]
    assert cluster.playbook("nvidia-gpu-operator.yml", *allow).changed == 0


class DevicePluginWatch:
    """Reads the emulator's pods over a whole run and keeps every moment a GPU node ran two device plugin
    pods, or none at all (Running or being started) while a GPU pod ran there."""

    def __init__(self, cluster) -> None:
        import threading  # pylint: disable=import-outside-toplevel
        self.cluster = cluster
        self.two: list[tuple[str, list[str]]] = []
        self.none: list[tuple[str, list[str]]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _sample(self) -> None:
        plugins: dict[str, list[str]] = {node: [] for node in self.cluster.nodes}
        running: dict[str, list[str]] = {node: [] for node in self.cluster.nodes}
        gpu_pods: dict[str, list[str]] = {node: [] for node in self.cluster.nodes}
        for pod in self.cluster.pods():
            node, phase = pod["spec"].get("nodeName"), pod.get("status", {}).get("phase")
            if node not in plugins or pod["metadata"].get("deletionTimestamp") or phase in ("Succeeded", "Failed"):
                continue
            owner = (pod["metadata"].get("ownerReferences") or [{}])[0].get("name", "")
            if owner.endswith("device-plugin") or owner.endswith("device-plugin-daemonset"):
                plugins[node].append(owner)
                if phase == "Running":
                    running[node].append(owner)
            elif any(name.startswith("nvidia.com/") for c in pod["spec"].get("containers", [])
                     for name in (c.get("resources", {}).get("limits") or {})) and phase == "Running":
                gpu_pods[node].append(pod["metadata"]["name"])
        for node in self.cluster.nodes:
            if len(running[node]) > 1:
                self.two.append((node, running[node]))
            if gpu_pods[node] and not plugins[node]:
                self.none.append((node, gpu_pods[node]))
        self.samples += 1

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.05)

    def __enter__(self) -> "DevicePluginWatch":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()


def test_taking_over_a_helm_device_plugin_and_gfd_moves_node_by_node_without_evicting(sim_cluster):
    from test_rollout import gpu_pods, pod_deletes, wait_running  # pylint: disable=import-outside-toplevel
    cluster = sim_cluster(POOL, strategy="single", installed_by="helm")
    settled(cluster)
    allocatable = {node: {k: v for k, v in cluster.node(node)["status"]["allocatable"].items() if k.startswith("nvidia.com/")}
                   for node in cluster.nodes}
    resource = sorted(allocatable["gpu-node-1"])[0]
    cluster.workload(name="train", resource=resource, count=1)
    running = wait_running(cluster, "train", 1)
    assert len(running) == 1
    cluster.clear_requests()
    # A take-over that would advertise with another strategy than the release's is refused, naming both.
    other = cluster.playbook("nvidia-gpu-operator.yml", "-e", "k8s_gpu_mig_strategy=mixed",
                             "-e", "existing_software_take_over_device_plugin=true", check=False)
    refused(other, "DaemonSet nvidia-device-plugin-helm/nvdp-nvidia-device-plugin runs the NVIDIA device plugin v0.17.0",
            "with mig strategy single", "k8s_gpu_mig_strategy: mixed")
    allow = ["-e", "k8s_gpu_mig_strategy=single", "-e", "existing_software_take_over_device_plugin=true"]

    with DevicePluginWatch(cluster) as watch:
        cluster.playbook("nvidia-gpu-operator.yml", *allow)
    assert watch.samples > 0
    assert not watch.two, watch.two[:5]
    assert not watch.none, watch.none[:5]

    requests = cluster.requests()
    assert not [r for r in requests if r.get("subresource") == "eviction"]
    assert not pod_deletes(requests)
    assert gpu_pods(cluster, "train") == running
    for node in cluster.nodes:
        assert device_daemons(cluster, node) == [("nvidia-device-plugin", "gpu-feature-discovery"),
                                                 ("nvidia-device-plugin", "nvidia-device-plugin-daemonset")]
        assert {k: v for k, v in cluster.node(node)["status"]["allocatable"].items()
                if k.startswith("nvidia.com/")} == allocatable[node]
    release = [obj["metadata"]["name"] for kind in ("daemonsets", "configmaps") for obj in cluster.store.list(kind)
               if obj["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == "nvdp"
               and obj["metadata"].get("labels", {}).get("app.kubernetes.io/name") in ("nvidia-device-plugin", "gpu-feature-discovery")]
    assert release == []
    assert cluster.playbook("nvidia-gpu-operator.yml", *allow).changed == 0
