# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Simulated clusters and Ansible runs for the benchmarks.

A cluster runs detached (`python -m gpuops_sim cluster up --detach`), so its process is separate
from the controller and its CPU time can be read from /proc: that is the simulator's share.
Ansible runs as a child process; its CPU (controller, forks and module processes) is read with
os.times() after it is waited for.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from bench.common import BIN, PYTHON, ROOT, Stopwatch, process_cpu_seconds
from gpuops_sim.ansible_plugins import STRATEGIES, mitogen_strategy_plugins, strategy_env

CALLBACKS = ROOT / "bench" / "callback_plugins"
SETUP_PLAYBOOK = ROOT / "bench" / "playbooks" / "install_device_plugin.yml"
RECORD_PLAYBOOK = ROOT / "bench" / "playbooks" / "record_mig_layout.yml"


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and shows the end of its output."""


def sim(*args: str, timeout: int = 900) -> str:
    command = [PYTHON, "-m", "gpuops_sim", *args]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(command[1:])} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout


@dataclass
class Cluster:
    directory: Path
    url: str
    pid: int
    nodes: List[str]

    @classmethod
    def up(cls, directory: Path, nodes: int, gpus: int = 8, model: str = "a100", mig_layout: Optional[str] = None,
           plugin_delay: float = 0.2, extra: Sequence[str] = ()) -> "Cluster":
        """A detached cluster with no NVIDIA daemons: the collection's playbooks install them, as on a
        real cluster (pre-installed simulator daemons would run next to the collection's own)."""
        directory.mkdir(parents=True, exist_ok=True)
        args = ["cluster", "up", "--dir", str(directory), "--nodes", str(nodes), "--model", model, "--gpus", str(gpus),
                "--plugin-delay", str(plugin_delay), "--gfd-interval", "3600", "--detach", *extra]
        if mig_layout:
            args += ["--mig-layout", mig_layout]
        sim(*args)
        described = json.loads((directory / "cluster.json").read_text())
        return cls(directory=directory, url=described["url"], pid=int(described["pid"]), nodes=list(described["nodes"]))

    def down(self) -> None:
        sim("cluster", "down", "--dir", str(self.directory))

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.down()

    @property
    def inventory(self) -> Path:
        return self.directory / "inventory.yml"

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    def cpu_seconds(self) -> float:
        """CPU the simulator process (API emulator and node agents) has used so far."""
        value = process_cpu_seconds(self.pid)
        if value is None:
            raise BenchError(f"the simulator process {self.pid} is gone; see {self.directory / 'cluster.log'}")
        return value

    def _call(self, method: str, path: str, body: Optional[Any] = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(request, timeout=60) as answer:
            payload = answer.read()
        return json.loads(payload) if payload else None

    def requests(self) -> List[Dict[str, Any]]:
        return self._call("GET", "/_sim/requests")["items"]

    def clear_requests(self) -> None:
        self._call("DELETE", "/_sim/requests")

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def patch_node(self, name: str, body: Dict[str, Any]) -> Any:
        data = json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/api/v1/nodes/{name}", data=data, method="PATCH",
                                         headers={"Content-Type": "application/merge-patch+json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())

    def delete(self, path: str) -> None:
        self._call("DELETE", path)

    def pods_on(self, node: str, namespace: Optional[str] = None) -> List[Dict[str, Any]]:
        base = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        return self.get(f"{base}?fieldSelector=spec.nodeName%3D{node}")["items"]

    def pod_devices(self, node: str) -> Dict[str, List[str]]:
        """pod name → device IDs, as the node's kubelet lists them on its PodResources socket."""
        from gpuops_sim.k8s.cluster import pod_resources_socket_for  # pylint: disable=import-outside-toplevel
        from gpuops_sim.k8s.podresources import read_device_ids  # pylint: disable=import-outside-toplevel
        listed = read_device_ids(pod_resources_socket_for(str(self.directory))(node))
        return {name: ids for (_namespace, name), ids in listed.items()}

    def workload(self, name: str, resource: str, count: int, node: Optional[str] = None,
                 recreate: bool = False) -> None:
        args = ["cluster", "workload", "--dir", str(self.directory), "--name", name, "--resource", resource,
                "--count", str(count)]
        if node:
            args += ["--node", node]
        if not recreate:
            args.append("--no-recreate")
        sim(*args)


def requests_summary(records: Sequence[Dict[str, Any]], nodes: int) -> Dict[str, Any]:
    """Request-log records per node, by verb and by resource."""
    verbs = Counter(r.get("verb") for r in records)
    resources = Counter("/".join(filter(None, (r.get("resource"), r.get("subresource")))) for r in records)
    per_node = len(records) / nodes if nodes else float("nan")
    return {
        "total": len(records),
        "per_node": round(per_node, 2),
        "by_verb": dict(sorted(verbs.items(), key=lambda kv: (-kv[1], str(kv[0])))),
        "by_resource": dict(sorted(resources.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


@dataclass
class AnsibleRun:
    rc: int
    output: str
    wall_s: float
    cpu_s: float                      # ansible-playbook and everything it started
    counts: Dict[str, Any] = field(default_factory=dict)
    # Of cpu_s, what the commands run on the simulated nodes used (their modules' Python), which on a
    # real fleet runs on the nodes; measured under Ansible's own strategies only (None otherwise).
    node_cpu_s: Optional[float] = None

    @property
    def ansible_cpu_s(self) -> Optional[float]:
        """Of cpu_s, what the controller spent itself (ansible-playbook, its workers, the API host's
        modules): what a real controller pays."""
        return None if self.node_cpu_s is None else self.cpu_s - self.node_cpu_s

    def recap(self) -> Dict[str, Dict[str, int]]:
        recap: Dict[str, Dict[str, int]] = {}
        for host, counters in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", self.output, re.M):
            recap[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counters)}
        return recap

    @property
    def changed(self) -> int:
        return sum(c.get("changed", 0) for c in self.recap().values())

    @property
    def failed(self) -> int:
        return sum(c.get("failed", 0) + c.get("unreachable", 0) for c in self.recap().values())

    def module_runs(self, hosts: Sequence[str]) -> Dict[str, Any]:
        """Module runs per host (mean over ``hosts``) and the actions of a typical host."""
        modules = self.counts.get("modules", {})
        totals = [sum(modules.get(h, {}).values()) for h in hosts]
        sample = modules.get(hosts[0], {}) if hosts else {}
        return {
            "per_node": round(sum(totals) / len(totals), 2) if totals else None,
            "first_node_by_action": dict(sorted(sample.items(), key=lambda kv: (-kv[1], kv[0]))),
        }

    def task_rounds(self, hosts: Sequence[str]) -> Dict[str, Any]:
        """Task rounds per host (tasks that reached the host: ran, skipped or failed there; each one
        costs Ansible's per-host, per-task overhead): mean, least and most over ``hosts``, and the
        rounds of the host that had the fewest, the typical node of a no-op run."""
        rounds = self.counts.get("rounds", {})
        per_host = {h: len(rounds.get(h, [])) for h in hosts}
        if not per_host:
            return {"per_node": None}
        fewest = min(per_host, key=lambda h: (per_host[h], h))
        return {
            "per_node": round(sum(per_host.values()) / len(per_host), 2),
            "min": per_host[fewest],
            "max": max(per_host.values()),
            "fewest_node_tasks": rounds.get(fewest, []),
        }

    def slowest_tasks(self, count: int = 10) -> Dict[str, float]:
        """The tasks that took longest (play: task -> seconds, all hosts and passes together)."""
        walls = self.counts.get("task_wall_s", {})
        return {name: round(wall, 1) for name, wall in sorted(walls.items(), key=lambda kv: -kv[1])[:count]}

    def failures(self, count: int = 5) -> List[Dict[str, str]]:
        """The first ``count`` failed task results: task, host and message, so a size that stops says why."""
        found: List[Dict[str, str]] = []
        task = ""
        for line in self.output.splitlines():
            heading = re.match(r"^TASK \[(.*)\] \**$", line)
            if heading:
                task = heading.group(1)
                continue
            # "fatal: [host]: FAILED! => {...}", and per loop item "failed: [host] (item=...) => {...}".
            failed = re.match(r"^(?:fatal|failed): \[([^\]]+)\](?: \(item=.*?\))?(?:: (?:FAILED|UNREACHABLE)!)? => (.*)$", line)
            if failed:
                found.append({"task": task, "host": failed.group(1), "message": failure_message(failed.group(2))})
                if len(found) == count:
                    break
        if not found and self.rc != 0:
            found.append({"task": task, "host": "", "message": self.output.strip()[-500:]})
        return found

    def module_runs_by_action(self) -> Dict[str, int]:
        """Module runs of the whole run by action, whichever host ran them."""
        totals: Dict[str, int] = {}
        for counts in self.counts.get("modules", {}).values():
            for action, runs in counts.items():
                totals[action] = totals.get(action, 0) + runs
        return totals


def failure_message(result: str, limit: int = 500) -> str:
    """The ``msg`` of a failed result printed as JSON, or the text itself, cut to ``limit`` characters."""
    try:
        parsed = json.loads(result)
    except ValueError:
        parsed = None
    message = parsed.get("msg") if isinstance(parsed, dict) and parsed.get("msg") else result
    return str(message)[:limit]


def ansible_env(counts_file: Optional[Path] = None, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    })
    if counts_file is not None:
        env["ANSIBLE_CALLBACK_PLUGINS"] = str(CALLBACKS)
        env["ANSIBLE_CALLBACKS_ENABLED"] = "gpuops.nvidia.mig_rollout,bench_counts"
        env["BENCH_COUNTS_FILE"] = str(counts_file)
    env.update(extra or {})
    return env


def run_ansible(command: List[str], log: Path, counts_file: Optional[Path] = None, timeout: Optional[float] = None,
                env: Optional[Dict[str, str]] = None) -> AnsibleRun:
    """Run an ansible CLI from the repository root (its ansible.cfg resolves the collection)."""
    node_cpu_log = log.with_name("node-cpu.log")
    if node_cpu_log.exists():
        node_cpu_log.unlink()
    full_env = ansible_env(counts_file, dict(env or {}, GPUOPS_SIM_NODE_CPU_LOG=str(node_cpu_log)))
    with Stopwatch() as watch:
        # A session of its own, so a run past its budget is stopped with every worker it forked.
        proc = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            output = proc.communicate(timeout=timeout)[0]
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output = proc.communicate()[0]
            rc = -9
            output += f"\n[bench] stopped after the {timeout:.0f} s budget\n"
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n{output}\n")
    counts = {}
    if counts_file is not None and counts_file.exists():
        counts = json.loads(counts_file.read_text())
        counts_file.unlink()
    node_cpu_s = None
    if not (env or {}).get("ANSIBLE_STRATEGY", "").startswith("mitogen"):
        node_cpu_s = sum(float(line) for line in node_cpu_log.read_text().split()) if node_cpu_log.exists() else 0.0
    return AnsibleRun(rc=rc, output=output, wall_s=watch.wall, cpu_s=watch.cpu_children, counts=counts,
                      node_cpu_s=node_cpu_s)


def playbook(cluster: Cluster, name: str, extra_vars: Dict[str, Any], forks: int = 10, limit: Optional[str] = None,
             timeout: Optional[float] = None, count: bool = True, env: Optional[Dict[str, str]] = None,
             strategy: str = "linear") -> AnsibleRun:
    """Run one of the collection's playbooks (``name`` under playbooks/, or a path) on the cluster,
    under ``strategy`` (``linear``, Ansible's default, or ``mitogen_linear``)."""
    env = dict(strategy_env(strategy), **(env or {}))
    vars_file = cluster.directory / f"bench-vars-{time.monotonic_ns()}.yml"
    vars_file.write_text(yaml.safe_dump(extra_vars))
    path = Path(name) if Path(name).is_absolute() else ROOT / "playbooks" / name
    command = [str(BIN / "ansible-playbook"), "-i", str(cluster.inventory), str(path),
               "-e", f"@{vars_file}", "-f", str(forks)]
    if limit:
        command += ["--limit", limit]
    counts_file = cluster.directory / "bench-counts.json" if count else None
    return run_ansible(command, cluster.directory / "ansible.log", counts_file, timeout, env)


def ping(cluster: Cluster, forks: int, pattern: str = "gpu_nodes", strategy: str = "linear") -> AnsibleRun:
    command = [str(BIN / "ansible"), pattern, "-i", str(cluster.inventory), "-m", "ansible.builtin.ping", "-f", str(forks)]
    return run_ansible(command, cluster.directory / "ansible.log", env=strategy_env(strategy))


# Under a Mitogen strategy every simulated node has two interpreters on the controller (its own and
# Mitogen's fork parent beside it): 33 MB resident each on average, 38 MB at most, measured.
MITOGEN_BYTES_PER_NODE = 2 * 40 * 2**20


def memory_available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def strategy_does_not_fit(strategy: str, nodes: int) -> Optional[str]:
    """Why ``nodes`` simulated nodes cannot run under ``strategy`` on this machine, or None: under
    Mitogen their interpreters must fit in four fifths of the memory available now."""
    if not strategy.startswith("mitogen"):
        return None
    needed, available = nodes * MITOGEN_BYTES_PER_NODE, memory_available_bytes()
    if needed <= 0.8 * available:
        return None
    return (f"{nodes} simulated nodes under {strategy} need about {needed / 2**30:.0f} GiB for their interpreters "
            f"on this machine (on a real fleet they run on the nodes); {available / 2**30:.0f} GiB available")


def strategies() -> List[str]:
    """The strategies measured side by side: Ansible's default, and Mitogen's where it is installed
    (requirements-mitogen.txt, which `make venv` installs)."""
    try:
        mitogen_strategy_plugins()
    except ImportError:
        return ["linear"]
    return list(STRATEGIES)


def require_success(run: AnsibleRun, what: str) -> None:
    if run.rc != 0:
        raise BenchError(f"{what} failed (rc {run.rc}):\n{run.output[-4000:]}")


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll ``predicate`` until true (benchmark set-up only; the product never sleeps blindly)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def nodes_advertising(cluster: Cluster, resource: str, count: int) -> int:
    """How many GPU nodes advertise ``count`` of ``resource`` as allocatable."""
    items = cluster.get("/api/v1/nodes?labelSelector=nvidia.com%2Fgpu.present%3Dtrue")["items"]
    return sum(1 for n in items if str((n.get("status") or {}).get("allocatable", {}).get(resource)) == str(count))


def node_states(cluster: Cluster, config: str) -> Dict[str, int]:
    """GPU nodes labelled with ``config``, per nvidia.com/mig.config.state ("other-config" otherwise)."""
    items = cluster.get("/api/v1/nodes?labelSelector=nvidia.com%2Fgpu.present%3Dtrue")["items"]
    labels = [n["metadata"].get("labels") or {} for n in items]
    return dict(Counter(l.get("nvidia.com/mig.config.state", "") if l.get("nvidia.com/mig.config") == config
                        else "other-config" for l in labels))


def converge_by_construction(cluster: Cluster, strategy: str, config: str, resource: str, count: int,
                             extra_vars: Optional[Dict[str, Any]] = None) -> AnsibleRun:
    """Bring a cluster whose GPUs already hold ``config``'s layout to what a finished rollout leaves.

    A rollout pass over every node costs tens of controller CPU seconds per node on this machine,
    more than the benchmark budget allows at fleet sizes. So the set-up does what the pass would
    leave behind, with the collection's own device plugin role (deployed and switched on for every
    node) and the node labels that record the config. The measured runs then check that the
    product agrees (a no-op run must change nothing).
    """
    install = playbook(cluster, str(SETUP_PLAYBOOK), dict(extra_vars or {}, k8s_gpu_mig_strategy=strategy), count=False)
    require_success(install, "deploying the device plugin (benchmark set-up)")
    wait_until(lambda: nodes_advertising(cluster, resource, count) == len(cluster.nodes), 120 + len(cluster.nodes),
               f"{len(cluster.nodes)} nodes advertising {count} {resource}")
    for node in cluster.nodes:
        cluster.patch_node(node, {"metadata": {"labels": {"nvidia.com/mig.config": config,
                                                          "nvidia.com/mig.config.state": "success"}}})
    return install


def record_boot_layout(cluster: Cluster, config: str, forks: int = 10) -> AnsibleRun:
    """Leave on every node the boot-time service and record a finished rollout leaves.

    The collection's mig role writes them on the first node; the other nodes get a copy of that
    node's tree, with the node's own root in place of the first node's wherever a file names it
    (the unit's paths and the record's list of files lie under the node's root), which keeps a
    100-node set-up within the benchmark budget. The measured runs then check that the product
    agrees.
    """
    first = cluster.nodes[0]
    run = playbook(cluster, str(RECORD_PLAYBOOK), {"mig_config_name": config}, forks=forks, limit=first, count=False)
    require_success(run, "recording the layout with the mig role (benchmark set-up)")
    source = cluster.directory / "nodes" / f"{first}-root"
    naming = [path for path in source.rglob("*") if path.is_file() and os.fsencode(str(source)) in path.read_bytes()]
    for node in cluster.nodes[1:]:
        target = cluster.directory / "nodes" / f"{node}-root"
        shutil.copytree(source, target, dirs_exist_ok=True)
        for path in naming:
            copy = target / path.relative_to(source)
            copy.write_bytes(path.read_bytes().replace(os.fsencode(str(source)), os.fsencode(str(target))))
            shutil.copymode(path, copy)
    return run
