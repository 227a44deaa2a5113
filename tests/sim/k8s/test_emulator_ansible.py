"""Unmodified kubernetes.core modules, run by ansible-playbook, against the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

PLAYBOOK = r"""
- name: kubernetes.core against the API emulator
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/kubernetes.core.k8s:
      kubeconfig: "{{ kubeconfig }}"
  tasks:
    - name: GPU nodes by label
      kubernetes.core.k8s_info:
        kind: Node
        label_selectors: [nvidia.com/gpu.present=true]
      register: gpu_nodes

    - name: Label a node in check mode (server-side dry run)
      kubernetes.core.k8s:
        state: patched
        kind: Node
        name: gpu-node-1
        definition: {metadata: {labels: {nvidia.com/mig.config: all-1g.5gb}}}
      check_mode: true
      register: dry_label

    - name: Label a node
      kubernetes.core.k8s:
        state: patched
        kind: Node
        name: gpu-node-1
        definition: {metadata: {labels: {nvidia.com/mig.config: all-1g.5gb}}}
      register: label

    - name: Taint the node
      kubernetes.core.k8s_taint:
        kubeconfig: "{{ kubeconfig }}"
        name: gpu-node-1
        taints: [{key: gpuops.io/mig-reconfigure, value: all-1g.5gb, effect: NoSchedule}]
      register: taint

    - name: Taint the node again
      kubernetes.core.k8s_taint:
        kubeconfig: "{{ kubeconfig }}"
        name: gpu-node-1
        taints: [{key: gpuops.io/mig-reconfigure, value: all-1g.5gb, effect: NoSchedule}]
      register: taint_again

    - name: Apply a ConfigMap
      kubernetes.core.k8s:
        apply: true
        definition:
          apiVersion: v1
          kind: ConfigMap
          metadata: {name: plugin-config, namespace: default}
          data: {default: "version: v1"}
      register: applied

    - name: Apply it again
      kubernetes.core.k8s:
        apply: true
        definition:
          apiVersion: v1
          kind: ConfigMap
          metadata: {name: plugin-config, namespace: default}
          data: {default: "version: v1"}
      register: applied_again

    - name: Drain the node; the PodDisruptionBudget blocks web-0
      kubernetes.core.k8s_drain:
        kubeconfig: "{{ kubeconfig }}"
        name: gpu-node-1
        delete_options: {ignore_daemonsets: true}
      register: drain
      ignore_errors: true

    - name: Delete the ConfigMap
      kubernetes.core.k8s:
        state: absent
        kind: ConfigMap
        name: plugin-config
        namespace: default
      register: deleted

    - name: Report
      ansible.builtin.copy:
        dest: "{{ report }}"
        content: "{{ {'gpu_nodes': gpu_nodes.resources | map(attribute='metadata.name') | list,
                      'dry_label': dry_label.changed, 'label': label.changed,
                      'taint': taint.changed, 'taint_again': taint_again.changed,
                      'applied': applied.changed, 'applied_again': applied_again.changed,
                      'drain_failed': drain.failed, 'drain_msg': drain.msg | default(''),
                      'deleted': deleted.changed} | to_json }}"
        mode: "0600"
"""


def _owned_pod(store: Any, name: str, app: str) -> None:
    rs = store.create("replicasets", "default", {"metadata": {"name": app}, "spec": {"replicas": 1}})
    store.create("pods", "default", {
        "metadata": {"name": name, "labels": {"app": app},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": app,
                                          "uid": rs["metadata"]["uid"], "controller": True}]},
        "spec": {"nodeName": "gpu-node-1", "containers": [{"name": "main", "image": "busybox"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})


@pytest.mark.timeout(300)
def test_kubernetes_core_modules(emulator, kubeconfig, node_body, tmp_path):
    store = emulator.store
    store.create("nodes", None, node_body("gpu-node-1", {"nvidia.com/gpu.present": "true"}))
    store.create("nodes", None, node_body("cpu-node-1"))
    _owned_pod(store, "batch-0", "batch")
    _owned_pod(store, "web-0", "web")
    store.create("poddisruptionbudgets", "default", {"metadata": {"name": "web"},
                                                     "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}}})
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(PLAYBOOK)
    report = tmp_path / "report.json"
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp-local"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "tmp-remote"),
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    done = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", str(playbook),
                           "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"kubeconfig={kubeconfig}",
                           "-e", f"report={report}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=280,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(report.read_text())
    assert result["gpu_nodes"] == ["gpu-node-1"]
    assert result["dry_label"] is True and result["label"] is True
    assert (result["taint"], result["taint_again"]) == (True, False)
    assert (result["applied"], result["applied_again"]) == (True, False)
    assert result["deleted"] is True
    assert result["drain_failed"] is True
    assert "Cannot evict pod as it would violate the pod's disruption budget." in result["drain_msg"]

    node = store.get("nodes", None, "gpu-node-1")
    assert node["metadata"]["labels"]["nvidia.com/mig.config"] == "all-1g.5gb"
    assert node["spec"]["taints"] == [{"key": "gpuops.io/mig-reconfigure", "value": "all-1g.5gb", "effect": "NoSchedule"}]
    assert node["spec"]["unschedulable"] is True  # k8s_drain leaves the cordon on failure
    assert [p["metadata"]["name"] for p in store.pods_on_node("gpu-node-1")] == ["web-0"]
    pod_writes = [(r["verb"], r["subresource"], r["name"], r["status"]) for r in emulator.requests
                  if r["resource"] == "pods" and r["verb"] in ("create", "delete")]
    assert pod_writes == [("create", "eviction", "batch-0", 201), ("create", "eviction", "web-0", 429)]
    dry_runs = [r for r in emulator.requests if r["verb"] == "patch" and r["query"].get("dryRun") == "All"]
    assert len(dry_runs) == 1
