"""``python -m gpuops_sim cluster up|down|status|workload|fault``.

``up`` runs the emulator and the node agents in one process (in the foreground, or detached with
a pid file and a log in the cluster directory); the other commands talk to that process through
the Kubernetes API and the ``/_sim/`` control surface, and read the nodes' NVML state files.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from gpuops_sim.k8s import workload as manifests

PID_FILE = "cluster.pid"
LOG_FILE = "cluster.log"
DESCRIPTION_FILE = "cluster.json"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0

# plural kind → (API prefix, namespaced)
_PATHS = {
    "nodes": ("/api/v1", False), "namespaces": ("/api/v1", False), "pods": ("/api/v1", True),
    "configmaps": ("/api/v1", True), "daemonsets": ("/apis/apps/v1", True),
    "replicasets": ("/apis/apps/v1", True), "poddisruptionbudgets": ("/apis/policy/v1", True),
}


class RestApi:
    """Just enough of the Kubernetes REST API for the CLI (plain HTTP, JSON)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - local emulator URL
            text = response.read()
        return json.loads(text) if text else None

    def _path(self, kind: str, namespace: str | None, name: str | None = None) -> str:
        prefix, namespaced = _PATHS[kind]
        path = prefix + (f"/namespaces/{namespace}" if namespaced and namespace else "") + f"/{kind}"
        return path + (f"/{name}" if name else "")

    def list(self, kind: str) -> list[dict]:
        return self.request("GET", self._path(kind, None)).get("items", [])

    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        try:
            return self.request("GET", self._path(kind, namespace, name))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def create(self, kind: str, namespace: str | None, obj: dict) -> dict:
        return self.request("POST", self._path(kind, namespace), obj)


# --- helpers ----------------------------------------------------------------------------------

def _read_pid(directory: str) -> int | None:
    try:
        with open(os.path.join(directory, PID_FILE), encoding="utf-8") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            if handle.read().split(")")[-1].split()[0] == "Z":
                return False
    return True


def _description(directory: str) -> dict:
    path = os.path.join(directory, DESCRIPTION_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError:
        raise RuntimeError(f"dir: no running cluster in {directory} (no {DESCRIPTION_FILE}); run `cluster up`") from None


def _api(directory: str) -> RestApi:
    return RestApi(_description(directory)["url"])


def _pools(args: argparse.Namespace) -> list:
    from gpuops_sim.k8s.cluster import Pool, parse_nodes_spec, parse_pool  # pylint: disable=import-outside-toplevel
    if args.pool:
        return [parse_pool(p) for p in args.pool]
    if args.nodes_spec:
        return parse_nodes_spec(args.nodes_spec, args.gpus)
    if args.nodes < 0:
        raise ValueError(f"nodes: must be >= 0, got {args.nodes}")
    pool = Pool(name="default", count=args.nodes, model=args.model, gpus=args.gpus)
    return [parse_pool(f"{pool.name}:{pool.count}:{pool.model}:{pool.gpus}")]


def _options(args: argparse.Namespace):
    from gpuops_sim.k8s.agents import AgentSettings  # pylint: disable=import-outside-toplevel
    from gpuops_sim.k8s.cluster import ClusterOptions  # pylint: disable=import-outside-toplevel
    layout = []
    for item in args.mig_layout or []:
        profile, _colon, count = item.partition(":")
        layout += [profile] * int(count or 1)
    return ClusterOptions(
        pools=_pools(args), strategy=args.strategy, mig_enabled=args.mig_enabled or bool(layout), mig_layout=layout,
        control_plane=not args.no_control_plane, dcgm_exporter=args.dcgm_exporter,
        time_slicing_replicas=args.time_slicing_replicas, installed_by=args.installed_by,
        mig_parted_config=args.mig_parted_config, port=args.port, fresh=args.fresh,
        settings=AgentSettings(plugin_delay=args.plugin_delay, gfd_interval=args.gfd_interval))


# --- commands ---------------------------------------------------------------------------------

def _compile_nvml_simulator() -> None:
    """Write the bytecode of the NVML simulator, which every module run on a simulated node imports.

    An environment that turns bytecode writing off (PYTHONDONTWRITEBYTECODE) would otherwise have
    every module run compile the simulator's sources again; reading bytecode is never turned off.
    A package directory that cannot be written to keeps its sources as they are.
    """
    import gpuops_sim.nvml  # pylint: disable=import-outside-toplevel

    with contextlib.suppress(OSError):
        compileall.compile_dir(os.path.dirname(gpuops_sim.nvml.__file__), quiet=2)


def cmd_up(args: argparse.Namespace) -> int:
    directory = os.path.abspath(args.dir)
    os.makedirs(directory, exist_ok=True)
    options = _options(args)  # validate before anything starts
    pid = _read_pid(directory)
    if pid is not None and _alive(pid) and pid != os.getpid():
        raise RuntimeError(f"dir: a cluster is already running in {directory} (pid {pid}); run `cluster down` first")
    if args.detach:
        return _up_detached(directory, args)
    _compile_nvml_simulator()
    from gpuops_sim.k8s.cluster import Cluster  # pylint: disable=import-outside-toplevel
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, DESCRIPTION_FILE))
    cluster = Cluster(directory, options)
    cluster.start()
    try:
        with open(os.path.join(directory, PID_FILE), "w", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()}\n")
        print(f"cluster up: {len(cluster.nodes)} GPU nodes, API {cluster.url}", flush=True)
        print(f"  kubeconfig: {cluster.kubeconfig}\n  inventory:  {os.path.join(directory, 'inventory.yml')}",
              flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        cluster.stop()
        for name in (PID_FILE, DESCRIPTION_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
    return 0


def _up_detached(directory: str, args: argparse.Namespace) -> int:
    argv = _foreground_argv(args)
    for name in (DESCRIPTION_FILE, PID_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
    log = open(os.path.join(directory, LOG_FILE), "ab")  # noqa: SIM115 - handed to the child
    try:
        child = subprocess.Popen([sys.executable, "-m", "gpuops_sim", *argv], stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=directory)
    finally:
        log.close()
    with open(os.path.join(directory, PID_FILE), "w", encoding="utf-8") as handle:
        handle.write(f"{child.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"cluster failed to start (exit {child.returncode}); see {os.path.join(directory, LOG_FILE)}")
        with contextlib.suppress(RuntimeError, ValueError):
            description = _description(directory)
            if description.get("pid") == child.pid:
                print(f"cluster up (pid {child.pid}): {len(description['nodes'])} GPU nodes, API {description['url']}")
                print(f"  kubeconfig: {os.path.join(directory, 'kubeconfig')}\n"
                      f"  inventory:  {os.path.join(directory, 'inventory.yml')}")
                return 0
        time.sleep(0.1)
    child.kill()
    raise RuntimeError(f"cluster did not start within {START_TIMEOUT_S:.0f}s; see {os.path.join(directory, LOG_FILE)}")


def _foreground_argv(args: argparse.Namespace) -> list[str]:
    """The `cluster up` command line the detached child runs (the same options, no --detach)."""
    argv = ["cluster", "up", "--dir", os.path.abspath(args.dir), "--nodes", str(args.nodes), "--model", args.model,
            "--gpus", str(args.gpus), "--plugin-delay", str(args.plugin_delay), "--gfd-interval", str(args.gfd_interval),
            "--time-slicing-replicas", str(args.time_slicing_replicas), "--port", str(args.port)]
    if args.nodes_spec:
        argv += ["--nodes-spec", args.nodes_spec]
    for pool in args.pool or []:
        argv += ["--pool", pool]
    for item in args.mig_layout or []:
        argv += ["--mig-layout", item]
    if args.strategy:
        argv += ["--strategy", args.strategy, "--installed-by", args.installed_by]
    if args.mig_parted_config:
        argv += ["--mig-parted-config", args.mig_parted_config]
    for flag in ("dcgm_exporter", "mig_enabled", "no_control_plane", "fresh"):
        if getattr(args, flag):
            argv.append("--" + flag.replace("_", "-"))
    return argv


def cmd_down(args: argparse.Namespace) -> int:
    directory = os.path.abspath(args.dir)
    pid = _read_pid(directory)
    if pid is None or not _alive(pid):
        print(f"cluster down: nothing running in {directory}")
    else:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        print(f"cluster down: stopped pid {pid}")
    for name in (PID_FILE, DESCRIPTION_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
    return 0


def cmd_workload(args: argparse.Namespace) -> int:
    spec = manifests.WorkloadSpec(
        name=args.name, resource=args.resource, count=args.count, per_pod=args.per_pod, namespace=args.namespace,
        node=args.node, recreate=not args.no_recreate, pdb_min_available=args.pdb_min_available,
        pdb_max_unavailable=args.pdb_max_unavailable)
    objects = manifests.workload_objects(spec)  # validates
    api = _api(os.path.abspath(args.dir))
    if api.get("namespaces", None, spec.namespace) is None:
        api.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": spec.namespace}})
    for kind, obj in objects:
        api.create(kind, spec.namespace, obj)
        print(f"{kind}/{obj['metadata']['name']} created")
    return 0


def status_report(directory: str, api: Any, nvml_show: Any = None, pod_devices: Any = None) -> str:
    """The text `cluster status` prints. A pod's devices are what its node's kubelet lists on its
    PodResources socket (``pod_devices(node)`` → ``{(namespace, name): [device ids]}``)."""
    if pod_devices is None:
        from gpuops_sim.k8s.cluster import pod_resources_socket_for  # pylint: disable=import-outside-toplevel
        from gpuops_sim.k8s.podresources import read_device_ids  # pylint: disable=import-outside-toplevel
        socket_path = pod_resources_socket_for(directory)

        def pod_devices(node: str) -> dict:
            return read_device_ids(socket_path(node))
    if nvml_show is None:
        from gpuops_sim.nvml import show as nvml_show  # pylint: disable=import-outside-toplevel
    pods_by_node: dict[str, list[dict]] = {}
    for pod in api.list("pods"):
        pods_by_node.setdefault((pod.get("spec") or {}).get("nodeName") or "<pending>", []).append(pod)
    lines = []
    interesting = ("nvidia.com/gpu.deploy.", "nvidia.com/mig.config", "nvidia.com/gpu.product", "nvidia.com/mig.strategy",
                   "nvidia.com/device-plugin.config", "nvidia.com/gpu.count")
    for node in sorted(api.list("nodes"), key=lambda n: n["metadata"]["name"]):
        name = node["metadata"]["name"]
        spec = node.get("spec") or {}
        lines.append(f"{name}{'  (cordoned)' if spec.get('unschedulable') else ''}")
        path = os.path.join(directory, "nodes", f"{name}.json")
        if os.path.exists(path):
            for gpu in nvml_show(path)["gpus"]:
                mig = gpu["mig"]
                profiles = [gi["profile"] for gi in gpu["gpu_instances"]]
                mode = "on" if mig["current"] else "off"
                if mig["pending"] != mig["current"]:
                    mode += f" (pending {'on' if mig['pending'] else 'off'})"
                lines.append(f"  gpu {gpu['index']}: MIG {mode} {' '.join(profiles) or '-'}"
                             f"{'  processes: ' + str(len(gpu['processes'])) if gpu['processes'] else ''}")
        allocatable = {k: v for k, v in ((node.get("status") or {}).get("allocatable") or {}).items()
                       if k.startswith("nvidia.com/")}
        lines.append(f"  allocatable: {', '.join(f'{k}={v}' for k, v in sorted(allocatable.items())) or '-'}")
        taints = [f"{t.get('key')}={t.get('value', '')}:{t.get('effect')}" for t in spec.get("taints") or []]
        lines.append(f"  taints: {', '.join(taints) or '-'}")
        labels = {k: v for k, v in (node["metadata"].get("labels") or {}).items() if k.startswith(interesting)}
        lines.append(f"  labels: {', '.join(f'{k}={v}' for k, v in sorted(labels.items())) or '-'}")
        held = pod_devices(name) if pods_by_node.get(name) else {}
        for pod in sorted(pods_by_node.get(name, []), key=lambda p: p["metadata"]["name"]):
            devices = ",".join(held.get((pod["metadata"].get("namespace"), pod["metadata"]["name"]), []))
            phase = (pod.get("status") or {}).get("phase", "Pending")
            lines.append(f"  pod {pod['metadata'].get('namespace')}/{pod['metadata']['name']} {phase}"
                         f"{'  devices: ' + devices if devices else ''}")
    for pod in pods_by_node.get("<pending>", []):
        lines.append(f"pending pod {pod['metadata'].get('namespace')}/{pod['metadata']['name']}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    directory = os.path.abspath(args.dir)
    print(status_report(directory, _api(directory)))
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    api = _api(os.path.abspath(args.dir))
    if args.clear:
        api.request("DELETE", "/_sim/faults")
        print("faults cleared")
        return 0
    fault = {k: v for k, v in {"verb": args.verb, "resource": args.resource, "subresource": args.subresource,
                               "name": args.name, "status": args.status, "count": args.count,
                               "latency_ms": args.latency_ms, "drop_watch": args.drop_watch or None}.items()
             if v is not None}
    if not {"verb", "resource", "subresource", "name"} & set(fault):
        raise ValueError("fault: give at least one of --verb, --resource, --subresource, --name")
    print(json.dumps(api.request("POST", "/_sim/faults", fault)))
    return 0


# --- parser -----------------------------------------------------------------------------------

def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("cluster", help="a simulated GPU Kubernetes cluster",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cluster_command", required=True)

    up = sub.add_parser("up", help="start the emulator and node agents")
    up.add_argument("--dir", required=True, help="cluster directory (kubeconfig, inventory, node state)")
    up.add_argument("--nodes", type=int, default=2, help="GPU nodes (single pool)")
    up.add_argument("--model", default="A100-40GB", help="GPU model of the single pool")
    up.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    up.add_argument("--nodes-spec", help="MODEL:COUNT,MODEL:COUNT (mixed models, --gpus each)")
    up.add_argument("--pool", action="append", help="NAME:COUNT:MODEL:GPUS (repeatable)")
    up.add_argument("--strategy", choices=("none", "single", "mixed"),
                    help="create the device plugin and GFD DaemonSets with this MIG strategy")
    up.add_argument("--installed-by", choices=("plain", "helm", "gpu-operator"), default="plain",
                    help="with --strategy: who installed the DaemonSets: plain objects in namespace gpu-operator, "
                         "NVIDIA's helm chart (release nvdp in its own namespace), or the GPU Operator "
                         "(ClusterPolicy, operands, and a MIG manager that writes nvidia.com/mig.config back)")
    up.add_argument("--mig-parted-config", metavar="NAME",
                    help="NVIDIA DeepOps' mig-parted service on every GPU node, applying this named config at boot")
    up.add_argument("--time-slicing-replicas", type=int, default=1, help="with --strategy: nvidia.com/gpu replicas")
    up.add_argument("--dcgm-exporter", action="store_true", help="with --strategy: also the DCGM exporter")
    up.add_argument("--mig-enabled", action="store_true", help="GPUs start with MIG enabled")
    up.add_argument("--mig-layout", action="append", metavar="PROFILE:COUNT",
                    help="create these GPU instances on every GPU (implies --mig-enabled)")
    up.add_argument("--plugin-delay", type=float, default=1.0, help="device plugin / GFD start-up delay (s)")
    up.add_argument("--gfd-interval", type=float, default=60.0, help="GFD relabel interval (s)")
    up.add_argument("--no-control-plane", action="store_true", help="no control-plane node")
    up.add_argument("--fresh", action="store_true",
                    help="GPU nodes as on a fresh cluster: no driver, a Python without libraries, an unprivileged login")
    up.add_argument("--port", type=int, default=0, help="API port (default: any free port)")
    up.add_argument("--detach", action="store_true", help="run in the background (pid file and log in DIR)")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop a cluster started with up (idempotent)")
    down.add_argument("--dir", required=True)
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="MIG layout, allocatable, taints, labels and pods per node")
    status.add_argument("--dir", required=True)
    status.set_defaults(func=cmd_status)

    work = sub.add_parser("workload", help="create GPU pods (a ReplicaSet unless --no-recreate) and a PDB")
    work.add_argument("--dir", required=True)
    work.add_argument("--name", required=True)
    work.add_argument("--resource", required=True, help="e.g. nvidia.com/mig-1g.5gb")
    work.add_argument("--count", type=int, required=True, help="pods")
    work.add_argument("--per-pod", type=int, default=1, help="devices per pod")
    work.add_argument("--node", help="pin the pods to this node")
    work.add_argument("--namespace", default="default")
    work.add_argument("--no-recreate", action="store_true", help="bare pods: evicted pods are not re-created")
    budget = work.add_mutually_exclusive_group()
    budget.add_argument("--pdb-min-available")
    budget.add_argument("--pdb-max-unavailable")
    work.set_defaults(func=cmd_workload)

    fault = sub.add_parser("fault", help="inject API faults (POST /_sim/faults)")
    fault.add_argument("--dir", required=True)
    fault.add_argument("--verb")
    fault.add_argument("--resource")
    fault.add_argument("--subresource")
    fault.add_argument("--name")
    fault.add_argument("--status", type=int)
    fault.add_argument("--count", type=int)
    fault.add_argument("--latency-ms", type=int)
    fault.add_argument("--drop-watch", action="store_true")
    fault.add_argument("--clear", action="store_true", help="remove every fault")
    fault.set_defaults(func=cmd_fault)
