# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A simulated cluster per test, and ansible-playbook runs of the collection's playbooks on it.

The playbooks run under the strategy GPUOPS_ANSIBLE_STRATEGY names: ``linear`` (Ansible's default,
when unset) or ``mitogen_linear`` (Mitogen for Ansible, requirements-mitogen.txt; docs/scale.md).
`make test` runs a selection of these tests under both.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOKS = ROOT / "playbooks"

cluster_module = pytest.importorskip("gpuops_sim.k8s.cluster")
try:
    from gpuops_sim.k8s import Emulator  # noqa: F401  pylint: disable=unused-import
except ImportError:  # pragma: no cover - while the emulator is missing
    pytest.skip("the API emulator gpuops_sim.k8s.Emulator is not available", allow_module_level=True)

from gpuops_sim import nvml as sim_nvml  # noqa: E402
from gpuops_sim.ansible_plugins import STRATEGIES, strategy_env  # noqa: E402
from gpuops_sim.k8s.agents import AgentSettings  # noqa: E402
from gpuops_sim.k8s.cluster import Cluster, ClusterOptions, parse_pool  # noqa: E402
from gpuops_sim.k8s.workload import WorkloadSpec  # noqa: E402


ANSIBLE_STRATEGY = os.environ.get("GPUOPS_ANSIBLE_STRATEGY") or "linear"
if ANSIBLE_STRATEGY not in STRATEGIES:
    raise pytest.UsageError(f"GPUOPS_ANSIBLE_STRATEGY={ANSIBLE_STRATEGY!r}: one of {', '.join(STRATEGIES)}")


def ansible_env() -> dict[str, str]:
    """The environment of every ansible-playbook run of these tests: the clone's ansible.cfg and
    the strategy GPUOPS_ANSIBLE_STRATEGY names."""
    return dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1",
                ANSIBLE_DEPRECATION_WARNINGS="0", **strategy_env(ANSIBLE_STRATEGY))


def pytest_report_header(config):  # pylint: disable=unused-argument
    return f"ansible strategy of the rollout tests: {ANSIBLE_STRATEGY} (GPUOPS_ANSIBLE_STRATEGY)"


@dataclass
class Run:
    rc: int
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host."""
        recap = {}
        for host, counters in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", self.output, re.M):
            recap[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counters)}
        return recap

    @property
    def changed(self) -> int:
        return sum(c.get("changed", 0) for c in self.recap().values())


class SimCluster:
    """A running simulated cluster with helpers to read it and run playbooks against it."""

    def __init__(self, directory: Path, cluster: Cluster) -> None:
        self.directory = directory
        self.cluster = cluster
        self.store = cluster.emulator.store

    # The environment of its ansible-playbook runs (for a test that starts one itself).
    ansible_env = staticmethod(ansible_env)

    @property
    def nodes(self) -> list[str]:
        return list(self.cluster.nodes)

    def node(self, name: str) -> dict:
        return self.store.get("nodes", None, name)

    def pods(self, namespace: str | None = None) -> list[dict]:
        return self.store.list("pods", namespace)

    def nvml(self, node: str) -> dict:
        return sim_nvml.show(self.cluster.state_path(node))

    def nvml_state(self, node: str) -> dict:
        """The node's state file as it is (driver versions included)."""
        return sim_nvml.read_state(self.cluster.state_path(node))

    def cluster_root(self, node: str) -> str:
        """The node's root directory."""
        return cluster_module.node_root(str(self.directory), node)

    def socket(self, node: str) -> str:
        """The node's kubelet PodResources socket."""
        return cluster_module.pod_resources_socket_for(str(self.directory))(node)

    def held(self, node: str) -> dict[str, list[str]]:
        """pod name → the device IDs its node's kubelet lists for it on the PodResources socket."""
        from gpuops_sim.k8s.podresources import read_device_ids  # pylint: disable=import-outside-toplevel
        return {name: ids for (_namespace, name), ids in read_device_ids(self.socket(node)).items()}

    def layout(self, node: str) -> list[list[str]]:
        """Per GPU, the sorted profiles of its GPU instances."""
        return [sorted(gi["profile"] for gi in gpu["gpu_instances"]) for gpu in self.nvml(node)["gpus"]]

    def requests(self) -> list[dict]:
        with urllib.request.urlopen(self.cluster.url + "/_sim/requests") as answer:
            return json.load(answer)["items"]

    def clear_requests(self) -> None:
        request = urllib.request.Request(self.cluster.url + "/_sim/requests", method="DELETE")
        urllib.request.urlopen(request).close()

    def add_fault(self, **fault) -> None:
        request = urllib.request.Request(self.cluster.url + "/_sim/faults", data=json.dumps(fault).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request).close()

    def workload(self, **spec) -> None:
        self.cluster.create_workload(WorkloadSpec(**spec))

    def write_vars(self, name: str, data: dict) -> Path:
        path = self.directory / name
        path.write_text(yaml.safe_dump(data))
        return path

    def playbook(self, name: str, *extra: str, check: bool = True, timeout: int = 900) -> Run:
        command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(self.directory / "inventory.yml"),
                   str(PLAYBOOKS / name), *extra]
        completed = subprocess.run(command, cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=timeout, check=False)
        run = Run(completed.returncode, completed.stdout + completed.stderr)
        (self.directory / "ansible.log").open("a").write(run.output)
        if check and run.rc != 0:
            raise AssertionError("%s failed (%d):\n%s" % (name, run.rc, run.output[-8000:]))
        return run


@pytest.fixture
def sim_cluster(tmp_path):
    """Factory: ``sim_cluster(pools=["a100:2:A100-40GB:2"], plugin_delay=0.1, gfd_interval=3600)`` → a started SimCluster."""
    started = []

    def start(pools, plugin_delay: float = 0.1, gfd_interval: float = 3600, **options) -> SimCluster:
        directory = tmp_path / ("cluster%d" % len(started))
        settings = AgentSettings(plugin_delay=plugin_delay, gfd_interval=gfd_interval)
        cluster = Cluster(str(directory), ClusterOptions(pools=[parse_pool(p) for p in pools], settings=settings, **options))
        cluster.start()
        started.append(cluster)
        return SimCluster(directory, cluster)

    yield start
    for cluster in started:
        cluster.stop()
