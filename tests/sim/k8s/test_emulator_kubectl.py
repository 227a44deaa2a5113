"""The real kubectl against the emulator (discovery, Table output, label/taint/cordon, apply, drain)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (the emulator's kubectl checks need the real client)")


@pytest.fixture
def kubectl(kubeconfig: str, tmp_path: Path) -> Any:
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [KUBECTL, "--kubeconfig", kubeconfig, "--cache-dir", str(tmp_path / "kube-cache"), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result
    return run


@pytest.fixture
def seeded(emulator: Any, node_body: Any, pod_body: Any) -> Any:
    store = emulator.store
    node = node_body("gpu-node-1", {"nvidia.com/gpu.present": "true", "node-role.kubernetes.io/worker": ""})
    node["status"]["nodeInfo"] = {"kubeletVersion": "v1.32.4"}
    node["status"]["addresses"] = [{"type": "InternalIP", "address": "10.0.0.11"}]
    store.create("nodes", None, node)
    store.create("nodes", None, node_body("cpu-node-1"))
    pod = pod_body("train-0", node="gpu-node-1", labels={"app": "train"})
    pod["status"]["podIP"] = "10.1.0.5"
    owner = store.create("replicasets", "default", {"metadata": {"name": "train"}, "spec": {"replicas": 1}})
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "train",
                                           "uid": owner["metadata"]["uid"], "controller": True}]
    store.create("pods", "default", pod)
    return emulator


def test_get_nodes_table(kubectl, seeded):
    lines = kubectl("get", "nodes").stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert lines[2].split()[:3] == ["gpu-node-1", "Ready", "worker"] and lines[2].split()[-1] == "v1.32.4"
    assert lines[1].split()[:3] == ["cpu-node-1", "Ready", "<none>"]


def test_get_nodes_table_follows_the_pages(kubectl, seeded):
    for index in range(2, 6):
        seeded.store.create("nodes", None, {"metadata": {"name": "cpu-node-%d" % index}})
    lines = kubectl("get", "nodes", "--chunk-size=2", "--no-headers").stdout.splitlines()
    assert sorted(line.split()[0] for line in lines) == ["cpu-node-%d" % i for i in range(1, 6)] + ["gpu-node-1"]


def test_get_pods_all_namespaces_wide(kubectl, seeded):
    lines = kubectl("get", "pods", "-A", "-o", "wide").stdout.splitlines()
    assert lines[0].split()[:5] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS"]
    row = lines[1].split()
    assert row[:4] == ["default", "train-0", "1/1", "Running"]
    assert "10.1.0.5" in row and "gpu-node-1" in row


def test_get_node_yaml(kubectl, seeded):
    node = yaml.safe_load(kubectl("get", "node", "gpu-node-1", "-o", "yaml").stdout)
    assert node["kind"] == "Node" and node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert node["metadata"]["uid"] and node["metadata"]["resourceVersion"]


def test_label_taint_cordon_uncordon(kubectl, seeded):
    store = seeded.store
    kubectl("label", "node", "gpu-node-1", "nvidia.com/mig.config=all-1g.5gb")
    kubectl("label", "node", "gpu-node-1", "--overwrite", "nvidia.com/mig.config=all-2g.10gb")
    kubectl("taint", "node", "gpu-node-1", "gpuops.io/mig-reconfigure=all-2g.10gb:NoSchedule")
    kubectl("cordon", "gpu-node-1")
    node = store.get("nodes", None, "gpu-node-1")
    assert node["metadata"]["labels"]["nvidia.com/mig.config"] == "all-2g.10gb"
    assert node["spec"]["taints"] == [{"key": "gpuops.io/mig-reconfigure", "value": "all-2g.10gb", "effect": "NoSchedule"}]
    assert node["spec"]["unschedulable"] is True
    assert "SchedulingDisabled" in kubectl("get", "node", "gpu-node-1").stdout
    kubectl("taint", "node", "gpu-node-1", "gpuops.io/mig-reconfigure-")
    kubectl("uncordon", "gpu-node-1")
    node = store.get("nodes", None, "gpu-node-1")
    assert not node["spec"].get("taints") and not node["spec"].get("unschedulable")


def test_apply_creates_then_configures(kubectl, emulator, tmp_path):
    manifest = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "plugin", "namespace": "default"},
                "spec": {"selector": {"matchLabels": {"app": "plugin"}},
                         "template": {"metadata": {"labels": {"app": "plugin"}},
                                      "spec": {"containers": [{"name": "plugin", "image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.0",
                                                               "env": [{"name": "MIG_STRATEGY", "value": "single"}]}]}}}}
    path = tmp_path / "ds.yaml"
    path.write_text(yaml.safe_dump(manifest))
    assert "created" in kubectl("apply", "--validate=false", "-f", str(path)).stdout
    manifest["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "mixed"
    path.write_text(yaml.safe_dump(manifest))
    assert "configured" in kubectl("apply", "--validate=false", "-f", str(path)).stdout
    stored = emulator.store.get("daemonsets", "default", "plugin")
    assert stored["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "MIG_STRATEGY", "value": "mixed"}]
    assert stored["metadata"]["generation"] == 2
    assert "unchanged" in kubectl("apply", "--validate=false", "-f", str(path)).stdout


def test_drain_evicts_through_the_eviction_api(kubectl, seeded):
    result = kubectl("drain", "gpu-node-1", "--ignore-daemonsets", "--timeout=20s")
    assert "evicted" in result.stdout
    assert seeded.store.pods_on_node("gpu-node-1") == []
    verbs = [(r["verb"], r["subresource"]) for r in seeded.requests if r["resource"] == "pods" and r["name"] == "train-0"]
    assert ("create", "eviction") in verbs and ("delete", None) not in verbs


def test_unknown_resource_type(kubectl, seeded):
    result = kubectl("get", "widgets", check=False)
    assert result.returncode != 0 and "doesn't have a resource type" in result.stderr
