# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Wait for jobs before the eviction, and a validation pod before the release, end to end: a job
that ends while the rollout waits, one evicted past the timeout, a node whose validation pod fails
on a GPU its NVML reports lost (fenced, failed, the other node released), and a re-run once the GPU
is back."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gpuops_sim import nvml as sim_nvml

ROOT = Path(__file__).resolve().parents[3]

# A simulated cluster and four playbook runs.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TAINT = "gpuops.io/mig-reconfigure"
STATE = "nvidia.com/mig.config.state"
MESSAGE = "gpuops.io/mig-reconfigure.message"
# The second node's job never ends: the batch waits this long, then evicts it.
JOB_TIMEOUT = 12
# The first node's job, started once its node is fenced, ends well within JOB_TIMEOUT.
JOB_SECONDS = 2


def job_pod(name: str, node: str, command: list[str], owner: dict) -> dict:
    """A pod of the Job ``owner`` bound to ``node`` (the simulator has no Job controller)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "training"},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": owner["metadata"]["name"],
                                              "uid": owner["metadata"]["uid"], "controller": True}]},
            "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [
                {"name": "train", "image": "nvcr.io/nvidia/pytorch:24.05-py3", "command": command,
                 "resources": {"limits": {"nvidia.com/mig-1g.5gb": "1"}}}]}}


def taints(node: dict) -> list[str]:
    return [taint["key"] for taint in (node.get("spec") or {}).get("taints") or []]


def phase(cluster, name: str) -> str | None:
    pod = cluster.store.get("pods", "default", name)
    return None if pod is None else (pod.get("status") or {}).get("phase")


def wait_phase(cluster, name: str, wanted: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while phase(cluster, name) != wanted:
        assert time.monotonic() < deadline, "pod {0} is {1}, not {2}".format(name, phase(cluster, name), wanted)
        time.sleep(0.2)


def module_results(output: str, key: str) -> list[dict]:
    """The per-node results that carry ``key`` of the k8s_node_rollout runs, as -v prints them (YAML)."""
    found = []
    lines = output.splitlines()
    for number, line in enumerate(lines):
        if not line.endswith("=> ") and not line.endswith("=>"):
            continue
        block = []
        for following in lines[number + 1:]:
            if not following.startswith("    "):
                break
            block.append(following[4:])
        text = "\n".join(block)
        if key not in text:
            continue
        result = yaml.safe_load(text) or {}
        found.extend(node for node in (result.get("nodes") or {}).values() if key in node)
    return found


def test_jobs_are_waited_for_and_a_failed_validation_keeps_its_node_fenced(sim_cluster):
    cluster = sim_cluster(["a100:2:A100-40GB:2"])
    first, second = cluster.nodes
    common = ["-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_rollout_batch=100%", "-e", "mig_reconfigure_wait_timeout=120"]
    cluster.playbook("nvidia-gpu-operator.yml", *common, "-e", "mig_config_name=all-1g.5gb")
    owner = cluster.store.create("jobs", "default", {"apiVersion": "batch/v1", "kind": "Job",
                                                     "metadata": {"name": "train", "namespace": "default"},
                                                     "spec": {"template": {"spec": {}}}})
    cluster.store.create("pods", "default", job_pod("train-long", second, ["python", "train.py"], owner))
    wait_phase(cluster, "train-long", "Running")
    change = [*common, "-e", "mig_config_name=all-3g.20gb", "-e", "mig_wait_for_jobs_selector=app=training",
              "-e", "mig_reconfigure_wait_for_jobs_timeout={0}".format(JOB_TIMEOUT), "-e", "mig_validation=true", "-v"]

    # The rehearsal waits for nothing, creates no pod, and says what the run would wait for and run.
    cluster.clear_requests()
    rehearsal = cluster.playbook("mig-reconfigure.yml", *change, "--check")
    assert not [r for r in cluster.requests() if r["verb"] in ("create", "patch", "delete") and "dryRun" not in str(r["query"])]
    assert [result["would_wait_for_jobs"] for result in module_results(rehearsal.output, "would_wait_for_jobs")] == [[], ["default/train-long"]]
    assert sorted(result["would_validate"]["pod"] for result in module_results(rehearsal.output, "would_validate")) == [
        "default/gpuops-validate-" + first, "default/gpuops-validate-" + second]

    # The second node's GPUs are lost to containers (nvidia-smi cannot open them); the rollout runs.
    sim_nvml.add_fault(cluster.cluster.state_path(second), "nvmlDeviceGetHandleByUUID", "GPU_IS_LOST", count=0)
    cluster.clear_requests()
    log = cluster.directory / "change.log"
    with log.open("w") as output:
        process = subprocess.Popen(  # pylint: disable=consider-using-with
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(cluster.directory / "inventory.yml"),
             str(ROOT / "playbooks" / "mig-reconfigure.yml"), *change],
            cwd=ROOT, env=cluster.ansible_env(), stdout=output, stderr=subprocess.STDOUT)
        try:
            # A job that runs on the first node while the batch waits for the second node's, and ends on its own.
            deadline = time.monotonic() + 600
            while TAINT not in taints(cluster.node(first)):
                assert process.poll() is None and time.monotonic() < deadline, "the first node was never fenced"
                time.sleep(0.2)
            cluster.store.create("pods", "default", job_pod("train-short", first, ["sleep", str(JOB_SECONDS)], owner))
            # It ends on its own, exit code 0, while the batch still waits (the eviction comes after the wait;
            # a finished pod may then be evicted too, as kubectl drain does).
            wait_phase(cluster, "train-short", "Succeeded", timeout=JOB_TIMEOUT)
            ended = cluster.store.get("pods", "default", "train-short")["status"]["containerStatuses"][0]["state"]
            assert ended["terminated"]["exitCode"] == 0
            rc = process.wait(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
    run_output = log.read_text()
    assert rc != 0, run_output[-3000:]
    requests = cluster.requests()
    evicted = {r["name"] for r in requests if r.get("subresource") == "eviction" and r["status"] < 300}
    assert "train-long" in evicted
    fenced = module_results(run_output, "waited_for_jobs")
    assert sorted(job for result in fenced for job in result["waited_for_jobs"]) == ["default/train-long", "default/train-short"]
    assert [result["jobs_left"] for result in fenced if result.get("jobs_left")] == [["default/train-long"]]
    # One validation pod per node, created in the namespace and deleted afterwards, failed or not.
    created = [r for r in requests if r["resource"] == "pods" and r["verb"] == "create" and not r.get("subresource")]
    assert len(created) == 2 and {r["namespace"] for r in created} == {"default"}
    deleted = {r["name"] for r in requests if r["resource"] == "pods" and r["verb"] == "delete" and r["status"] < 300}
    assert deleted == {"gpuops-validate-" + first, "gpuops-validate-" + second}
    assert not [pod for pod in cluster.pods("default") if pod["metadata"]["name"].startswith("gpuops-validate-")]
    released = cluster.node(first)
    assert released["metadata"]["labels"][STATE] == "success" and TAINT not in taints(released)
    failed = cluster.node(second)
    assert failed["metadata"]["labels"][STATE] == "failed"
    assert TAINT in taints(failed)
    message = failed["metadata"]["annotations"][MESSAGE]
    assert "gpuops-validate-" + second in message and "exited 15" in message and "GPU is lost" in message

    # The GPU is back: the re-run takes the failed node through again and releases it.
    sim_nvml.clear_faults(cluster.cluster.state_path(second))
    cluster.playbook("mig-reconfigure.yml", *change)
    node = cluster.node(second)
    assert node["metadata"]["labels"][STATE] == "success" and not node["spec"].get("taints")
    assert cluster.layout(second) == [["3g.20gb", "3g.20gb"]] * 2
