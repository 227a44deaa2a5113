# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rolling MIG reconfigure end to end: real playbooks, simulated NVML and Kubernetes."""

from __future__ import annotations

import re
import time

import pytest

# Each test installs a simulated cluster and runs real playbooks on it: minutes, not seconds.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TAINT = "gpuops.io/mig-reconfigure"
STATE = "nvidia.com/mig.config.state"


def one_gpu_differs(first: str, rest: str, gpus: int) -> dict:
    """A named config where GPU 0 runs ``first`` and the others ``rest`` (7 x 1g.5gb style)."""
    def entry(devices, layout):
        name, count = layout.split("*")
        return {"devices": devices, "mig-enabled": True, "mig-devices": {name: int(count)}}
    return {"mig_configs": {
        "before": [entry("all", rest)],
        "after": [entry([0], first), entry(list(range(1, gpus)), rest)],
    }}


def taints(node: dict) -> list[str]:
    return [t["key"] for t in node.get("spec", {}).get("taints") or []]


def evictions(requests: list[dict]) -> list[dict]:
    return [r for r in requests if r.get("subresource") == "eviction"]


def mutations(requests: list[dict]) -> list[dict]:
    """Writes that change the cluster (server-side dry runs of check mode change nothing)."""
    return [r for r in requests if r["verb"] in ("create", "update", "patch", "delete", "deletecollection")
            and "dryRun" not in str(r.get("query") or "")]


def node_or_pod_writes(requests: list[dict]) -> list[dict]:
    """Writes to nodes and pods (kubernetes.core's no-op patches of unchanged objects are not among them)."""
    return [r for r in mutations(requests) if r.get("resource") in ("nodes", "pods")]


def pod_deletes(requests: list[dict]) -> list[dict]:
    return [r for r in requests if r.get("resource") == "pods" and r.get("verb") in ("delete", "deletecollection")]


def gpu_pods(cluster, app: str) -> dict[str, str]:
    """name → node of the Running pods of a workload."""
    return {p["metadata"]["name"]: p["spec"].get("nodeName") for p in cluster.pods("default")
            if p["metadata"].get("labels", {}).get("app") == app and p.get("status", {}).get("phase") == "Running"}


def wait_running(cluster, app: str, count: int, timeout: float = 120.0) -> dict[str, str]:
    """The simulated scheduler and kubelets start pods asynchronously: wait until ``count`` run."""
    deadline = time.monotonic() + timeout
    while True:
        running = gpu_pods(cluster, app)
        if len(running) >= count or time.monotonic() > deadline:
            return running
        time.sleep(0.5)


@pytest.mark.fleet
def test_fleet_change_of_one_gpu_per_node_moves_only_the_pods_on_it(sim_cluster):
    cluster = sim_cluster(["a100:20:A100-40GB:8"])
    gpus = 8
    config = cluster.write_vars("configs.yml", one_gpu_differs("3g.20gb*2", "1g.5gb*7", gpus))
    common = ["-e", "@%s" % config, "-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_rollout_batch=25%"]

    cluster.playbook("nvidia-gpu-operator.yml", *common, "-e", "mig_config_name=before")
    for node in cluster.nodes:
        assert cluster.layout(node) == [["1g.5gb"] * 7] * gpus
        assert cluster.node(node)["status"]["allocatable"]["nvidia.com/mig-1g.5gb"] == str(7 * gpus)

    # Two pods per node on GPU 0's devices would be too few to tell apart; fill every node.
    cluster.workload(name="infer", resource="nvidia.com/mig-1g.5gb", count=20 * 8, pdb_max_unavailable="25%")
    running = wait_running(cluster, "infer", 160)
    assert len(running) == 160
    # Which pod holds which device: what each node's kubelet lists on its PodResources socket.
    on_gpu0 = {name for node in cluster.nodes for name, ids in cluster.held(node).items()
               if set(ids) & set(_gpu_mig_uuids(cluster, node, 0))}
    assert 0 < len(on_gpu0) < len(running)
    cluster.clear_requests()

    run = cluster.playbook("nvidia-gpu-operator.yml", *common, "-e", "mig_config_name=after")
    assert "MIG ROLLOUT SUMMARY" in run.output
    requests = cluster.requests()
    evicted = {r["name"] for r in evictions(requests) if r["status"] < 300}
    assert evicted == on_gpu0
    assert not pod_deletes(requests), "pods are only ever removed through the Eviction API"
    for node in cluster.nodes:
        assert cluster.layout(node)[0] == ["3g.20gb", "3g.20gb"]
        assert cluster.layout(node)[1:] == [["1g.5gb"] * 7] * (gpus - 1)
        obj = cluster.node(node)
        assert TAINT not in taints(obj)
        assert obj["metadata"]["labels"][STATE] == "success"
        assert obj["metadata"]["labels"]["nvidia.com/mig.config"] == "after"
        assert obj["status"]["allocatable"]["nvidia.com/mig-1g.5gb"] == str(7 * (gpus - 1))
        assert obj["status"]["allocatable"]["nvidia.com/mig-3g.20gb"] == "2"

    cluster.clear_requests()
    again = cluster.playbook("nvidia-gpu-operator.yml", *common, "-e", "mig_config_name=after")
    assert again.changed == 0
    requests = cluster.requests()
    assert not evictions(requests)
    assert not node_or_pod_writes(requests)


def _gpu_mig_uuids(cluster, node, index):
    gpu = cluster.nvml(node)["gpus"][index]
    return [gpu["uuid"]] + [ci["device_uuid"] for gi in gpu["gpu_instances"] for ci in gi["compute_instances"]]


@pytest.fixture
def small(sim_cluster):
    """Three 2-GPU A100 nodes installed with all-1g.5gb under the mixed strategy."""
    cluster = sim_cluster(["a100:3:A100-40GB:2"])
    cluster.common = ["-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_rollout_batch=1", "-e", "mig_reconfigure_wait_timeout=120"]
    cluster.playbook("nvidia-gpu-operator.yml", *cluster.common, "-e", "mig_config_name=all-1g.5gb", "-e", "mig_rollout_batch=100%")
    return cluster


def test_bad_settings_are_refused_before_any_node_changes(sim_cluster):
    cluster = sim_cluster(["a100:2:A100-40GB:2"])
    cases = [
        (["-e", "k8s_gpu_mig_strategy=hybrid", "-e", "mig_config_name=all-1g.5gb"], "k8s_gpu_mig_strategy"),
        (["-e", "k8s_gpu_mig_strategy=mixed", "-e", "device_plugin_time_slicing_replicas=0", "-e", "mig_config_name=all-1g.5gb"],
         "device_plugin_time_slicing_replicas"),
        (["-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_config_name=all-9g.99gb"], "all-9g.99gb"),
        # A mixed layout cannot be advertised under the single strategy (GPU Operator issues #479, #460).
        (["-e", "k8s_gpu_mig_strategy=single", "-e", "mig_config_name=all-balanced"], "single"),
        # A count the model cannot hold: 1g.10gb fits 4 times on an A100 40GB.
        (["-e", "k8s_gpu_mig_strategy=mixed", "-e", '{"mig_configs": {"too-many": [{"devices": "all", "mig-enabled": true, '
          '"mig-devices": {"1g.10gb": 5}}]}}', "-e", "mig_config_name=too-many"], "1g.10gb"),
    ]
    for extra, named in cases:
        cluster.clear_requests()
        run = cluster.playbook("nvidia-gpu-operator.yml", *extra, check=False)
        assert run.rc != 0, extra
        assert named in run.output, (named, run.output[-3000:])
        assert "Install the NVIDIA driver" not in run.output, "it failed in the first play"
        assert not mutations(cluster.requests()), extra
        assert all(not gpu["mig"]["current"] for n in cluster.nodes for gpu in cluster.nvml(n)["gpus"])


def test_check_mode_rerun_api_faults_and_strategy_switch(small):
    # --check --diff prints the plan and changes nothing.
    small.clear_requests()
    run = small.playbook("mig-reconfigure.yml", *small.common, "-e", "mig_config_name=all-3g.20gb", "--check", "--diff")
    assert "3g.20gb" in run.output
    assert all(small.layout(n) == [["1g.5gb"] * 7] * 2 for n in small.nodes)
    assert not mutations(small.requests())
    # A re-run of what is in place changes nothing and touches no pod.
    small.clear_requests()
    rerun = small.playbook("nvidia-gpu-operator.yml", *small.common, "-e", "mig_config_name=all-1g.5gb")
    assert rerun.changed == 0
    assert not node_or_pod_writes(small.requests())
    # No node needs anything, so the rollout and verifying plays have no hosts, and say so quietly; so
    # have the two plays that take over another device plugin (none here).
    assert rerun.output.count("skipping: no hosts matched") == 4
    assert "Could not match supplied host pattern" not in rerun.output
    # API errors while labelling and tainting are retried.
    small.add_fault(verb="patch", resource="nodes", status=500, count=2)
    small.add_fault(verb="patch", resource="nodes", status=409, count=1)
    small.playbook("mig-reconfigure.yml", *small.common, "-e", "mig_config_name=all-3g.20gb")
    for node_name in small.nodes:
        assert small.layout(node_name) == [["3g.20gb", "3g.20gb"]] * 2
        assert small.node(node_name)["metadata"]["labels"][STATE] == "success"
    # Switching the strategy re-advertises the same layout under the new resource names.
    small.playbook("mig-reconfigure.yml", "-e", "k8s_gpu_mig_strategy=single", "-e", "mig_rollout_batch=1",
                   "-e", "mig_config_name=all-3g.20gb", "-e", "mig_reconfigure_wait_timeout=120")
    for node_name in small.nodes:
        node = small.node(node_name)
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
        assert node["metadata"]["labels"]["nvidia.com/mig.strategy"] == "single"
        assert TAINT not in taints(node)


def test_strategy_single_to_mixed_then_time_slicing_roll_node_by_node(sim_cluster):
    """Only the advertised resources change: each node is tainted, its GPU clients restarted, the
    new resources waited for, and untainted; pods leave only through the Eviction API."""
    cluster = sim_cluster(["a100:2:A100-40GB:1"])
    common = ["-e", "mig_config_name=all-1g.5gb", "-e", "mig_rollout_batch=1", "-e", "mig_reconfigure_wait_timeout=120"]
    cluster.playbook("nvidia-gpu-operator.yml", *common, "-e", "k8s_gpu_mig_strategy=single", "-e", "mig_rollout_batch=100%")
    for node in cluster.nodes:
        assert cluster.node(node)["status"]["allocatable"]["nvidia.com/gpu"] == "7"
    # Pods asking for nvidia.com/gpu cannot run under mixed: they are evicted and stay Pending.
    cluster.workload(name="shared", resource="nvidia.com/gpu", count=2)
    running = wait_running(cluster, "shared", 2)
    assert len(running) == 2

    cluster.clear_requests()
    switched = cluster.playbook("mig-reconfigure.yml", *common, "-e", "k8s_gpu_mig_strategy=mixed")
    # Node by node: the first node is done before the second batch starts.
    first_done = switched.output.index("MIG rollout: %s success" % cluster.nodes[0])
    assert first_done < switched.output.index("MIG rollout: batch 2 of 2") < switched.output.index(
        "MIG rollout: %s success" % cluster.nodes[1])
    for node in cluster.nodes:
        obj = cluster.node(node)
        assert obj["status"]["allocatable"]["nvidia.com/mig-1g.5gb"] == "7"
        assert obj["status"]["allocatable"].get("nvidia.com/gpu", "0") == "0"
        assert obj["metadata"]["labels"]["nvidia.com/mig.strategy"] == "mixed"
        assert obj["metadata"]["labels"][STATE] == "success" and TAINT not in taints(obj)
    requests = cluster.requests()
    # The first node's evicted replica lands on the second node (still single there) and moves again.
    evicted = {r["name"] for r in evictions(requests) if r["status"] < 300}
    assert set(running) <= evicted
    assert all(name.startswith("shared-") for name in evicted)
    assert not pod_deletes(requests)

    cluster.clear_requests()
    time_sliced = [*common, "-e", "k8s_gpu_mig_strategy=single", "-e", "device_plugin_time_slicing_replicas=4"]
    cluster.playbook("mig-reconfigure.yml", *time_sliced)
    for node in cluster.nodes:
        obj = cluster.node(node)
        assert obj["status"]["allocatable"]["nvidia.com/gpu"] == str(7 * 4)
        assert obj["metadata"]["labels"]["nvidia.com/mig.strategy"] == "single"
        assert obj["metadata"]["labels"][STATE] == "success" and TAINT not in taints(obj)
    assert not pod_deletes(cluster.requests())

    cluster.clear_requests()
    again = cluster.playbook("mig-reconfigure.yml", *time_sliced)
    assert again.changed == 0
    assert not evictions(cluster.requests()) and not node_or_pod_writes(cluster.requests())


def test_pdb_that_never_allows_eviction_leaves_the_node_failed_and_tainted(small):
    first = small.nodes[0]
    small.workload(name="critical", resource="nvidia.com/mig-1g.5gb", count=2, node=first, pdb_max_unavailable="0")
    # Both nodes in one batch: the batch's eviction fails for the first node only.
    run = small.playbook("mig-reconfigure.yml", *small.common, "-e", "mig_config_name=all-3g.20gb",
                         "-e", "mig_reconfigure_evacuate_timeout=3", "-e", "mig_rollout_batch=100%", check=False)
    assert run.rc != 0
    node = small.node(first)
    assert node["metadata"]["labels"][STATE] == "failed"
    assert TAINT in taints(node)
    message = node["metadata"]["annotations"]["gpuops.io/mig-reconfigure.message"]
    assert "Evict the pods that use the changing GPUs" in message and "critical" in message
    # Its GPU clients were resumed, never left paused; its layout is untouched.
    assert node["metadata"]["labels"]["nvidia.com/gpu.deploy.device-plugin"] == "true"
    assert small.layout(first) == [["1g.5gb"] * 7] * 2
    # The other node of the batch went on without it.
    for other in small.nodes[1:]:
        assert small.layout(other) == [["3g.20gb", "3g.20gb"]] * 2
        assert small.node(other)["metadata"]["labels"][STATE] == "success"
        assert TAINT not in taints(small.node(other))
    assert "MIG ROLLOUT SUMMARY" in run.output and first in run.output.split("MIG ROLLOUT SUMMARY")[1]
    assert not pod_deletes(small.requests())

    # Once the budget allows it, a re-run resumes and converges every node.
    small.store.delete("poddisruptionbudgets", "default", "critical")
    small.playbook("mig-reconfigure.yml", *small.common, "-e", "mig_config_name=all-3g.20gb")
    for node_name in small.nodes:
        node = small.node(node_name)
        assert small.layout(node_name) == [["3g.20gb", "3g.20gb"]] * 2
        assert node["metadata"]["labels"][STATE] == "success"
        assert TAINT not in taints(node)


def test_nvml_failure_mid_apply_then_a_gpu_held_outside_kubernetes(small):
    from gpuops_sim import nvml
    first = small.nodes[0]
    state = small.cluster.state_path(first)
    nvml.add_fault(state, "nvmlDeviceCreateGpuInstanceWithPlacement", "INSUFFICIENT_RESOURCES", count=1)
    run = small.playbook("mig-reconfigure.yml", *small.common, "-e", "mig_config_name=all-2g.10gb",
                         "-e", "mig_rollout_batch=100%", check=False)
    assert run.rc != 0
    node = small.node(first)
    assert node["metadata"]["labels"][STATE] == "failed"
    assert TAINT in taints(node)
    # The failed node is left out of the batch's resume and finish; the other node completes.
    assert node["metadata"]["labels"]["nvidia.com/gpu.deploy.device-plugin"] == "true"
    for other in small.nodes[1:]:
        assert small.layout(other) == [["2g.10gb"] * 3] * 2
        assert small.node(other)["metadata"]["labels"][STATE] == "success"
    small.playbook("mig-reconfigure.yml", *small.common, "-e", "mig_config_name=all-2g.10gb")
    for node_name in small.nodes:
        assert small.layout(node_name) == [["2g.10gb"] * 3] * 2
        assert TAINT not in taints(small.node(node_name))

    # A process outside Kubernetes holds a MIG device: nothing to evict, NVML refuses, the node fails.
    device = small.nvml(first)["gpus"][0]["gpu_instances"][0]["compute_instances"][0]["device_uuid"]
    nvml.attach_process(state, device, pid=4242, used_memory_mib=512)
    run = small.playbook("mig-reconfigure.yml", *small.common, "-e", "mig_config_name=all-3g.20gb", check=False)
    assert run.rc != 0
    node = small.node(first)
    assert node["metadata"]["labels"][STATE] == "failed"
    assert TAINT in taints(node)
    assert node["metadata"]["labels"]["nvidia.com/gpu.deploy.device-plugin"] == "true"


def test_mode_change_that_needs_a_reboot(sim_cluster):
    """A VM without GPU reset: disabling MIG stays pending until the node reboots."""
    from gpuops_sim import nvml
    cluster = sim_cluster(["a100:1:A100-40GB:2"])
    common = ["-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_reconfigure_wait_timeout=120"]
    cluster.playbook("nvidia-gpu-operator.yml", *common, "-e", "mig_config_name=all-1g.5gb")
    node = cluster.nodes[0]
    nvml.set_setting(cluster.cluster.state_path(node), "reset_policy", "reboot")

    refused = cluster.playbook("mig-reconfigure.yml", *common, "-e", "mig_config_name=all-disabled", check=False)
    assert refused.rc != 0
    assert "mig_allow_reboot" in refused.output
    assert cluster.node(node)["metadata"]["labels"][STATE] == "failed"

    cluster.playbook("mig-reconfigure.yml", *common, "-e", "mig_config_name=all-disabled", "-e", "mig_allow_reboot=true")
    assert all(not gpu["mig"]["current"] for gpu in cluster.nvml(node)["gpus"])
    obj = cluster.node(node)
    assert obj["metadata"]["labels"][STATE] == "success"
    assert obj["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert TAINT not in taints(obj)


def test_reset_blockers_are_cleared_or_named(sim_cluster):
    """nvidia-persistenced is stopped for the reset and started again; a loaded nvidia_drm is named,
    and with reboots allowed the node takes the reboot path instead."""
    from gpuops_sim import nvml
    cluster = sim_cluster(["a100:2:A100-40GB:1"])
    common = ["-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_reconfigure_wait_timeout=120", "-e", "mig_rollout_batch=1",
              "-e", "mig_max_fail_percentage=100"]
    cluster.playbook("nvidia-gpu-operator.yml", *common, "-e", "mig_config_name=all-1g.5gb")
    first, second = cluster.nodes
    nvml.set_service(cluster.cluster.state_path(first), "nvidia-persistenced", True)
    nvml.set_kernel_module(cluster.cluster.state_path(second), "nvidia_drm", True)

    run = cluster.playbook("mig-reconfigure.yml", *common, "-e", "mig_config_name=all-disabled", check=False)
    assert run.rc != 0
    assert not cluster.nvml(first)["gpus"][0]["mig"]["current"]
    assert nvml.read_state(cluster.cluster.state_path(first))["services"]["nvidia-persistenced"]["active"]
    assert cluster.node(first)["metadata"]["labels"][STATE] == "success"
    failed = cluster.node(second)
    assert failed["metadata"]["labels"][STATE] == "failed"
    assert "nvidia_drm" in failed["metadata"]["annotations"]["gpuops.io/mig-reconfigure.message"]
    assert TAINT in taints(failed)

    cluster.playbook("mig-reconfigure.yml", *common, "-e", "mig_config_name=all-disabled", "-e", "mig_allow_reboot=true")
    assert not cluster.nvml(second)["gpus"][0]["mig"]["current"]
    obj = cluster.node(second)
    assert obj["metadata"]["labels"][STATE] == "success" and TAINT not in taints(obj)


def test_a_node_that_does_not_come_back_ready_after_reboot_fails(sim_cluster, tmp_path):
    from gpuops_sim import nvml
    cluster = sim_cluster(["a100:1:A100-40GB:1"])
    common = ["-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_reconfigure_wait_timeout=120"]
    cluster.playbook("nvidia-gpu-operator.yml", *common, "-e", "mig_config_name=all-1g.5gb")
    node = cluster.nodes[0]
    state = cluster.cluster.state_path(node)
    nvml.set_setting(state, "reset_policy", "reboot")
    # The node reboots, but its kubelet never reports Ready afterwards.
    script = tmp_path / "reboot-and-stay-down.py"
    script.write_text(
        "import subprocess, sys\n"
        "from kubernetes import client, config\n"
        f"subprocess.run([sys.executable, '-m', 'gpuops_sim', 'node', 'reboot', '--state', {state!r}], check=True)\n"
        f"config.load_kube_config({str(cluster.cluster.kubeconfig)!r})\n"
        f"client.CoreV1Api().patch_node_status({node!r}, "
        "{'status': {'conditions': [{'type': 'Ready', 'status': 'False', 'reason': 'KubeletNotReady'}]}})\n")
    import sys
    run = cluster.playbook("mig-reconfigure.yml", *common, "-e", "mig_config_name=all-disabled", "-e", "mig_allow_reboot=true",
                           "-e", "mig_reconfigure_reboot_timeout=3",
                           "-e", f"mig_reconfigure_reboot_command='{sys.executable} {script}'", check=False)
    assert run.rc != 0
    obj = cluster.node(node)
    assert obj["metadata"]["labels"][STATE] == "failed"
    assert TAINT in taints(obj)
    assert "ready" in obj["metadata"]["annotations"]["gpuops.io/mig-reconfigure.message"].lower()


def test_controller_killed_mid_rollout_and_rerun_converges(small):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path
    root = Path(__file__).resolve().parents[3]
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(small.directory / "inventory.yml"),
               str(root / "playbooks" / "mig-reconfigure.yml"), *small.common, "-e", "mig_config_name=all-3g.20gb"]
    process = subprocess.Popen(command, cwd=root, env=small.ansible_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if any(TAINT in taints(small.node(n)) for n in small.nodes):
                break
            assert process.poll() is None, "the playbook ended before tainting any node"
            time.sleep(0.2)
        else:
            raise AssertionError("no node was tainted in time")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert any(TAINT in taints(small.node(n)) for n in small.nodes)

    small.playbook("mig-reconfigure.yml", *small.common, "-e", "mig_config_name=all-3g.20gb")
    for node_name in small.nodes:
        node = small.node(node_name)
        assert small.layout(node_name) == [["3g.20gb", "3g.20gb"]] * 2
        assert node["metadata"]["labels"][STATE] == "success"
        assert TAINT not in taints(node)
        assert node["metadata"]["labels"]["nvidia.com/gpu.deploy.device-plugin"] == "true"


CORDONED_BEFORE = "gpuops.io/mig-reconfigure.cordoned-before"
SKIP = "gpuops.io/mig-reconfigure.skip"


def test_the_nodes_own_cordon_is_kept_and_a_skip_label_keeps_a_node_out(small):
    """With cordoning on, a node someone else cordoned is still cordoned after its change, also when
    the run that fenced it was stopped and a later one finished it; a node the rollout cordoned is
    uncordoned; a node labelled to be skipped is left alone until the label goes."""
    # Batches of one follow the inventory: the operator's node, which fails, comes last (a batch
    # whose every node fails ends the play, whatever mig_max_fail_percentage says).
    ours, skipped, operator = small.nodes
    common = [*small.common, "-e", "mig_reconfigure_cordon=true", "-e", "mig_max_fail_percentage=100",
              "-e", "mig_reconfigure_evacuate_timeout=5"]
    # Pods on the operator's node behind a budget that allows no disruption: its eviction fails, so
    # the first run leaves it fenced, as an interrupted run does.
    small.workload(name="held", resource="nvidia.com/mig-1g.5gb", count=2, node=operator, pdb_min_available="2")
    assert len(wait_running(small, "held", 2)) == 2
    small.store.patch("nodes", None, operator, {"spec": {"unschedulable": True}}, patch_type="merge")
    small.store.patch("nodes", None, skipped, {"metadata": {"labels": {SKIP: "true"}}}, patch_type="merge")
    small.clear_requests()

    first = small.playbook("mig-reconfigure.yml", *common, "-e", "mig_config_name=all-3g.20gb", check=False)
    assert first.rc != 0
    # The node the rollout cordoned is changed and schedulable again; the record is gone.
    obj = small.node(ours)
    assert small.layout(ours) == [["3g.20gb"] * 2] * 2
    assert obj["metadata"]["labels"][STATE] == "success"
    assert not obj["spec"].get("unschedulable") and TAINT not in taints(obj)
    assert CORDONED_BEFORE not in (obj["metadata"].get("annotations") or {})
    # The operator's node failed fenced, its record saying it was cordoned before the rollout.
    obj = small.node(operator)
    assert obj["metadata"]["labels"][STATE] == "failed"
    assert obj["spec"]["unschedulable"] is True and TAINT in taints(obj)
    assert obj["metadata"]["annotations"][CORDONED_BEFORE] == "true"
    # The skipped node: reported, never fenced, drained or changed.
    assert small.layout(skipped) == [["1g.5gb"] * 7] * 2
    obj = small.node(skipped)
    assert TAINT not in taints(obj) and not obj["spec"].get("unschedulable")
    assert obj["metadata"]["labels"][STATE] == "success" and obj["metadata"]["labels"]["nvidia.com/mig.config"] == "all-1g.5gb"
    assert not [r for r in mutations(small.requests()) if r.get("resource") == "nodes" and r.get("name") == skipped
                and "kubelet" not in (r.get("user_agent") or "")]
    assert f"{skipped}: " in first.output and f"{SKIP}=true" in first.output

    # The run is resumed once the budget allows the eviction: the operator's node is changed and
    # stays cordoned, by the record of the run that fenced it, not by the cordon that run made.
    small.store.delete("poddisruptionbudgets", "default", "held")
    small.playbook("mig-reconfigure.yml", *common, "-e", "mig_config_name=all-3g.20gb")
    obj = small.node(operator)
    assert small.layout(operator) == [["3g.20gb"] * 2] * 2
    assert obj["metadata"]["labels"][STATE] == "success" and TAINT not in taints(obj)
    assert obj["spec"]["unschedulable"] is True
    assert CORDONED_BEFORE not in (obj["metadata"].get("annotations") or {})
    assert small.layout(skipped) == [["1g.5gb"] * 7] * 2

    # Without the label, the next run changes the skipped node (and uncordons it, as it cordoned it).
    small.store.patch("nodes", None, skipped, {"metadata": {"labels": {SKIP: None}}}, patch_type="merge")
    small.playbook("mig-reconfigure.yml", *common, "-e", "mig_config_name=all-3g.20gb")
    assert small.layout(skipped) == [["3g.20gb"] * 2] * 2
    obj = small.node(skipped)
    assert obj["metadata"]["labels"][STATE] == "success" and not obj["spec"].get("unschedulable")
    assert small.node(operator)["spec"]["unschedulable"] is True


def _gpu0_off_config() -> dict:
    """GPU 0 leaves MIG mode (a reboot on a node without GPU reset); GPU 1 keeps 7 x 1g.5gb."""
    keep = {"devices": [1], "mig-enabled": True, "mig-devices": {"1g.5gb": 7}}
    return {"mig_configs": {"before": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 7}}],
                            "after": [{"devices": [0], "mig-enabled": False}, keep]}}


def test_a_reboot_for_a_mode_change_drains_the_whole_node_first(sim_cluster):
    """The pods on the GPU that keeps its layout would die with the reboot: they are evicted first,
    and a budget that blocks their eviction fails the node without rebooting it."""
    from gpuops_sim import nvml
    cluster = sim_cluster(["a100:1:A100-40GB:2"])
    config = cluster.write_vars("configs.yml", _gpu0_off_config())
    common = ["-e", "@%s" % config, "-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_reconfigure_wait_timeout=120",
              "-e", "mig_allow_reboot=true", "-e", "mig_reconfigure_evacuate_timeout=5"]
    cluster.playbook("nvidia-gpu-operator.yml", *common, "-e", "mig_config_name=before")
    node = cluster.nodes[0]
    state = cluster.cluster.state_path(node)
    nvml.set_setting(state, "reset_policy", "reboot")
    cluster.workload(name="infer", resource="nvidia.com/mig-1g.5gb", count=10)
    assert len(wait_running(cluster, "infer", 10)) == 10
    held = cluster.held(node)
    on_other_gpu = {name for name, ids in held.items() if set(ids) & set(_gpu_mig_uuids(cluster, node, 1))}
    assert on_other_gpu and set(held) - on_other_gpu

    # A budget on the pods of GPU 1 alone: the fence step (GPU 0's pods) passes, the drain before
    # the reboot does not.
    for name in on_other_gpu:
        cluster.store.patch("pods", "default", name, {"metadata": {"labels": {"gpu": "one"}}}, patch_type="merge")
    cluster.store.create("poddisruptionbudgets", "default", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "gpu-one", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"gpu": "one"}}, "minAvailable": len(on_other_gpu)}})
    boots = nvml.read_state(state)["boot_count"]
    blocked = cluster.playbook("mig-reconfigure.yml", *common, "-e", "mig_config_name=after", check=False)
    assert blocked.rc != 0
    obj = cluster.node(node)
    assert obj["metadata"]["labels"][STATE] == "failed" and TAINT in taints(obj)
    assert "Evict every pod the reboot would kill" in obj["metadata"]["annotations"]["gpuops.io/mig-reconfigure.message"]
    assert nvml.read_state(state)["boot_count"] == boots
    assert on_other_gpu <= {name for name, _node in gpu_pods(cluster, "infer").items()}

    # Without the budget the node is drained, rebooted and changed; no pod died with the reboot.
    cluster.store.delete("poddisruptionbudgets", "default", "gpu-one")
    on_node = {p["metadata"]["name"] for p in cluster.pods("default") if p["spec"].get("nodeName") == node}
    # A rehearsal lists them too: the drain before the reboot the mode change may need.
    cluster.clear_requests()
    rehearsal = cluster.playbook("mig-reconfigure.yml", *common, "-e", "mig_config_name=after", "--check")
    assert not mutations(cluster.requests()) and nvml.read_state(state)["boot_count"] == boots
    summary = rehearsal.output.split("MIG ROLLOUT SUMMARY")[1]
    predicted = set(re.findall(r"^  would evict default/(\S+): ", summary, re.M))
    assert predicted == on_node
    cluster.clear_requests()
    cluster.playbook("mig-reconfigure.yml", *common, "-e", "mig_config_name=after")
    assert nvml.read_state(state)["boot_count"] == boots + 1
    assert cluster.layout(node)[1] == ["1g.5gb"] * 7 and not cluster.nvml(node)["gpus"][0]["mig"]["current"]
    obj = cluster.node(node)
    assert obj["metadata"]["labels"][STATE] == "success" and TAINT not in taints(obj)
    requests = cluster.requests()
    killed = [r for r in pod_deletes(requests) if r["name"] in on_node]
    assert not killed, "pods died with the reboot without eviction: %s" % killed
    evicted = {r["name"] for r in evictions(requests) if r["status"] < 300}
    assert on_other_gpu <= evicted and on_node <= evicted
    assert evicted == predicted
