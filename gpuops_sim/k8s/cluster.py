"""A simulated GPU cluster in one process: the API emulator, node agents and per-node NVML state.

``Cluster`` is the in-process API (tests, bench); ``cli.py`` wraps it as ``python -m gpuops_sim
cluster up|down|status|workload|fault``. Layout of a cluster directory:

    DIR/kubeconfig          points at the emulator
    DIR/inventory.yml       Ansible inventory: kube_control_plane + gpu_nodes (all on this machine)
    DIR/nodes/<node>.json   NVML and host state of each GPU node
    DIR/nodes/<node>-root/  the node's root directory (installed units, boot id, journal)
    DIR/kubelet/<node>.sock the node's kubelet PodResources socket (a unix socket path holds
                            107 bytes: under a long DIR, DIR/kubelet links to a short
                            directory of the cluster's own in the system's temporary directory)
    DIR/cluster.json        what `up` created (pools, url, options)
    DIR/cluster.pid, DIR/cluster.log   when detached
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import tempfile
from typing import Any, Iterable

import yaml

from gpuops_sim.k8s import workload as manifests
from gpuops_sim.k8s.agents import AgentSettings, Agents, ClusterApi, nvml_api
from gpuops_sim.node import systemd

CONTROLLER_HOST = "controller"
NODE_PREFIX = "gpu-node-"
_POOL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class Pool:
    """Nodes of one GPU model."""

    name: str
    count: int
    model: str
    gpus: int

    @property
    def instance_type(self) -> str:
        return f"sim-{self.model.lower().replace(' ', '-')}-x{self.gpus}"


def parse_pool(text: str) -> Pool:
    """``NAME:COUNT:MODEL:GPUS`` (``--pool``)."""
    parts = text.split(":")
    if len(parts) != 4:
        raise ValueError(f"pool: {text!r} is not NAME:COUNT:MODEL:GPUS")
    name, count, model, gpus = parts
    if not _POOL_RE.match(name):
        raise ValueError(f"pool: name {name!r} must be a DNS label")
    return _pool(name, count, model, gpus, text)


def parse_nodes_spec(text: str, gpus: int) -> list[Pool]:
    """``MODEL:COUNT,MODEL:COUNT`` (``--nodes-spec``); every node gets ``gpus`` GPUs."""
    pools = []
    for i, item in enumerate(p for p in text.split(",") if p.strip()):
        model, _colon, count = item.strip().rpartition(":")
        if not model:
            raise ValueError(f"nodes-spec: {item!r} is not MODEL:COUNT")
        pools.append(_pool(f"pool{i}", count, model, str(gpus), item))
    if not pools:
        raise ValueError("nodes-spec: empty")
    return pools


def _pool(name: str, count: str, model: str, gpus: str, text: str) -> Pool:
    try:
        pool = Pool(name=name, count=int(count), model=model, gpus=int(gpus))
    except ValueError:
        raise ValueError(f"pool: {text!r}: COUNT and GPUS must be integers") from None
    if pool.count < 0 or pool.gpus < 1:
        raise ValueError(f"pool: {text!r}: COUNT must be >= 0 and GPUS >= 1")
    _model(model)
    return pool


def _model(name: str) -> Any:
    from gpuops_sim.nvml.models import find_model  # pylint: disable=import-outside-toplevel
    return find_model(name)


def node_names(pools: Iterable[Pool]) -> list[tuple[str, Pool]]:
    names = []
    for pool in pools:
        for _index in range(pool.count):
            names.append((f"{NODE_PREFIX}{len(names) + 1}", pool))
    return names


def layout_node(path: str, profiles: list[str], gpus: Iterable[int] | None = None) -> None:
    """Enable MIG and create the GPU instances ``profiles`` (each with its full compute instance)
    on the given GPUs (default all), replacing what was there. For tests and demos only: the
    product creates instances through NVML."""
    from gpuops_sim.nvml import mig, models, state  # pylint: disable=import-outside-toplevel
    with state.transaction(path) as node:
        for gpu in node["gpus"]:
            if gpus is not None and gpu["index"] not in set(gpus):
                continue
            model = mig.model_of(gpu)
            gpu["gpu_instances"] = []
            gpu["mig_current"] = gpu["mig_pending"] = bool(profiles)
            for name in profiles:
                profile = next((p for p in model.gi_profiles if p.name == name), None)
                if profile is None:
                    raise ValueError(f"profile: {model.name} has no MIG profile {name!r}")
                gi = mig.create_gpu_instance(node, gpu, profile.id)
                mig.create_compute_instance(node, gpu, gi, models.CI_PROFILE_BY_SLICES[profile.slice_count])


# Room left for "<node name>.sock" under the sockets' directory within a unix socket path's 107 bytes.
SOCKETS_DIR_MAX = 64


def pod_resources_sockets_dir(directory: str) -> str:
    """Where the nodes' kubelets keep their PodResources sockets: DIR/kubelet, or, when that path is
    too long to leave room for a node's name in a unix socket path (pytest's temporary directories
    are), a short directory of the cluster's own under the system's temporary directory, which
    DIR/kubelet then links to."""
    sockets_dir = os.path.join(os.path.abspath(directory), "kubelet")
    if len(os.fsencode(sockets_dir)) <= SOCKETS_DIR_MAX:
        return sockets_dir
    digest = hashlib.sha256(os.fsencode(os.path.abspath(directory))).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"gpuops-kubelet-{digest}")


def pod_resources_socket_for(directory: str):
    sockets_dir = pod_resources_sockets_dir(directory)

    def socket_path(node: str) -> str:
        return os.path.join(sockets_dir, f"{node}.sock")
    return socket_path


def make_pod_resources_sockets_dir(directory: str) -> None:
    sockets_dir = pod_resources_sockets_dir(directory)
    os.makedirs(sockets_dir, exist_ok=True)
    link = os.path.join(os.path.abspath(directory), "kubelet")
    if sockets_dir != link and not os.path.lexists(link):
        os.symlink(sockets_dir, link)


def state_path_for(directory: str):
    nodes_dir = os.path.join(directory, "nodes")

    def state_path(node: str) -> str | None:
        path = os.path.join(nodes_dir, f"{node}.json")
        return path if os.path.exists(path) else None
    return state_path


# --- inventory --------------------------------------------------------------------------------

def nvml_bin_dir() -> str:
    """Where the simulated ``nvidia-smi`` lives."""
    import gpuops_sim.nvml  # pylint: disable=import-outside-toplevel
    return os.path.join(os.path.dirname(os.path.abspath(gpuops_sim.nvml.__file__)), "bin")


def connection_plugin_dir() -> str:
    """Where the simulator's connection plugin (gpuops_sim_node) lives: ANSIBLE_CONNECTION_PLUGINS
    outside the clone (the clone's ansible.cfg names it already)."""
    import gpuops_sim.ansible_plugins  # pylint: disable=import-outside-toplevel
    return os.path.join(os.path.dirname(os.path.abspath(gpuops_sim.ansible_plugins.__file__)), "connection")


def node_root(directory: str, node: str) -> str:
    """The simulated node's root directory: what a role installs under / on a real node."""
    return os.path.join(os.path.abspath(directory), "nodes", f"{node}-root")


# A fresh node (``cluster up --fresh``): what a GPU node of a fresh kubeadm cluster is before the
# collection's first run. No driver (NVML cannot be loaded, no nvidia-smi), a base interpreter without
# third-party libraries, and an unprivileged login user that may sudo.
FRESH_NODE_USER = "gpuops"
FRESH_DRIVER_VERSION = "570.86.15"


def simulator_path() -> str:
    """The directory holding the gpuops_sim package: what a node's Python needs on its path to load the
    simulated libnvidia-ml (as a real node's pynvml loads libnvidia-ml.so.1 from the driver)."""
    import gpuops_sim  # pylint: disable=import-outside-toplevel
    return os.path.dirname(os.path.dirname(os.path.abspath(gpuops_sim.__file__)))


def fresh_node_environment(state: str, root: str, path_env: str) -> dict[str, str]:
    """What a process on a fresh node sees: its NVML state, its own /usr/bin first on PATH (the base
    commands, and nvidia-smi once a driver is installed), and the simulated libnvidia-ml."""
    return {"GPUOPS_NVML_SIMULATOR": state, "PATH": os.pathsep.join([os.path.join(root, "usr", "bin"), path_env]),
            "PYTHONPATH": simulator_path()}


def make_fresh_node(root: str) -> str:
    """The node's base system under its root: a Python without third-party libraries at
    <root>/usr/bin/python3 (a virtual environment of the controller's base interpreter, without pip),
    and the simulated systemctl and lsmod in <root>/usr/bin. Returns the interpreter."""
    import venv  # pylint: disable=import-outside-toplevel
    usr = os.path.join(root, "usr")
    python = os.path.join(usr, "bin", "python3")
    if not os.path.exists(python):
        venv.EnvBuilder(with_pip=False, symlinks=True).create(usr)
    for name in ("systemctl", "lsmod"):
        target = os.path.join(usr, "bin", name)
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(f"#!/bin/sh\nexec {sys.executable} {os.path.join(nvml_bin_dir(), name)} \"$@\"\n")
        os.chmod(target, 0o755)
    return python


def fresh_node_vars(directory: str, state: str, root: str, python: str) -> dict:
    """The settings a site gives such nodes, for a node of the simulator: the node's own Python and the
    environment node_prepare makes from it, an unprivileged login (the playbooks become root), and the
    site's own driver installer, here the simulator's (``nvml driver --install``)."""
    venv_python = f"{root}/opt/gpuops/venv/bin/python"
    return {
        "ansible_user": FRESH_NODE_USER,
        "ansible_python_interpreter": f"{root}/usr/bin/python3",
        "gpuops_environment": fresh_node_environment(state, root, os.environ.get("PATH", "")),
        "node_prepare_python": f"{root}/usr/bin/python3",
        "node_prepare_venv": f"{root}/opt/gpuops/venv",
        "node_prepare_wheel_dest": f"{root}/opt/gpuops/wheels",
        # The node image has python3-venv; the simulator installs no distribution packages.
        "node_prepare_distribution_packages": {},
        "mig_boot_python": venv_python,
        "nvidia_driver_install": True,
        "nvidia_driver_branch": FRESH_DRIVER_VERSION.split(".", maxsplit=1)[0],
        "nvidia_driver_version": FRESH_DRIVER_VERSION,
        # The site's own installer (as NVIDIA's .run installer would be): stages the driver, which
        # the next reboot loads.
        "nvidia_driver_install_command": [python, "-m", "gpuops_sim", "nvml", "driver", "--state", state,
                                          "--install", "{version}"],
    }


def inventory(directory: str, nodes: list[str], python: str | None = None, path_env: str | None = None,
              fresh: bool = False) -> dict:
    """The cluster's inventory. What every GPU node shares is written once, in ``gpu_nodes.vars``,
    templated on the host's name where it differs, as an operator's group_vars would: the controller
    holds each host's own variables for the whole run, and a fleet pays for them on every task.

    Every setting is one a real site also uses: the driver and the container toolkit come with the
    node image (``nvidia_driver_install: false``, ``nvidia_container_toolkit_install: false``), and
    the node reboots through ansible.builtin.reboot with a reboot and a boot-id command of its own,
    as on a site with its own reboot tooling."""
    directory = os.path.abspath(directory)
    python = python or sys.executable
    search_path = os.pathsep.join([nvml_bin_dir(), path_env if path_env is not None else os.environ.get("PATH", "")])
    state = os.path.join(directory, "nodes", "{{ inventory_hostname }}.json")
    root = node_root(directory, "{{ inventory_hostname }}")
    node_vars = {
        # Commands run on the controller, under a transport of the simulator's own (not `local`, which
        # ansible.builtin.reboot refuses: it would reboot the controller).
        "ansible_connection": "gpuops_sim_node",
        "ansible_python_interpreter": python,
        "k8s_node_name": "{{ inventory_hostname }}",
        "gpuops_environment": {"GPUOPS_NVML_SIMULATOR": state, "PATH": search_path},
        # The node image ships the driver and a configured container runtime.
        "nvidia_driver_install": False,
        "nvidia_container_toolkit_install": False,
        # The node's files (the MIG boot service) go to its own root directory.
        "mig_boot_root": root,
        "mig_boot_python": python,
        # Where this node's kubelet serves the PodResources API, set as a site whose kubelets keep
        # their root directory elsewhere would set it.
        "kubelet_pod_resources_socket": pod_resources_socket_for(directory)("{{ inventory_hostname }}"),
        # The node's reboot: its pods die, its GPUs reboot, its boot units run, its kubelet returns.
        "mig_reconfigure_reboot_command": f"{python} -m gpuops_sim node reboot --quiet --state {state}",
        "mig_reconfigure_boot_time_command": f"cat {root}/proc/sys/kernel/random/boot_id",
        "mig_reconfigure_reboot_search_paths": [os.path.dirname(python)],
        # The same for the driver role's reboot handler, where a site lets it reboot.
        "nvidia_driver_reboot_command": f"{python} -m gpuops_sim node reboot --quiet --state {state}",
        "nvidia_driver_boot_time_command": f"cat {root}/proc/sys/kernel/random/boot_id",
        "nvidia_driver_reboot_search_paths": [os.path.dirname(python)],
    }
    if fresh:
        node_vars.update(fresh_node_vars(directory, state, root, python))
    return {"all": {
        "vars": {"k8s_kubeconfig": os.path.join(directory, "kubeconfig"),
                 # The simulated GFD models every label, so the rollout cross-checks them all.
                 "mig_reconfigure_wait_labels": "all"},
        "children": {
            "kube_control_plane": {"hosts": {CONTROLLER_HOST: {"ansible_connection": "local",
                                                               "ansible_python_interpreter": python}}},
            "gpu_nodes": {"vars": node_vars, "hosts": {node: None for node in nodes}},
        },
    }}


def write_inventory(directory: str, nodes: list[str], fresh: bool = False) -> str:
    path = os.path.join(directory, "inventory.yml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("# Written by `python -m gpuops_sim cluster up`: every host runs locally against the simulator.\n")
        yaml.safe_dump(inventory(directory, nodes, fresh=fresh), handle, sort_keys=False, default_flow_style=False)
    return path


# --- the running cluster ----------------------------------------------------------------------

@dataclasses.dataclass
class ClusterOptions:
    pools: list[Pool]
    strategy: str | None = None  # create the NVIDIA DaemonSets up front with this MIG strategy
    mig_enabled: bool = False
    mig_layout: list[str] = dataclasses.field(default_factory=list)
    control_plane: bool = True
    dcgm_exporter: bool = False
    time_slicing_replicas: int = 1
    # Who installed the NVIDIA DaemonSets of ``strategy``: "plain" (objects of no release, in
    # namespace gpu-operator), "helm" (NVIDIA's chart, a release in its own namespace) or
    # "gpu-operator" (a ClusterPolicy and its operands, with the operator's MIG manager).
    installed_by: str = "plain"
    # The named config of NVIDIA DeepOps' mig-parted service on every GPU node (None: no service).
    mig_parted_config: str | None = None
    port: int = 0
    # GPU nodes as on a fresh cluster: no driver, a bare Python, an unprivileged login (see fresh_node_vars).
    fresh: bool = False
    settings: AgentSettings = dataclasses.field(default_factory=AgentSettings)

    def validate(self) -> None:
        if self.strategy is not None and self.strategy not in ("none", "single", "mixed"):
            raise ValueError(f"strategy: {self.strategy!r} is not one of none, single, mixed")
        if self.installed_by not in ("plain", "helm", "gpu-operator"):
            raise ValueError(f"installed_by: {self.installed_by!r} is not one of plain, helm, gpu-operator")
        if self.installed_by != "plain" and self.strategy is None:
            raise ValueError(f"installed_by: {self.installed_by!r} needs a strategy")
        if self.settings.plugin_delay < 0:
            raise ValueError(f"plugin_delay: must be >= 0, got {self.settings.plugin_delay}")
        if self.settings.gfd_interval <= 0:
            raise ValueError(f"gfd_interval: must be > 0, got {self.settings.gfd_interval}")


class Cluster:
    """Emulator + agents + node state, for one cluster directory."""

    def __init__(self, directory: str, options: ClusterOptions) -> None:
        options.validate()
        self.directory = os.path.abspath(directory)
        self.options = options
        self.emulator: Any = None
        self.api: ClusterApi | None = None
        self.agents: Agents | None = None
        self.nodes: list[str] = []
        self.mig_manager: Any = None
        self.gpu_operator: Any = None

    @property
    def url(self) -> str:
        return self.emulator.url

    @property
    def kubeconfig(self) -> str:
        return os.path.join(self.directory, "kubeconfig")

    def state_path(self, node: str) -> str:
        return os.path.join(self.directory, "nodes", f"{node}.json")

    def start(self) -> "Cluster":
        from gpuops_sim.k8s.agents_api import StoreApi  # pylint: disable=import-outside-toplevel
        from gpuops_sim.k8s import Emulator  # pylint: disable=import-outside-toplevel
        os.makedirs(os.path.join(self.directory, "nodes"), exist_ok=True)
        self.emulator = Emulator(port=self.options.port) if self.options.port else Emulator()
        self.emulator.start()
        self.emulator.write_kubeconfig(self.kubeconfig)
        self.api = StoreApi(self.emulator)
        self._populate()
        from gpuops_sim.k8s.podresources import check_socket_path  # pylint: disable=import-outside-toplevel
        make_pod_resources_sockets_dir(self.directory)
        nodes = [node["metadata"]["name"] for node in self.api.list("nodes")]
        for node in nodes:  # fail here, naming the path, rather than in a kubelet thread
            check_socket_path(pod_resources_socket_for(self.directory)(node))
        self.agents = Agents(self.api, state_path_for(self.directory), self.options.settings,
                             pod_resources_socket=pod_resources_socket_for(self.directory),
                             node_root=lambda node: node_root(self.directory, node))
        self.agents.start()
        if self.options.installed_by == "gpu-operator":
            from gpuops_sim.k8s import brownfield  # pylint: disable=import-outside-toplevel
            self.mig_manager = brownfield.OperatorMigManager(self.api, {node: "all-disabled" for node in self.nodes})
            self.mig_manager.start()
        else:
            # Idle until a ClusterPolicy and the operator's Deployment exist (the chart creates them).
            from gpuops_sim.k8s.gpu_operator import GpuOperator  # pylint: disable=import-outside-toplevel
            self.gpu_operator = GpuOperator(self.api, state_path_for(self.directory))
            self.gpu_operator.start()
        write_inventory(self.directory, self.nodes, fresh=self.options.fresh)
        self._write_description()
        return self

    def stop(self) -> None:
        if self.mig_manager is not None:
            self.mig_manager.stop()
            self.mig_manager = None
        if self.gpu_operator is not None:
            self.gpu_operator.stop()
            self.gpu_operator = None
        if self.agents is not None:
            self.agents.stop()
            self.agents = None
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _populate(self) -> None:
        nvml = nvml_api()
        api = self.api
        assert api is not None
        if self.options.control_plane:
            api.create("nodes", None, manifests.node_manifest("control-plane-1", "sim-cpu", gpu=False,
                                                              control_plane=True))
        for name, pool in node_names(self.options.pools):
            path = self.state_path(name)
            driver = {"driver_version": None} if self.options.fresh else {}
            nvml.init_node(path, pool.model, pool.gpus, mig_enabled=self.options.mig_enabled, node_name=name, **driver)
            systemd.set_host(path, node_root(self.directory, name), kubeconfig=self.kubeconfig, node=name)
            if self.options.fresh:
                make_fresh_node(node_root(self.directory, name))
            if self.options.mig_layout:
                layout_node(path, self.options.mig_layout)
            if self.options.mig_parted_config:
                self.install_mig_parted(name, self.options.mig_parted_config)
            node = manifests.node_manifest(name, pool.instance_type, deploy_labels=self.options.strategy is not None)
            node["metadata"]["labels"]["gpuops.io/sim-pool"] = pool.name
            if self.options.installed_by == "helm":  # the chart selects GPU nodes by gpu.present alone
                for key in list(node["metadata"]["labels"]):
                    if key.startswith(manifests.DEPLOY_LABEL):
                        del node["metadata"]["labels"][key]
            if self.options.installed_by == "gpu-operator":
                from gpuops_sim.k8s import brownfield  # pylint: disable=import-outside-toplevel
                labels = brownfield.operator_node_labels("all-disabled")
                node["metadata"]["labels"].update(labels["labels"])
                node["metadata"]["managedFields"] = labels["managedFields"]
            api.create("nodes", None, node)
            self.nodes.append(name)
        if self.options.strategy is None:
            return
        if self.options.installed_by == "helm":
            self.install_helm_device_plugin(self.options.strategy, self.options.time_slicing_replicas)
        elif self.options.installed_by == "gpu-operator":
            self.install_gpu_operator(self.options.strategy)
        else:
            self.install_nvidia_daemons(self.options.strategy, self.options.time_slicing_replicas)

    def _namespace(self, namespace: str) -> None:
        api = self.api
        assert api is not None
        if api.get("namespaces", None, namespace) is None:
            api.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})

    def install_helm_device_plugin(self, strategy: str, replicas: int = 1) -> None:
        """NVIDIA's nvidia-device-plugin chart, installed with helm as release nvdp in its own namespace."""
        from gpuops_sim.k8s import brownfield  # pylint: disable=import-outside-toplevel
        assert self.api is not None
        self._namespace(brownfield.HELM_NAMESPACE)
        for kind, obj in brownfield.helm_device_plugin(strategy, replicas):
            self.api.create(kind, brownfield.HELM_NAMESPACE, obj)
        # The chart's node-feature-discovery subchart, on with GFD: GFD's labels reach nodes through it.
        self.install_nfd(brownfield.HELM_NAMESPACE)

    def install_gpu_operator(self, strategy: str) -> None:
        """The GPU Operator with preinstalled drivers: its CRD, ClusterPolicy, Deployment and operands."""
        from gpuops_sim.k8s import brownfield  # pylint: disable=import-outside-toplevel
        api = self.api
        assert api is not None
        namespace = manifests.GPU_OPERATOR_NAMESPACE
        self._namespace(namespace)
        api.create("customresourcedefinitions", None, brownfield.CLUSTER_POLICY_CRD)
        policy = api.create("clusterpolicies", None, brownfield.cluster_policy(strategy, namespace))
        for kind, obj in brownfield.operator_objects(strategy, policy["metadata"]["uid"], namespace):
            api.create(kind, namespace, obj)
        # The operator chart's node-feature-discovery subchart (nfd.enabled, on by default).
        self.install_nfd(namespace)

    def install_mig_parted(self, node: str, config: str) -> None:
        """NVIDIA DeepOps' mig-parted service on the node, enabled, and the geometry it applied."""
        from gpuops_sim.k8s import brownfield  # pylint: disable=import-outside-toplevel
        path = self.state_path(node)
        brownfield.install_mig_parted(node_root(self.directory, node),
                                      brownfield.mig_parted_unit(config, sys.executable, path))
        brownfield.apply_named_config(path, config)
        # It ran at this boot (oneshot, RemainAfterExit): active until stopped.
        systemd.set_unit_state(path, brownfield.MIG_PARTED_UNIT, active="active", result="success", exit_code=0)

    def install_nvidia_daemons(self, strategy: str, replicas: int = 1, dcgm: bool | None = None,
                               namespace: str = manifests.GPU_OPERATOR_NAMESPACE) -> None:
        """What the collection's install roles would create: plugin config, plugin and GFD DaemonSets,
        and Node Feature Discovery, which publishes GFD's labels (a cluster with GFD has it)."""
        api = self.api
        assert api is not None
        self.install_nfd()
        if api.get("namespaces", None, namespace) is None:
            api.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        api.create("configmaps", namespace, manifests.plugin_config_map(
            {"default": manifests.plugin_config(strategy, replicas)}, namespace))
        api.create("daemonsets", namespace, manifests.device_plugin_daemonset(namespace))
        api.create("daemonsets", namespace, manifests.gfd_daemonset(namespace))
        if dcgm if dcgm is not None else self.options.dcgm_exporter:
            api.create("daemonsets", namespace, manifests.dcgm_exporter_daemonset(namespace))

    def install_nfd(self, namespace: str = manifests.NFD_NAMESPACE) -> None:
        """Node Feature Discovery (its CRDs, worker DaemonSet and master Deployment), unless the cluster has it."""
        api = self.api
        assert api is not None
        if api.get("customresourcedefinitions", None, "nodefeatures.nfd.k8s-sigs.io") is not None:
            return
        for kind, obj in manifests.nfd_objects(namespace):
            if kind == "namespaces" and api.get("namespaces", None, obj["metadata"]["name"]) is not None:
                continue  # a chart's subchart shares its release's namespace
            api.create(kind, obj["metadata"].get("namespace"), obj)

    def create_workload(self, spec: manifests.WorkloadSpec) -> list[str]:
        api = self.api
        assert api is not None
        created = []
        if api.get("namespaces", None, spec.namespace) is None:
            api.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": spec.namespace}})
        for kind, obj in manifests.workload_objects(spec):
            api.create(kind, spec.namespace, obj)
            created.append(f"{kind}/{obj['metadata']['name']}")
        return created

    def _write_description(self) -> None:
        description = {"url": self.url, "nodes": self.nodes, "pid": os.getpid(),
                       "pools": [dataclasses.asdict(p) for p in self.options.pools],
                       "strategy": self.options.strategy, "installed_by": self.options.installed_by,
                       "mig_parted_config": self.options.mig_parted_config, "fresh": self.options.fresh}
        with open(os.path.join(self.directory, "cluster.json"), "w", encoding="utf-8") as handle:
            json.dump(description, handle, indent=1)
