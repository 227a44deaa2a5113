"""The simulated kubelet, daemons and controllers, driven through an in-memory API and real NVML state."""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from gpuops_sim import nvml
from gpuops_sim.k8s import workload as manifests
from gpuops_sim.k8s.agents import AgentSettings, Agents
from gpuops_sim.k8s.agents_api import MemoryApi
from gpuops_sim.k8s.cluster import layout_node, pod_resources_socket_for, state_path_for
from gpuops_sim.k8s.podresources import read_device_ids

NS = manifests.GPU_OPERATOR_NAMESPACE
NODE = "gpu-node-1"
DEPLOY_PLUGIN = "nvidia.com/gpu.deploy.device-plugin"


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Sim:
    def __init__(self, tmp_path, gpus: int = 8, model: str = "A100-40GB", layout: list[str] | None = None,
                 nodes: int = 1):
        self.dir = str(tmp_path)
        (tmp_path / "nodes").mkdir()
        self.api = MemoryApi()
        for i in range(1, nodes + 1):
            name = f"gpu-node-{i}"
            path = str(tmp_path / "nodes" / f"{name}.json")
            nvml.init_node(path, model, gpus, node_name=name)
            if layout:
                layout_node(path, layout)
            self.api.create("nodes", None, manifests.node_manifest(name, "sim-a100-x8"))
        self.socket = pod_resources_socket_for(self.dir)
        self.agents = Agents(self.api, state_path_for(self.dir),
                             AgentSettings(plugin_delay=0.05, gfd_interval=0.2, crash_backoff=0.1),
                             pod_resources_socket=self.socket, node_root=lambda node: f"{self.dir}/nodes/{node}-root")
        self.agents.start()

    def device_ids(self, pod: dict, node: str = NODE) -> list[str]:
        """The pod's device IDs as its node's kubelet lists them on the PodResources socket."""
        listed = read_device_ids(self.socket(node))
        return listed[(pod["metadata"]["namespace"], pod["metadata"]["name"])]

    def path(self, node: str = NODE) -> str:
        return f"{self.dir}/nodes/{node}.json"

    def install(self, strategy: str, replicas: int = 1, rename: bool = False, dcgm: bool = False,
                nfd: bool = True) -> None:
        if nfd:  # GFD's labels reach the nodes through Node Feature Discovery
            for kind, obj in manifests.nfd_objects():
                self.api.create(kind, obj["metadata"].get("namespace"), obj)
        self.api.create("configmaps", NS, manifests.plugin_config_map(
            {"default": manifests.plugin_config(strategy, replicas, rename)}))
        self.api.create("daemonsets", NS, manifests.device_plugin_daemonset())
        self.api.create("daemonsets", NS, manifests.gfd_daemonset())
        if dcgm:
            self.api.create("daemonsets", NS, manifests.dcgm_exporter_daemonset())

    def node(self, name: str = NODE) -> dict:
        return self.api.get("nodes", None, name)

    def allocatable(self, name: str = NODE) -> dict[str, str]:
        return {k: v for k, v in self.node(name)["status"]["allocatable"].items() if k.startswith("nvidia.com/")}

    def capacity(self, name: str = NODE) -> dict[str, str]:
        return {k: v for k, v in self.node(name)["status"]["capacity"].items() if k.startswith("nvidia.com/")}

    def labels(self, name: str = NODE) -> dict[str, str]:
        return self.node(name)["metadata"]["labels"]

    def pods(self, prefix: str = "") -> list[dict]:
        return [p for p in self.api.list("pods") if p["metadata"]["name"].startswith(prefix)]

    def set_label(self, key: str, value: str | None, name: str = NODE) -> None:
        self.api.merge_patch("nodes", None, name, {"metadata": {"labels": {key: value}}})

    def close(self) -> None:
        self.agents.stop()


@pytest.fixture
def make_sim(tmp_path):
    sims = []

    def make(**kwargs) -> Sim:
        sim = Sim(tmp_path, **kwargs)
        sims.append(sim)
        return sim
    yield make
    for sim in sims:
        sim.close()


def test_single_strategy_all_1g5gb_gives_56_gpus_and_seed_labels(make_sim):
    sim = make_sim(layout=["1g.5gb"] * 7)
    sim.install("single")
    wait_for(lambda: sim.allocatable() == {"nvidia.com/gpu": "56"}, what="56 allocatable")
    labels = wait_for(lambda: sim.labels() if "nvidia.com/gpu.product" in sim.labels() else None, what="GFD labels")
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"
    assert labels["nvidia.com/gpu.count"] == "56"
    assert labels["nvidia.com/gpu.memory"] == "4864"
    assert labels["nvidia.com/mig.strategy"] == "single"
    assert labels["nvidia.com/mig.capable"] == "true"
    assert "nvidia.com/gfd.timestamp" in labels
    pods = sim.pods("nvidia-device-plugin-daemonset-")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["nodeName"] == NODE
    assert pod["metadata"]["labels"]["app"] == "nvidia-device-plugin-daemonset"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
    assert len(pod["metadata"]["name"].rsplit("-", 1)[1]) == 5
    wait_for(lambda: sim.api.get("pods", NS, pod["metadata"]["name"])["status"]["phase"] == "Running")
    ds = wait_for(lambda: (d := sim.api.get("daemonsets", NS, "nvidia-device-plugin-daemonset"))
                  and d.get("status", {}).get("numberReady") == 1 and d)
    assert ds["status"]["desiredNumberScheduled"] == 1


def test_mixed_and_none_strategies(make_sim):
    sim = make_sim(layout=["1g.5gb"] * 7)
    sim.install("mixed")
    wait_for(lambda: sim.allocatable() == {"nvidia.com/mig-1g.5gb": "56"}, what="mixed resources")
    wait_for(lambda: sim.labels().get("nvidia.com/mig-1g.5gb.count") == "56", what="mixed labels")
    # Switch the config to none and restart the daemons, as an install role would.
    sim.api.merge_patch("configmaps", NS, manifests.PLUGIN_CONFIG_MAP,
                        {"data": {"default": manifests.plugin_config("none")}})
    for pod in sim.pods("nvidia-") + sim.pods("gpu-feature-discovery-"):
        sim.api.delete("pods", NS, pod["metadata"]["name"])
    wait_for(lambda: sim.allocatable() == {"nvidia.com/gpu": "8", "nvidia.com/mig-1g.5gb": "0"}, what="none")
    wait_for(lambda: "nvidia.com/mig-1g.5gb.count" not in sim.labels(), what="stale GFD labels removed")
    assert "nvidia.com/mig.strategy" not in sim.labels()


def test_time_slicing_replicas_and_rename(make_sim):
    sim = make_sim()
    sim.install("none", replicas=4)
    wait_for(lambda: sim.allocatable() == {"nvidia.com/gpu": "32"}, what="32 replicas")
    labels = wait_for(lambda: sim.labels() if "nvidia.com/gpu.replicas" in sim.labels() else None)
    assert labels["nvidia.com/gpu.replicas"] == "4"
    assert labels["nvidia.com/gpu.product"].endswith("-SHARED")
    assert labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
    sim.api.merge_patch("configmaps", NS, manifests.PLUGIN_CONFIG_MAP,
                        {"data": {"default": manifests.plugin_config("none", 4, rename_by_default=True)}})
    for pod in sim.pods("nvidia-device-plugin-daemonset-"):
        sim.api.delete("pods", NS, pod["metadata"]["name"])
    wait_for(lambda: sim.allocatable().get("nvidia.com/gpu.shared") == "32", what="renamed resource")


def test_per_node_config_label_picks_the_config(make_sim):
    sim = make_sim()
    sim.api.create("configmaps", NS, manifests.plugin_config_map(
        {"plain": manifests.plugin_config("none"), "shared": manifests.plugin_config("none", 2)}))
    sim.api.create("daemonsets", NS, manifests.device_plugin_daemonset(default_config="plain"))
    wait_for(lambda: sim.allocatable() == {"nvidia.com/gpu": "8"})
    sim.set_label("nvidia.com/device-plugin.config", "shared")
    wait_for(lambda: sim.allocatable() == {"nvidia.com/gpu": "16"}, what="config label applied")


def test_pause_label_stops_plugin_zeroes_allocatable_and_resume_republishes(make_sim):
    sim = make_sim(layout=["1g.5gb"] * 7)
    sim.install("mixed")
    wait_for(lambda: sim.allocatable() == {"nvidia.com/mig-1g.5gb": "56"})
    sim.set_label(DEPLOY_PLUGIN, "paused-for-mig-change")
    wait_for(lambda: not sim.pods("nvidia-device-plugin-daemonset-"), what="plugin pod removed")
    wait_for(lambda: sim.allocatable() == {"nvidia.com/mig-1g.5gb": "0"}, what="allocatable zeroed")
    assert sim.capacity() == {"nvidia.com/mig-1g.5gb": "56"}
    assert len(sim.pods("gpu-feature-discovery-")) == 1  # its own label was not paused
    # Reconfigure while paused, then resume: the new layout is read on start.
    layout_node(sim.path(), ["3g.20gb", "3g.20gb"])
    sim.set_label(DEPLOY_PLUGIN, "true")
    wait_for(lambda: sim.allocatable() == {"nvidia.com/mig-3g.20gb": "16", "nvidia.com/mig-1g.5gb": "0"},
             what="republished")
    assert len(sim.pods("nvidia-device-plugin-daemonset-")) == 1


def test_no_hot_discovery_until_the_plugin_restarts(make_sim):
    sim = make_sim(layout=["1g.5gb"] * 7)
    sim.install("mixed")
    wait_for(lambda: sim.allocatable() == {"nvidia.com/mig-1g.5gb": "56"})
    layout_node(sim.path(), ["7g.40gb"])
    sim.agents.sync()
    assert sim.allocatable() == {"nvidia.com/mig-1g.5gb": "56"}
    pod = sim.pods("nvidia-device-plugin-daemonset-")[0]
    sim.api.delete("pods", NS, pod["metadata"]["name"])
    wait_for(lambda: sim.allocatable() == {"nvidia.com/mig-7g.40gb": "8", "nvidia.com/mig-1g.5gb": "0"},
             what="rediscovered after restart")
    assert sim.pods("nvidia-device-plugin-daemonset-")[0]["metadata"]["name"] != pod["metadata"]["name"]


def test_single_strategy_with_mixed_layout_crash_loops(make_sim):
    sim = make_sim(layout=["3g.20gb", "2g.10gb", "1g.5gb"])
    sim.install("single")

    def crashed():
        pods = sim.pods("nvidia-device-plugin-daemonset-")
        statuses = pods[0].get("status", {}).get("containerStatuses") if pods else None
        return statuses and statuses[0]["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff" and statuses[0]
    status = wait_for(crashed, what="CrashLoopBackOff")
    assert "more than one MIG device type present on node" in status["lastState"]["terminated"]["message"]
    assert not sim.allocatable().get("nvidia.com/gpu")
    labels = wait_for(lambda: sim.labels() if "nvidia.com/gpu.product" in sim.labels() else None)
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-MIG-INVALID"
    # Fixing the layout lets the next restart succeed.
    layout_node(sim.path(), ["1g.5gb"] * 7)
    wait_for(lambda: sim.allocatable() == {"nvidia.com/gpu": "56"}, what="recovered after back-off")


def test_workload_binding_device_ids_processes_and_eviction(make_sim):
    sim = make_sim(layout=["1g.5gb"] * 7)
    sim.install("mixed")
    wait_for(lambda: sim.allocatable() == {"nvidia.com/mig-1g.5gb": "56"})
    spec = manifests.WorkloadSpec(name="train", resource="nvidia.com/mig-1g.5gb", count=3, per_pod=2,
                                  pdb_min_available="2", recreate=False)
    for kind, obj in manifests.workload_objects(spec):
        sim.api.create(kind, "default", obj)

    def running():
        pods = sim.pods("train-")
        ok = len(pods) == 3 and all(p.get("status", {}).get("phase") == "Running" for p in pods)
        return ok and pods
    pods = wait_for(running, what="3 running pods")
    all_ids = []
    for pod in pods:
        ids = sim.device_ids(pod)
        assert "gpuops.io/device-ids" not in (pod["metadata"].get("annotations") or {})
        assert len(ids) == 2 and all(i.startswith("MIG-") for i in ids)
        all_ids += ids
    assert len(set(all_ids)) == 6
    procs = {p["device_uuid"] for g in nvml.show(sim.path())["gpus"] for p in g["processes"]}
    assert procs == set(all_ids)
    pdb = wait_for(lambda: (p := sim.api.get("poddisruptionbudgets", "default", "train"))
                   and p.get("status", {}).get("currentHealthy") == 3 and p)
    assert pdb["status"]["disruptionsAllowed"] == 1
    victim = pods[0]
    freed = set(sim.device_ids(victim))
    sim.api.delete("pods", "default", victim["metadata"]["name"])
    wait_for(lambda: not freed & {p["device_uuid"] for g in nvml.show(sim.path())["gpus"] for p in g["processes"]},
             what="processes detached")
    assert sum(len(g["processes"]) for g in nvml.show(sim.path())["gpus"]) == 4
    wait_for(lambda: sim.api.get("poddisruptionbudgets", "default", "train")["status"]["disruptionsAllowed"] == 0)


def test_replicaset_recreates_evicted_pods_elsewhere(make_sim):
    sim = make_sim(nodes=2, gpus=2)
    sim.install("none")
    wait_for(lambda: sim.allocatable("gpu-node-2") == {"nvidia.com/gpu": "2"})
    spec = manifests.WorkloadSpec(name="serve", resource="nvidia.com/gpu", count=2)
    for kind, obj in manifests.workload_objects(spec):
        sim.api.create(kind, "default", obj)

    def running():
        pods = sim.pods("serve-")
        return len(pods) == 2 and all(p.get("status", {}).get("phase") == "Running" for p in pods) and pods
    pods = wait_for(running, what="2 running pods")
    assert {p["metadata"]["ownerReferences"][0]["kind"] for p in pods} == {"ReplicaSet"}
    sim.api.merge_patch("nodes", None, NODE, {"spec": {"unschedulable": True}})
    for pod in pods:
        if pod["spec"]["nodeName"] == NODE:
            sim.api.delete("pods", "default", pod["metadata"]["name"])
    replaced = wait_for(lambda: (ps := running()) and not {p["metadata"]["name"] for p in ps} & {
        p["metadata"]["name"] for p in pods if p["spec"]["nodeName"] == NODE} and ps, what="replacements")
    assert {p["spec"]["nodeName"] for p in replaced} == {"gpu-node-2"}
    rs = wait_for(lambda: (r := sim.api.get("replicasets", "default", "serve"))
                  and r.get("status", {}).get("readyReplicas") == 2 and r)
    assert rs["status"]["replicas"] == 2


def test_unschedulable_pod_stays_pending_until_resources_appear(make_sim):
    sim = make_sim()
    spec = manifests.WorkloadSpec(name="solo", resource="nvidia.com/gpu", count=1, recreate=False)
    for kind, obj in manifests.workload_objects(spec):
        sim.api.create(kind, "default", obj)

    def unschedulable():
        pod = sim.api.get("pods", "default", "solo-0")
        conditions = pod.get("status", {}).get("conditions") or []
        return any(c["type"] == "PodScheduled" and c["reason"] == "Unschedulable" for c in conditions) and pod
    pod = wait_for(unschedulable, what="Unschedulable condition")
    assert "Insufficient nvidia.com/gpu" in pod["status"]["conditions"][0]["message"]
    assert not pod["spec"].get("nodeName")
    sim.install("none")
    wait_for(lambda: sim.api.get("pods", "default", "solo-0")["status"].get("phase") == "Running",
             what="scheduled once the plugin advertises")
    assert sim.api.get("pods", "default", "solo-0")["spec"]["nodeName"] == NODE


def test_taints_keep_workloads_off_and_daemons_need_tolerations(make_sim):
    sim = make_sim(nodes=2)
    sim.install("none")
    wait_for(lambda: sim.allocatable("gpu-node-2") == {"nvidia.com/gpu": "8"})
    sim.api.merge_patch("nodes", None, NODE, {"spec": {"taints": [
        {"key": "gpuops.io/mig-reconfigure", "value": "all-1g.5gb", "effect": "NoSchedule"},
        {"key": "other", "effect": "NoExecute"}]}})
    # The plugin tolerates the rollout taint but not "other": it leaves node 1.
    wait_for(lambda: all(p["spec"]["nodeName"] != NODE for p in sim.pods("nvidia-device-plugin-daemonset-")))
    spec = manifests.WorkloadSpec(name="w", resource="nvidia.com/gpu", count=2, recreate=False)
    for kind, obj in manifests.workload_objects(spec):
        sim.api.create(kind, "default", obj)
    wait_for(lambda: all(p.get("status", {}).get("phase") == "Running" for p in sim.pods("w-")))
    assert {p["spec"]["nodeName"] for p in sim.pods("w-")} == {"gpu-node-2"}


def test_time_sliced_replicas_share_a_gpu(make_sim):
    sim = make_sim(gpus=1)
    sim.install("none", replicas=4)
    wait_for(lambda: sim.allocatable() == {"nvidia.com/gpu": "4"})
    spec = manifests.WorkloadSpec(name="ts", resource="nvidia.com/gpu", count=4, recreate=False)
    for kind, obj in manifests.workload_objects(spec):
        sim.api.create(kind, "default", obj)
    pods = wait_for(lambda: (ps := sim.pods("ts-")) and all(p.get("status", {}).get("phase") == "Running" for p in ps) and ps)
    gpu_uuid = nvml.show(sim.path())["gpus"][0]["uuid"]
    # As the real plugin registers replicas with the kubelet: <device id>::<replica>.
    assert sorted(i for p in pods for i in sim.device_ids(p)) == [f"{gpu_uuid}::{n}" for n in range(4)]
    assert len(nvml.show(sim.path())["gpus"][0]["processes"]) == 4


def test_dcgm_exporter_holds_the_gpus_while_it_runs(make_sim):
    sim = make_sim(gpus=2)
    sim.install("none", dcgm=True)
    wait_for(lambda: all(g["clients"] for g in nvml.show(sim.path())["gpus"]), what="dcgm holds GPUs")
    sim.set_label("nvidia.com/gpu.deploy.dcgm-exporter", "paused-for-mig-change")
    wait_for(lambda: not any(g["clients"] for g in nvml.show(sim.path())["gpus"]), what="dcgm released GPUs")


def test_a_daemonset_rolls_its_pods_on_a_new_template_and_only_then(make_sim):
    sim = make_sim(nodes=3)
    sim.install("single")
    name = manifests.device_plugin_daemonset()["metadata"]["name"]

    def revisions() -> set[str]:
        return {p["metadata"]["labels"].get("controller-revision-hash") for p in sim.pods(name)}

    wait_for(lambda: len(sim.pods(name)) == 3, what="a plugin pod on each node")
    before = {p["metadata"]["uid"] for p in sim.pods(name)}
    # A write of the status alone (the agents make such writes all the time) leaves the pods be.
    sim.api.merge_patch("daemonsets", NS, name, {"status": {"observedGeneration": 99}})
    sim.api.merge_patch("daemonsets", NS, name, {"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}})
    wait_for(lambda: len(sim.pods(name)) == 3 and not before & {p["metadata"]["uid"] for p in sim.pods(name)},
             what="every plugin pod replaced")
    assert len(revisions()) == 1
    rolled = {p["metadata"]["uid"] for p in sim.pods(name)}
    sim.api.merge_patch("daemonsets", NS, name, {"status": {"observedGeneration": 100}})
    sim.set_label("example.com/unrelated", "x")
    wait_for(lambda: sim.labels().get("example.com/unrelated") == "x", what="the label")
    assert {p["metadata"]["uid"] for p in sim.pods(name)} == rolled


# -- pods that run to an end (gpuops_sim/k8s/containers.py) --

def one_shot(name: str, command: list[str], resources: dict[str, str], node: str | None = NODE, **spec: Any) -> dict:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"restartPolicy": "Never", "containers": [
               {"name": "main", "image": "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04", "command": command,
                "resources": {"limits": resources}}], **spec}}
    if node:
        pod["spec"]["nodeName"] = node
    return pod


def phase_of(sim: Sim, name: str) -> str | None:
    pod = sim.api.get("pods", "default", name)
    phase = (pod.get("status") or {}).get("phase")
    return phase if phase in ("Succeeded", "Failed") else None


def test_a_job_that_sleeps_succeeds_on_its_own_and_frees_its_devices(make_sim):
    sim = make_sim(layout=["1g.5gb"] * 7)
    sim.install("mixed")
    wait_for(lambda: sim.allocatable() == {"nvidia.com/mig-1g.5gb": "56"})
    sim.api.create("pods", "default", one_shot("job", ["sh", "-c", "sleep 0.3"], {"nvidia.com/mig-1g.5gb": "1"}, node=None))
    assert wait_for(lambda: phase_of(sim, "job"), what="the job to end") == "Succeeded"
    status = sim.api.get("pods", "default", "job")["status"]
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    wait_for(lambda: not any(g["processes"] for g in nvml.show(sim.path())["gpus"]), what="processes detached")


def test_nvidia_smi_succeeds_on_working_devices_and_fails_on_a_lost_gpu(make_sim):
    sim = make_sim(layout=["3g.20gb"] * 2)
    sim.install("mixed")
    wait_for(lambda: sim.allocatable() == {"nvidia.com/mig-3g.20gb": "16"})
    sim.api.create("pods", "default", one_shot("check", ["nvidia-smi", "-L"], {"nvidia.com/mig-3g.20gb": "1"}))
    assert wait_for(lambda: phase_of(sim, "check")) == "Succeeded"
    nvml.add_fault(sim.path(), "nvmlDeviceGetHandleByUUID", "GPU_IS_LOST", count=0)
    sim.api.create("pods", "default", one_shot("check-lost", ["nvidia-smi", "-L"], {"nvidia.com/mig-3g.20gb": "1"}))
    assert wait_for(lambda: phase_of(sim, "check-lost")) == "Failed"
    ended = sim.api.get("pods", "default", "check-lost")["status"]["containerStatuses"][0]["state"]["terminated"]
    assert ended["exitCode"] == 15 and "GPU is lost" in ended["message"]
    nvml.clear_faults(sim.path())
    sim.api.create("pods", "default", one_shot("check-again", ["nvidia-smi", "-L"], {"nvidia.com/mig-3g.20gb": "1"}))
    assert wait_for(lambda: phase_of(sim, "check-again")) == "Succeeded"


def test_a_pod_bound_to_a_node_without_its_resource_fails_admission(make_sim):
    sim = make_sim(layout=["3g.20gb"] * 2)
    sim.install("mixed")
    wait_for(lambda: sim.allocatable() == {"nvidia.com/mig-3g.20gb": "16"})
    sim.api.create("pods", "default", one_shot("check", ["nvidia-smi", "-L"], {"nvidia.com/mig-1g.5gb": "1"}))
    assert wait_for(lambda: phase_of(sim, "check")) == "Failed"
    assert sim.api.get("pods", "default", "check")["status"]["reason"] == "UnexpectedAdmissionError"


def test_a_pod_past_its_active_deadline_is_failed_and_others_run_until_deleted(make_sim):
    sim = make_sim(layout=["3g.20gb"] * 2)
    sim.install("mixed")
    wait_for(lambda: sim.allocatable() == {"nvidia.com/mig-3g.20gb": "16"})
    sim.api.create("pods", "default", one_shot("long", ["python", "train.py"], {"nvidia.com/mig-3g.20gb": "1"},
                                               activeDeadlineSeconds=1))
    sim.api.create("pods", "default", one_shot("server", ["python", "serve.py"], {"nvidia.com/mig-3g.20gb": "1"}))
    assert wait_for(lambda: phase_of(sim, "long"), what="the deadline") == "Failed"
    assert sim.api.get("pods", "default", "long")["status"]["reason"] == "DeadlineExceeded"
    assert sim.api.get("pods", "default", "server")["status"]["phase"] == "Running"


@pytest.mark.parametrize("container, program", [
    ({"command": ["sleep", "5"]}, ("sleep", 5.0)),
    ({"command": ["/bin/sh", "-c", "sleep 2s"]}, ("sleep", 2.0)),
    ({"command": ["nvidia-smi"], "args": ["-L"]}, ("nvidia-smi", 0.0)),
    ({"command": ["/usr/bin/nvidia-smi", "-q"]}, ("nvidia-smi", 0.0)),
    ({"command": ["python", "train.py"]}, None),
    ({"command": ["sleep", "infinity"]}, None),
    ({}, None),
])
def test_the_programs_that_end(container, program):
    from gpuops_sim.k8s import containers  # pylint: disable=import-outside-toplevel
    found = containers.program_of(container)
    assert (found and (found.kind, found.seconds)) == program or (found is None and program is None)
