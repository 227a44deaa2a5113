# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The four k8s modules run as real Ansible processes against the API emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
GPU = {"nvidia.com/gpu": "1"}

pytestmark = pytest.mark.slow


def run(args: list[str], tmp_path: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"),
    )
    env.update(extra_env)
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)


def test_adhoc_label_with_environment_kubeconfig_and_secret_never_shown(kube, tmp_path):
    kube.node(labels={"old": "x"})
    args = {"name": "gpu-node-1", "labels": {"nvidia.com/mig.config.state": "pending", "old": None},
            "annotations": {"gpuops.io/mig-reconfigure.message": "started"}, "api_key": "s3cr3t-t0ken"}
    command = [str(Path(sys.executable).parent / "ansible"), "localhost", "-v", "-m", "gpuops.nvidia.k8s_node_label",
               "-a", json.dumps(args), "-e", "ansible_python_interpreter=" + sys.executable]
    kube.clear_requests()
    done = run(command, tmp_path, K8S_AUTH_KUBECONFIG=str(kube.kubeconfig))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CHANGED" in done.stdout
    assert "s3cr3t-t0ken" not in done.stdout + done.stderr
    metadata = kube.read_node()["metadata"]
    assert metadata["labels"] == {"nvidia.com/mig.config.state": "pending"}
    assert metadata["annotations"]["gpuops.io/mig-reconfigure.message"] == "started"
    [patch] = kube.requests(verb="patch", resource="nodes", subresource=None)
    assert patch["content_type"].startswith("application/merge-patch+json")


PLAYBOOK = """
- name: Node choreography through the k8s action group
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/gpuops.nvidia.k8s:
      kubeconfig: "{{ kubeconfig }}"
  tasks:
    - name: Fence in check mode
      gpuops.nvidia.k8s_node_taint:
        name: gpu-node-1
        taints: [{key: gpuops.io/mig-reconfigure, value: all-1g.5gb, effect: NoSchedule}]
        cordon: true
      check_mode: true
      diff: true
      register: fence_check

    - name: Fence and mark the node pending, in one write
      gpuops.nvidia.k8s_node_taint:
        name: gpu-node-1
        taints: [{key: gpuops.io/mig-reconfigure, value: all-1g.5gb, effect: NoSchedule}]
        cordon: true
        labels: {nvidia.com/mig.config.state: pending}
      register: fence

    - name: Fence again
      gpuops.nvidia.k8s_node_taint:
        name: gpu-node-1
        taints: [{key: gpuops.io/mig-reconfigure, value: all-1g.5gb, effect: NoSchedule}]
        cordon: true
        labels: {nvidia.com/mig.config.state: pending}
      register: fence_again

    - name: Pause the device plugin
      gpuops.nvidia.k8s_node_label:
        name: gpu-node-1
        labels:
          nvidia.com/gpu.deploy.device-plugin: paused-for-mig-change
      diff: true
      register: pause

    - name: Evacuate in check mode
      gpuops.nvidia.k8s_node_evacuate:
        name: gpu-node-1
        scope: gpu
      check_mode: true
      register: evacuate_check

    - name: Evacuate
      gpuops.nvidia.k8s_node_evacuate:
        name: gpu-node-1
        scope: gpu
        poll_interval: 0.1
      diff: true
      register: evacuate

    - name: Unpause
      gpuops.nvidia.k8s_node_label:
        name: gpu-node-1
        labels:
          nvidia.com/gpu.deploy.device-plugin: "true"

    - name: Wait for the labels and readiness
      gpuops.nvidia.k8s_node_wait:
        name: gpu-node-1
        labels:
          nvidia.com/gpu.deploy.device-plugin: "true"
        ready: true
        unschedulable: true
        jmespath:
          - expression: "spec.taints[?key=='gpuops.io/mig-reconfigure'] | [0].value"
            equals: all-1g.5gb
        timeout: 30
      register: waited

    - name: Unfence and mark the node done, in one write
      gpuops.nvidia.k8s_node_taint:
        name: gpu-node-1
        state: absent
        taints: [{key: gpuops.io/mig-reconfigure}]
        cordon: false
        labels: {nvidia.com/mig.config.state: success}
      register: unfence

    - name: Save what the modules returned
      ansible.builtin.copy:
        dest: "{{ results_file }}"
        content: "{{ {'fence_check': fence_check, 'fence': fence, 'fence_again': fence_again, 'pause': pause,
                     'evacuate_check': evacuate_check, 'evacuate': evacuate, 'waited': waited, 'unfence': unfence} | to_json }}"
        mode: "0600"
"""


def test_playbook_runs_all_four_modules_through_the_action_group(kube, tmp_path):
    kube.node(labels={"nvidia.com/gpu.deploy.device-plugin": "true"})
    kube.pod("train-0", gpus=GPU)
    kube.pod("web")
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK)
    results_file = tmp_path / "results.json"
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook),
               "-e", "ansible_python_interpreter=" + sys.executable, "-e", "kubeconfig=" + str(kube.kubeconfig),
               "-e", "results_file=" + str(results_file)]
    kube.clear_requests()
    done = run(command, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(results_file.read_text())

    assert results["fence_check"]["changed"] is True
    assert results["fence_check"]["diff"]["before"] == {"taints": [], "unschedulable": False}
    assert results["fence_check"]["diff"]["after"]["unschedulable"] is True
    assert results["fence"]["changed"] is True and results["fence_again"]["changed"] is False
    assert results["fence"]["previous"]["labels"] == {"nvidia.com/mig.config.state": None}
    assert results["fence"]["labels"] == {"nvidia.com/mig.config.state": "pending"}
    assert results["pause"]["previous"]["labels"] == {"nvidia.com/gpu.deploy.device-plugin": "true"}
    assert [e["name"] for e in results["evacuate_check"]["evicted"]] == ["train-0"]
    assert [e["name"] for e in results["evacuate"]["evicted"]] == ["train-0"]
    assert results["evacuate"]["diff"] == {"before": ["default/train-0", "default/web"], "after": ["default/web"]}
    assert set(results["waited"]["matched"]) >= {"ready", "unschedulable", "labels[nvidia.com/gpu.deploy.device-plugin]"}
    assert results["unfence"]["changed"] is True

    node = kube.read_node()
    assert not node["spec"].get("taints") and not node["spec"].get("unschedulable")
    assert node["metadata"]["labels"]["nvidia.com/mig.config.state"] == "success"
    assert kube.pod_names() == ["default/web"]
    assert len(kube.requests(verb="create", subresource="eviction")) == 1
    assert kube.requests(verb="delete", resource="pods") == []
    # Four writes: fence (with its label), pause, unpause, unfence (with its label). Check mode and the
    # idempotent rerun wrote nothing.
    assert len(kube.requests(verb="patch", resource="nodes", subresource=None)) == 4


def test_evacuate_module_fails_on_a_pdb_and_reports_the_blocked_pod(kube, tmp_path):
    kube.node(unschedulable=True)
    kube.pod("serve-0", gpus=GPU, labels={"app": "serve"})
    kube.pdb("serve-pdb", {"app": "serve"})
    args = {"name": "gpu-node-1", "timeout": 1, "kubeconfig": str(kube.kubeconfig)}
    command = [str(Path(sys.executable).parent / "ansible"), "localhost", "-m", "gpuops.nvidia.k8s_node_evacuate",
               "-a", json.dumps(args), "-e", "ansible_python_interpreter=" + sys.executable]
    done = run(command, tmp_path, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    assert done.returncode != 0
    result = json.loads(done.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert result["failed"] is True
    assert "blocked by PodDisruptionBudget serve-pdb" in result["msg"]
    assert [(b["name"], b["pdbs"]) for b in result["blocked"]] == [("serve-0", ["serve-pdb"])]
    assert kube.pod_names() == ["default/serve-0"]
    assert kube.read_node()["spec"]["unschedulable"] is True
