"""The `cluster` CLI and its helpers: pools, inventory, status, and the up/down round trip."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import time

import pytest
import yaml

from gpuops_sim import nvml
from gpuops_sim.cli import main
from gpuops_sim.k8s import cluster, workload as manifests
from gpuops_sim.k8s.agents_api import MemoryApi
from gpuops_sim.k8s.cli import status_report
from gpuops_sim.k8s.podresources import check_socket_path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_pools_from_the_command_line():
    assert cluster.parse_pool("big:2:H100:8") == cluster.Pool("big", 2, "H100", 8)
    pools = cluster.parse_nodes_spec("A100-40GB:2,H100:1", gpus=4)
    assert [(p.count, p.model, p.gpus) for p in pools] == [(2, "A100-40GB", 4), (1, "H100", 4)]
    assert [n for n, _pool in cluster.node_names(pools)] == ["gpu-node-1", "gpu-node-2", "gpu-node-3"]
    with pytest.raises(ValueError, match="NAME:COUNT:MODEL:GPUS"):
        cluster.parse_pool("x:1:A100")
    with pytest.raises(ValueError, match="unknown GPU model"):
        cluster.parse_pool("x:1:Z9000:8")


def test_layout_node_creates_full_instances(tmp_path):
    path = str(tmp_path / "n.json")
    nvml.init_node(path, "A100-40GB", 2, node_name="n")
    cluster.layout_node(path, ["3g.20gb", "2g.10gb", "1g.5gb"], gpus=[1])
    gpus = nvml.show(path)["gpus"]
    assert gpus[0]["gpu_instances"] == [] and not gpus[0]["mig"]["current"]
    assert sorted(gi["profile"] for gi in gpus[1]["gpu_instances"]) == ["1g.5gb", "2g.10gb", "3g.20gb"]
    assert all(len(gi["compute_instances"]) == 1 for gi in gpus[1]["gpu_instances"])


def test_inventory_is_parseable_by_ansible_inventory(tmp_path):
    cluster.write_inventory(str(tmp_path), ["gpu-node-1", "gpu-node-2"])
    result = subprocess.run([os.path.join(REPO, ".venv", "bin", "ansible-inventory"), "-i",
                             str(tmp_path / "inventory.yml"), "--list"],
                            capture_output=True, text=True, check=True, cwd=REPO, timeout=120)
    data = json.loads(result.stdout)
    assert data["kube_control_plane"]["hosts"] == ["controller"]
    assert data["gpu_nodes"]["hosts"] == ["gpu-node-1", "gpu-node-2"]
    # The GPU nodes' variables are group variables templated on the host's name: render them for one.
    rendered = subprocess.run(
        [os.path.join(REPO, ".venv", "bin", "ansible"), "gpu-node-2", "-i", str(tmp_path / "inventory.yml"),
         "-m", "ansible.builtin.debug", "-a",
         "msg={{ {'connection': ansible_connection, 'node': k8s_node_name, 'python': ansible_python_interpreter,"
         " 'environment': gpuops_environment, 'kubeconfig': k8s_kubeconfig, 'driver': nvidia_driver_install,"
         " 'toolkit': nvidia_container_toolkit_install, 'boot_root': mig_boot_root,"
         " 'reboot': mig_reconfigure_reboot_command, 'boot_time': mig_reconfigure_boot_time_command,"
         " 'search_paths': mig_reconfigure_reboot_search_paths, 'vars': hostvars[inventory_hostname].keys() | list} | to_json }}"],
        capture_output=True, text=True, check=True, cwd=REPO, timeout=120,
        env=dict(os.environ, ANSIBLE_CALLBACK_RESULT_FORMAT="json"))
    result, _end = json.JSONDecoder().raw_decode(rendered.stdout, rendered.stdout.index("{"))
    host = json.loads(result["msg"])
    state = str(tmp_path / "nodes" / "gpu-node-2.json")
    # Not `local`: ansible.builtin.reboot refuses that transport (it would reboot the controller).
    assert host["connection"] == "gpuops_sim_node"
    assert host["node"] == "gpu-node-2"
    assert host["python"] == sys.executable
    assert host["environment"]["GPUOPS_NVML_SIMULATOR"] == state
    first = host["environment"]["PATH"].split(os.pathsep)[0]
    assert os.path.exists(os.path.join(first, "nvidia-smi"))
    assert host["kubeconfig"] == str(tmp_path / "kubeconfig")
    # Settings a real site uses: the image ships the driver and the runtime; its own reboot tooling.
    assert host["driver"] is False and host["toolkit"] is False
    assert not [name for name in host["vars"] if "simulated" in name]
    root = str(tmp_path / "nodes" / "gpu-node-2-root")
    assert host["boot_root"] == root
    assert host["reboot"].endswith("node reboot --quiet --state " + state)
    assert host["boot_time"] == "cat %s/proc/sys/kernel/random/boot_id" % root
    assert host["search_paths"] == [os.path.dirname(sys.executable)]


def test_workload_objects_and_validation():
    objects = manifests.workload_objects(manifests.WorkloadSpec(
        name="w", resource="nvidia.com/mig-1g.5gb", count=3, per_pod=2, pdb_max_unavailable="1", node="gpu-node-1"))
    assert [k for k, _obj in objects] == ["poddisruptionbudgets", "replicasets"]
    assert objects[0][1]["spec"] == {"selector": {"matchLabels": {"app": "w"}}, "maxUnavailable": 1}
    template = objects[1][1]["spec"]["template"]["spec"]
    assert template["containers"][0]["resources"]["limits"] == {"nvidia.com/mig-1g.5gb": "2"}
    assert template["nodeSelector"] == {"kubernetes.io/hostname": "gpu-node-1"}
    bare = manifests.workload_objects(manifests.WorkloadSpec(name="b", resource="nvidia.com/gpu", count=2,
                                                             recreate=False))
    assert [o["metadata"]["name"] for _kind, o in bare] == ["b-0", "b-1"]
    with pytest.raises(ValueError, match="resource"):
        manifests.WorkloadSpec(name="b", resource="cpu", count=1).validate()
    with pytest.raises(ValueError, match="name"):
        manifests.WorkloadSpec(name="Bad_Name", resource="nvidia.com/gpu", count=1).validate()


def test_status_report_shows_layout_allocatable_taints_and_pods(tmp_path):
    (tmp_path / "nodes").mkdir()
    path = str(tmp_path / "nodes" / "gpu-node-1.json")
    nvml.init_node(path, "A100-40GB", 1, node_name="gpu-node-1")
    cluster.layout_node(path, ["7g.40gb"])
    api = MemoryApi()
    node = manifests.node_manifest("gpu-node-1", "sim")
    node["spec"]["taints"] = [{"key": "gpuops.io/mig-reconfigure", "value": "all-1g.5gb", "effect": "NoSchedule"}]
    node["status"]["allocatable"]["nvidia.com/mig-7g.40gb"] = "1"
    api.create("nodes", None, node)
    api.create("pods", "default", {"metadata": {"name": "p"},
                                   "spec": {"nodeName": "gpu-node-1"}, "status": {"phase": "Running"}})
    text = status_report(str(tmp_path), api, pod_devices=lambda node: {("default", "p"): ["MIG-x"]})
    assert "gpu 0: MIG on 7g.40gb" in text
    assert "nvidia.com/mig-7g.40gb=1" in text
    assert "gpuops.io/mig-reconfigure=all-1g.5gb:NoSchedule" in text
    assert "nvidia.com/gpu.deploy.device-plugin=true" in text
    assert "pod default/p Running  devices: MIG-x" in text


def test_a_long_cluster_directory_keeps_its_sockets_in_a_short_one_it_links_to(tmp_path):
    directory = tmp_path / ("d" * 90)
    options = cluster.ClusterOptions(pools=[cluster.parse_pool("a:1:A100-40GB:1")], control_plane=False)
    with cluster.Cluster(str(directory), options) as sim:
        socket = cluster.pod_resources_socket_for(sim.directory)("gpu-node-1")
        assert len(os.fsencode(socket)) <= 107
        assert os.path.realpath(directory / "kubelet") == os.path.dirname(socket)
        inventory = cluster.inventory(sim.directory, sim.nodes)
        assert inventory["all"]["children"]["gpu_nodes"]["vars"]["kubelet_pod_resources_socket"] == \
            cluster.pod_resources_socket_for(sim.directory)("{{ inventory_hostname }}")
        sim.agents.sync()
        assert stat.S_ISSOCK(os.stat(socket).st_mode)


def test_a_node_name_too_long_for_a_unix_socket_fails_the_start_naming_it():
    with pytest.raises(ValueError, match=r"PodResources socket path .*/x{100}.sock is \d+ bytes; a unix "
                                         r"socket path holds at most 107"):
        check_socket_path(cluster.pod_resources_socket_for("/tmp/c")("x" * 100))


def test_the_inventory_gives_each_node_its_kubelet_socket(tmp_path):
    inventory = cluster.inventory(str(tmp_path), ["gpu-node-1"])
    node_vars = inventory["all"]["children"]["gpu_nodes"]["vars"]
    sockets = cluster.pod_resources_sockets_dir(str(tmp_path))
    assert node_vars["kubelet_pod_resources_socket"] == os.path.join(sockets, "{{ inventory_hostname }}.sock")
    assert cluster.pod_resources_socket_for("/tmp/c")("gpu-node-1") == "/tmp/c/kubelet/gpu-node-1.sock"


def test_down_without_a_cluster_is_a_no_op(tmp_path, capsys):
    assert main(["cluster", "down", "--dir", str(tmp_path)]) == 0
    assert "nothing running" in capsys.readouterr().out


def test_up_rejects_bad_input_before_starting(tmp_path, capsys):
    assert main(["cluster", "up", "--dir", str(tmp_path), "--model", "Z9000"]) == 1
    assert "unknown GPU model" in capsys.readouterr().err
    assert not (tmp_path / "kubeconfig").exists()


def _emulator_available() -> bool:
    try:
        from gpuops_sim.k8s import Emulator  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _emulator_available(), reason="the API emulator (gpuops_sim.k8s.Emulator) is not there yet")
def test_up_down_round_trip_with_the_real_kubernetes_client(tmp_path):
    from kubernetes import client, config

    directory = str(tmp_path / "c")
    up = [sys.executable, "-m", "gpuops_sim", "cluster", "up", "--dir", directory, "--nodes", "2", "--gpus", "2",
          "--strategy", "mixed", "--mig-layout", "1g.5gb:7", "--plugin-delay", "0.1", "--detach"]
    subprocess.run(up, check=True, cwd=REPO, timeout=150, capture_output=True, text=True)
    try:
        # Every module run on a simulated node imports the NVML simulator: its bytecode is written at start,
        # also where the environment turns bytecode writing off.
        package = os.path.dirname(nvml.__file__)
        assert all(os.path.exists(importlib.util.cache_from_source(os.path.join(package, name)))
                   for name in os.listdir(package) if name.endswith(".py"))
        api = client.CoreV1Api(config.new_client_from_config(os.path.join(directory, "kubeconfig")))
        deadline = time.monotonic() + 30
        while True:
            nodes = {n.metadata.name: n for n in api.list_node().items}
            if all((nodes[f"gpu-node-{i}"].status.allocatable or {}).get("nvidia.com/mig-1g.5gb") == "14"
                   for i in (1, 2)):
                break
            assert time.monotonic() < deadline, "allocatable never published"
            time.sleep(0.1)
        assert "control-plane-1" in nodes
        assert nodes["gpu-node-1"].metadata.labels["nvidia.com/gpu.present"] == "true"
        work = [sys.executable, "-m", "gpuops_sim", "cluster", "workload", "--dir", directory, "--name", "w",
                "--resource", "nvidia.com/mig-1g.5gb", "--count", "2", "--pdb-min-available", "1"]
        subprocess.run(work, check=True, cwd=REPO, timeout=60, capture_output=True)
        deadline = time.monotonic() + 30
        while True:
            pods = api.list_namespaced_pod("default", label_selector="app=w").items
            if len(pods) == 2 and all(p.status.phase == "Running" for p in pods):
                break
            assert time.monotonic() < deadline, "workload never ran"
            time.sleep(0.1)
        assert not any("gpuops.io/device-ids" in (p.metadata.annotations or {}) for p in pods)
        status = subprocess.run([sys.executable, "-m", "gpuops_sim", "cluster", "status", "--dir", directory],
                                check=True, cwd=REPO, timeout=60, capture_output=True, text=True).stdout
        assert "gpu-node-1" in status and "nvidia.com/mig-1g.5gb=14" in status
        # Each pod's devices, as the kubelet's PodResources socket of its node lists them.
        assert all(f"pod default/{p.metadata.name} Running  devices: MIG-" in status for p in pods)
        inventory = yaml.safe_load((tmp_path / "c" / "inventory.yml").read_text())
        assert set(inventory["all"]["children"]["gpu_nodes"]["hosts"]) == {"gpu-node-1", "gpu-node-2"}
    finally:
        down = [sys.executable, "-m", "gpuops_sim", "cluster", "down", "--dir", directory]
        subprocess.run(down, check=True, cwd=REPO, timeout=60)
    assert not os.path.exists(os.path.join(directory, "cluster.pid"))
    subprocess.run(down, check=True, cwd=REPO, timeout=60)  # idempotent
