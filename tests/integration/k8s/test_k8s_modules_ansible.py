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


def run_playbook(text: str, kube, tmp_path: Path) -> dict:
    """Run a playbook that saves what its modules returned to results_file; return that."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(text)
    results_file = tmp_path / "results.json"
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook),
               "-e", "ansible_python_interpreter=" + sys.executable, "-e", "kubeconfig=" + str(kube.kubeconfig),
               "-e", "results_file=" + str(results_file)]
    kube.clear_requests()
    done = run(command, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(results_file.read_text())


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
    results = run_playbook(PLAYBOOK, kube, tmp_path)

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


BATCH_PLAYBOOK = """
- name: One run per step for a batch of nodes, each node with its own arguments and its own outcome
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/gpuops.nvidia.k8s:
      kubeconfig: "{{ kubeconfig }}"
  tasks:
    - name: Fence the batch, one node of which is not in the cluster
      gpuops.nvidia.k8s_node_taint:
        taints: [{key: gpuops.io/mig-reconfigure, value: resources, effect: NoSchedule}]
        nodes:
          - {name: gpu-node-1, labels: {nvidia.com/mig.config: all-1g.5gb}}
          - {name: gpu-node-2, labels: {nvidia.com/mig.config: all-7g.40gb}, cordon: true}
          - {name: gpu-node-3}
          - {name: gpu-node-9}
      register: fence
      failed_when: false

    - name: Evacuate the batch; a budget blocks the pod of node 2
      gpuops.nvidia.k8s_node_evacuate:
        scope: gpu
        timeout: 1
        poll_interval: 0.1
        nodes:
          - {name: gpu-node-1}
          - {name: gpu-node-2}
          - name: gpu-node-3
            scope: devices
            device_uuids: [GPU-aaaa]
            # What gpuops.nvidia.gpu_pod_devices returns on the node.
            pod_devices: {available: true, reason: null, pods: [{namespace: default, name: other-3, devices: [GPU-bbbb], gpus: [GPU-bbbb]}]}
      register: evacuate
      failed_when: false

    - name: Switch a client off on the batch; its pod on node 3 is not removed
      gpuops.nvidia.k8s_node_label:
        labels: {nvidia.com/gpu.deploy.device-plugin: paused-for-mig-change}
        wait_for_unmatched_pods: true
        wait_timeout: 1
        nodes:
          - {name: gpu-node-1}
          - {name: gpu-node-3}
      register: pause
      failed_when: false

    - name: Wait for the batch; node 3 never gets its label
      gpuops.nvidia.k8s_node_wait:
        labels: {nvidia.com/gpu.deploy.device-plugin: paused-for-mig-change}
        timeout: 2
        poll_interval: 0.2
        nodes:
          - {name: gpu-node-1, ready: true}
          - {name: gpu-node-3, labels: {never: "true"}}
      register: waited
      failed_when: false

    - name: Save what the modules returned
      ansible.builtin.copy:
        dest: "{{ results_file }}"
        content: "{{ {'fence': fence, 'evacuate': evacuate, 'pause': pause, 'waited': waited} | to_json }}"
        mode: "0600"
"""


def test_batch_runs_each_node_with_its_own_arguments_and_reports_each_nodes_failure(kube, tmp_path):
    for name in ("gpu-node-1", "gpu-node-2", "gpu-node-3"):
        kube.node(name, labels={"kubernetes.io/hostname": name, "nvidia.com/gpu.deploy.device-plugin": "true"})
    kube.pod("train-1", node="gpu-node-1", gpus=GPU)
    kube.pod("serve-2", node="gpu-node-2", gpus=GPU, labels={"app": "serve"})
    kube.pdb("serve-pdb", {"app": "serve"})
    kube.pod("other-3", node="gpu-node-3", gpus=GPU)
    kube.pod("plugin-3", node="gpu-node-3", owner_kind="DaemonSet",
             node_selector={"nvidia.com/gpu.deploy.device-plugin": "true"})
    results = run_playbook(BATCH_PLAYBOOK, kube, tmp_path)

    fence = results["fence"]
    # failed_when: false leaves failing to the per-host check; the run itself said it failed.
    assert fence["failed"] is False and fence["failed_nodes"] == ["gpu-node-9"]
    assert "gpu-node-9" in fence["msg"] and fence["nodes"]["gpu-node-9"]["failed"] is True
    assert fence["nodes"]["gpu-node-2"]["unschedulable"] is True and fence["nodes"]["gpu-node-1"]["unschedulable"] is False
    for name, config in (("gpu-node-1", "all-1g.5gb"), ("gpu-node-2", "all-7g.40gb")):
        node = kube.read_node(name)
        assert node["metadata"]["labels"]["nvidia.com/mig.config"] == config
        assert node["spec"]["taints"] == [{"key": "gpuops.io/mig-reconfigure", "value": "resources", "effect": "NoSchedule"}]
    assert "nvidia.com/mig.config" not in kube.read_node("gpu-node-3")["metadata"]["labels"]

    evacuate = results["evacuate"]
    assert evacuate["failed_nodes"] == ["gpu-node-2"]
    assert [e["name"] for e in evacuate["nodes"]["gpu-node-1"]["evicted"]] == ["train-1"]
    assert "blocked by PodDisruptionBudget serve-pdb" in evacuate["nodes"]["gpu-node-2"]["msg"]
    # Node 3's own scope: only pods bound to GPU-aaaa, and other-3 is bound to another GPU.
    assert evacuate["nodes"]["gpu-node-3"]["evicted"] == []
    assert kube.pod_names("gpu-node-1") == [] and kube.pod_names("gpu-node-2") == ["default/serve-2"]
    assert kube.pod_names("gpu-node-3") == ["default/other-3", "default/plugin-3"]

    pause = results["pause"]
    assert pause["failed_nodes"] == ["gpu-node-3"]
    assert pause["nodes"]["gpu-node-1"]["waited_for"] == []
    assert pause["nodes"]["gpu-node-3"]["pods_left"] == ["default/plugin-3"]

    waited = results["waited"]
    assert waited["failed_nodes"] == ["gpu-node-3"]
    assert set(waited["nodes"]["gpu-node-1"]["matched"]) == {"ready", "labels[nvidia.com/gpu.deploy.device-plugin]"}
    assert "labels[never]" in waited["nodes"]["gpu-node-3"]["msg"]
    # One watch of the nodes served the whole batch.
    assert len(kube.requests(verb="watch", resource="nodes")) <= 2


CORDON_RECORD_PLAYBOOK = """
- name: Fence and release nodes, keeping each node's own cordon
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/gpuops.nvidia.k8s:
      kubeconfig: "{{ kubeconfig }}"
  vars:
    record: gpuops.io/mig-reconfigure.cordoned-before
    fence: {taints: [{key: gpuops.io/mig-reconfigure, effect: NoSchedule}], cordon: true, cordon_record: "{{ record }}"}
    release: {state: absent, taints: [{key: gpuops.io/mig-reconfigure}], cordon: false, cordon_record: "{{ record }}"}
  tasks:
    - name: A bad record key is refused, naming the option
      gpuops.nvidia.k8s_node_taint:
        name: gpu-node-1
        cordon: true
        cordon_record: "not a key!"
      register: bad
      failed_when: false

    - name: Fence both nodes
      gpuops.nvidia.k8s_node_taint:
        nodes: "{{ [fence | combine({'name': 'gpu-node-1'}), fence | combine({'name': 'gpu-node-2'})] }}"
      register: fenced

    - name: Fence again, as a resumed run does
      gpuops.nvidia.k8s_node_taint:
        nodes: "{{ [fence | combine({'name': 'gpu-node-1'}), fence | combine({'name': 'gpu-node-2'})] }}"
      register: fenced_again

    - name: Release both nodes in check mode
      gpuops.nvidia.k8s_node_taint:
        nodes: "{{ [release | combine({'name': 'gpu-node-1'}), release | combine({'name': 'gpu-node-2'})] }}"
      check_mode: true
      register: release_check

    - name: Release both nodes
      gpuops.nvidia.k8s_node_taint:
        nodes: "{{ [release | combine({'name': 'gpu-node-1'}), release | combine({'name': 'gpu-node-2'})] }}"
      register: released

    - name: Save what the modules returned
      ansible.builtin.copy:
        dest: "{{ results_file }}"
        content: "{{ {'bad': bad, 'fenced': fenced, 'fenced_again': fenced_again, 'release_check': release_check,
                     'released': released} | to_json }}"
        mode: "0600"
"""


def test_cordon_record_keeps_a_cordon_someone_else_set(kube, tmp_path):
    kube.node("gpu-node-1", unschedulable=True, taints=[{"key": "maintenance", "effect": "NoSchedule"}])
    kube.node("gpu-node-2")
    results = run_playbook(CORDON_RECORD_PLAYBOOK, kube, tmp_path)
    record = "gpuops.io/mig-reconfigure.cordoned-before"

    # failed_when: false keeps the run going; the message names the option and nothing was written.
    assert "cordon_record" in results["bad"]["msg"] and results["bad"]["changed"] is False
    fenced = results["fenced"]["nodes"]
    assert fenced["gpu-node-1"]["annotations"] == {record: "true"} and fenced["gpu-node-1"]["previous"]["unschedulable"] is True
    assert fenced["gpu-node-2"]["annotations"] == {record: "false"} and fenced["gpu-node-2"]["unschedulable"] is True
    assert results["fenced_again"]["changed"] is False
    check = results["release_check"]["nodes"]
    assert check["gpu-node-1"]["unschedulable"] is True and check["gpu-node-2"]["unschedulable"] is False
    assert results["released"]["changed"] is True

    operator = kube.read_node("gpu-node-1")
    # Someone else's cordon and taint stay; only the rollout's taint and record go.
    assert operator["spec"]["unschedulable"] is True
    assert operator["spec"]["taints"] == [{"key": "maintenance", "effect": "NoSchedule"}]
    assert record not in (operator["metadata"].get("annotations") or {})
    ours = kube.read_node("gpu-node-2")
    assert not ours["spec"].get("unschedulable") and not ours["spec"].get("taints")
    assert record not in (ours["metadata"].get("annotations") or {})
