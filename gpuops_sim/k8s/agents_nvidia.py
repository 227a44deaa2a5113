"""What NVIDIA's node daemons would publish, computed from a node's NVML state.

Pure functions: the device plugin's inventory (resources and device ids), GPU feature
discovery's labels, the plugin configuration a pod would load and which daemon a container is.
The agents in ``agents.py`` call them; they never touch the API or the state file themselves.

This is the simulator's own model of the daemons, written from their documented behaviour; the
collection's expectations (``plugins/module_utils/mig/resources.py``) are written independently so
that the integration tests cross-check the two.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import yaml

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
CONFIG_LABEL = "nvidia.com/device-plugin.config"
STRATEGIES = ("none", "single", "mixed")

ROLE_DEVICE_PLUGIN = "device-plugin"
ROLE_GFD = "gpu-feature-discovery"
ROLE_DCGM_EXPORTER = "dcgm-exporter"

# Labels under nvidia.com/ that GPU feature discovery does NOT own: set by people, the GPU
# Operator or the rollout. GFD never removes these.
_FOREIGN_LABELS = ("nvidia.com/gpu.present", "nvidia.com/gpu.deploy.", "nvidia.com/mig.config",
                   "nvidia.com/device-plugin.config", "nvidia.com/gpu.workload.config")

# CUDA compute capability by marketing name fragment, longest fragment first. The simulator's
# NVML state does not carry it; GFD derives gpu.family / gpu.compute.* from it.
_COMPUTE_CAPABILITY = (
    ("GH200", (9, 0)), ("GB200", (10, 0)), ("B200", (10, 0)), ("B100", (10, 0)),
    ("H100", (9, 0)), ("H200", (9, 0)), ("H800", (9, 0)), ("H20", (9, 0)),
    ("A100", (8, 0)), ("A800", (8, 0)), ("A30", (8, 0)),
    ("L40", (8, 9)), ("L4", (8, 9)), ("A40", (8, 6)), ("A16", (8, 6)), ("A10", (8, 6)), ("A2", (8, 6)),
    ("T4", (7, 5)), ("V100", (7, 0)),
)
_FAMILY = {7: "volta", 8: "ampere", 9: "hopper", 10: "blackwell"}


class PluginError(Exception):
    """The daemon cannot serve this node's layout with its configuration; it crash-loops."""


@dataclasses.dataclass(frozen=True)
class SharedResource:
    name: str
    replicas: int
    rename: str = ""


@dataclasses.dataclass(frozen=True)
class PluginConfig:
    """The part of the device plugin / GFD configuration the simulator honours."""

    mig_strategy: str = "none"
    time_slicing: tuple[SharedResource, ...] = ()

    def sharing(self, resource: str) -> SharedResource | None:
        for shared in self.time_slicing:
            if shared.name == resource and shared.replicas > 1:
                return shared
        return None

    @property
    def sharing_strategy(self) -> str:
        return "time-slicing" if any(s.replicas > 1 for s in self.time_slicing) else "none"


# --- which daemon a container is -------------------------------------------------------------

def image_repository(image: str) -> str:
    """``nvcr.io/nvidia/k8s-device-plugin:v0.17.0`` → ``nvcr.io/nvidia/k8s-device-plugin``."""
    image = image.split("@", 1)[0]
    slash = image.rfind("/")
    colon = image.rfind(":")
    return image[:colon] if colon > slash else image


def container_role(container: Mapping[str, Any]) -> str | None:
    """The NVIDIA daemon a container runs, per contract §3, or None."""
    repo = image_repository(str(container.get("image") or ""))
    words = " ".join(str(w) for w in [*(container.get("command") or []), *(container.get("args") or [])])
    if repo.endswith("gpu-feature-discovery") or "gpu-feature-discovery" in words:
        return ROLE_GFD
    if repo.endswith("dcgm-exporter"):
        return ROLE_DCGM_EXPORTER
    if repo.endswith("k8s-device-plugin"):
        # The GPU Operator runs config-manager sidecars from the plugin image.
        return None if "config-manager" in words else ROLE_DEVICE_PLUGIN
    return None


def pod_roles(pod_spec: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Role → the container playing it, for the containers of a pod spec."""
    roles: dict[str, Mapping[str, Any]] = {}
    for container in pod_spec.get("containers") or []:
        role = container_role(container)
        if role and role not in roles:
            roles[role] = container
    return roles


# --- plugin configuration --------------------------------------------------------------------

def _env(container: Mapping[str, Any]) -> dict[str, str]:
    return {str(e.get("name")): str(e.get("value", "")) for e in container.get("env") or [] if "value" in e}


def _arg_strategy(container: Mapping[str, Any]) -> str | None:
    args = [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    for i, arg in enumerate(args):
        if arg.startswith("--mig-strategy="):
            return arg.split("=", 1)[1]
        if arg == "--mig-strategy" and i + 1 < len(args):
            return args[i + 1]
    return None


def config_map_names(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    """ConfigMaps mounted into the container, in mount order."""
    mounted = {m.get("name") for m in container.get("volumeMounts") or []}
    names = []
    for volume in pod_spec.get("volumes") or []:
        source = volume.get("configMap")
        if source and volume.get("name") in mounted and source.get("name"):
            names.append(str(source["name"]))
    return names


def select_config_key(data: Mapping[str, str], node_labels: Mapping[str, str], default_key: str | None) -> str:
    """Which config of a multi-config ConfigMap a node runs (label, then DEFAULT_CONFIG, then the only one)."""
    wanted = node_labels.get(CONFIG_LABEL)
    if wanted and wanted in data:
        return wanted
    if default_key and default_key in data:
        return default_key
    if len(data) == 1:
        return next(iter(data))
    raise PluginError(f"unable to select a plugin config: label {CONFIG_LABEL}={wanted!r}, "
                      f"DEFAULT_CONFIG={default_key!r}, available: {sorted(data)}")


def parse_config_file(text: str) -> PluginConfig:
    """Parse a plugin config file (``version: v1``)."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise PluginError(f"unable to parse config file: {exc}") from exc
    if not isinstance(doc, dict):
        raise PluginError("unable to parse config file: not a mapping")
    if str(doc.get("version", "v1")) != "v1":
        raise PluginError(f"unknown version: {doc.get('version')}")
    flags = doc.get("flags") or {}
    strategy = str(flags.get("migStrategy") or "none")
    slicing = ((doc.get("sharing") or {}).get("timeSlicing")) or {}
    rename_default = bool(slicing.get("renameByDefault"))
    shared = []
    for entry in slicing.get("resources") or []:
        name = str(entry.get("name", ""))
        replicas = int(entry.get("replicas", 1))
        if replicas < 1:
            raise PluginError(f"invalid replicas for {name}: {replicas}")
        rename = str(entry.get("rename") or "")
        if not rename and rename_default:
            rename = name + ".shared"
        if rename and "/" not in rename:
            rename = "nvidia.com/" + rename
        shared.append(SharedResource(name=name, replicas=replicas, rename=rename))
    return _validated(PluginConfig(mig_strategy=strategy, time_slicing=tuple(shared)))


def _validated(config: PluginConfig) -> PluginConfig:
    if config.mig_strategy not in STRATEGIES:
        raise PluginError(f"unknown MIG strategy: {config.mig_strategy}")
    return config


def resolve_config(pod_spec: Mapping[str, Any], container: Mapping[str, Any],
                   config_maps: Mapping[str, Mapping[str, str] | None],
                   node_labels: Mapping[str, str]) -> PluginConfig:
    """The configuration the daemon in ``container`` loads on this node.

    ``config_maps`` maps the names of ConfigMaps in the pod's namespace to their data (None when
    missing). The env var MIG_STRATEGY (or ``--mig-strategy``) overrides the file, as an explicitly
    set flag does in the real daemon.
    """
    env = _env(container)
    config = PluginConfig()
    for name in config_map_names(pod_spec, container):
        data = config_maps.get(name)
        if data is None:
            raise PluginError(f'configmap "{name}" not found')
        if not data:
            continue
        key = select_config_key(data, node_labels, env.get("DEFAULT_CONFIG"))
        config = parse_config_file(data[key])
        break
    strategy = env.get("MIG_STRATEGY") or _arg_strategy(container)
    if strategy:
        config = dataclasses.replace(config, mig_strategy=strategy)
    return _validated(config)


# --- device plugin ---------------------------------------------------------------------------

def mig_device_name(gpu_instance: Mapping[str, Any], compute_instance: Mapping[str, Any]) -> str:
    """The MIG device's profile name (``1g.5gb``, ``1c.3g.20gb``, ``1g.10gb+me``)."""
    return str(compute_instance.get("profile") or gpu_instance.get("profile"))


def _is_whole_instance(gpu_instance: Mapping[str, Any], compute_instance: Mapping[str, Any]) -> bool:
    return mig_device_name(gpu_instance, compute_instance) == str(gpu_instance.get("profile"))


def mig_resource_name(profile: str) -> str:
    return MIG_RESOURCE_PREFIX + profile.replace("+", ".")


def _mig_devices(gpu: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any], Mapping[str, Any]]]:
    """(profile name, device uuid, gi, ci) of each MIG device of a GPU, in instance order."""
    devices = []
    for gi in gpu.get("gpu_instances") or []:
        for ci in gi.get("compute_instances") or []:
            devices.append((mig_device_name(gi, ci), str(ci.get("device_uuid")), gi, ci))
    return devices


def _mig_enabled(gpu: Mapping[str, Any]) -> bool:
    return bool((gpu.get("mig") or {}).get("current"))


def _apply_sharing(resources: dict[str, list[str]], config: PluginConfig) -> dict[str, list[str]]:
    shared: dict[str, list[str]] = {}
    for name, ids in resources.items():
        rule = config.sharing(name)
        if rule is None:
            shared[name] = ids
            continue
        shared[rule.rename or name] = [f"{uuid}::{i}" for uuid in ids for i in range(rule.replicas)]
    return shared


def plugin_inventory(state: Mapping[str, Any], config: PluginConfig) -> dict[str, list[str]]:
    """Resource name → device ids the device plugin advertises for this NVML state.

    Device ids are GPU or MIG device UUIDs; a time-sliced replica is ``<uuid>::<n>``. Raises
    PluginError with the real plugin's message when the strategy cannot serve the layout.
    """
    full: list[str] = []
    migs: list[tuple[Mapping[str, Any], tuple[str, str, Mapping[str, Any], Mapping[str, Any]]]] = []
    for gpu in state.get("gpus") or []:
        if config.mig_strategy == "none" or not _mig_enabled(gpu):
            full.append(str(gpu["uuid"]))
            continue
        devices = _mig_devices(gpu)
        if config.mig_strategy == "single" and not devices:
            raise PluginError("invalid MIG configuration: at least one device with migEnabled=true was not "
                              f"configured correctly: device {gpu.get('index')} has no MIG devices configured")
        migs.extend((gpu, device) for device in devices)
    resources: dict[str, list[str]] = {}
    if full:
        resources[GPU_RESOURCE] = full
    if config.mig_strategy == "single" and migs:
        if len({_mig_attributes_key(gpu, d[2], d[3]) for gpu, d in migs}) > 1:
            raise PluginError("invalid MIG configuration: more than one MIG device type present on node")
        if full:
            raise PluginError("all devices on the node must be configured with the same migEnabled value")
        resources[GPU_RESOURCE] = [d[1] for _gpu, d in migs]
    elif config.mig_strategy == "mixed":
        for _gpu, (profile, uuid, gi, ci) in migs:
            if _is_whole_instance(gi, ci):
                resources.setdefault(mig_resource_name(profile), []).append(uuid)
    return _apply_sharing(resources, config)


def device_uuid(device_id: str) -> str:
    """The GPU or MIG device UUID behind a device id (strips a time-slicing replica suffix)."""
    return device_id.split("::", 1)[0]


# --- GPU feature discovery -------------------------------------------------------------------

def is_gfd_label(key: str) -> bool:
    """Whether GFD owns this node label (and may remove it when it no longer applies)."""
    return key.startswith("nvidia.com/") and not key.startswith(_FOREIGN_LABELS)


def _model(gpu: Mapping[str, Any]) -> Any:
    """The simulator's model table for this GPU, or None (tables carry engines and capability)."""
    try:
        from gpuops_sim.nvml import models  # the NVML half of the simulator; optional here
        return models.find_model(str(gpu.get("name", "")))
    except (ImportError, ValueError, AttributeError):
        return None


def compute_capability(gpu: Mapping[str, Any]) -> tuple[int, int]:
    given = gpu.get("cuda_compute_capability") or gpu.get("compute_capability")
    if given:
        major, _dot, minor = str(given).partition(".")
        return int(major), int(minor or 0)
    model = _model(gpu)
    if model is not None:
        return tuple(model.cuda_compute_capability)  # type: ignore[return-value]
    name = str(gpu.get("name", "")).upper()
    for fragment, capability in _COMPUTE_CAPABILITY:
        if fragment in name:
            return capability
    return (0, 0)


def product_name(gpu: Mapping[str, Any]) -> str:
    return str(gpu.get("name", "")).replace(" ", "-")


def _engines(gpu: Mapping[str, Any], gi: Mapping[str, Any]) -> dict[str, int]:
    """Engine counts of a GPU instance: from the model table, else the A100 pattern."""
    model = _model(gpu)
    profile_info = model.gi_profile_by_id(int(gi.get("profile_id", -1))) if model is not None else None
    if profile_info is not None:
        return {"copy": profile_info.copy_engines, "decoder": profile_info.decoders,
                "encoder": profile_info.encoders, "jpeg": profile_info.jpegs, "ofa": profile_info.ofas}
    slices = int(gi.get("slices") or 1)
    profile = str(gi.get("profile", ""))
    media = "+me" in profile or slices >= 7
    default_decoders = {1: 0, 2: 1, 3: 2, 4: 2}.get(slices, 5 if slices >= 7 else slices // 2)
    return {
        "copy": int(gi.get("copy_engines", slices)),
        "decoder": int(gi.get("decoders", 1 if "+me" in profile else default_decoders)),
        "encoder": int(gi.get("encoders", 0)),
        "jpeg": int(gi.get("jpegs", 1 if media else 0)),
        "ofa": int(gi.get("ofas", 1 if media else 0)),
    }


def _ci_slices(gi: Mapping[str, Any], ci: Mapping[str, Any]) -> int:
    name = mig_device_name(gi, ci)
    first = name.split(".", 1)[0]
    if first.endswith("c") and first[:-1].isdigit():
        return int(first[:-1])
    return int(ci.get("slices") or gi.get("slices") or 1)


def _mig_attributes(gpu: Mapping[str, Any], gi: Mapping[str, Any], ci: Mapping[str, Any]) -> dict[str, int]:
    attributes = {
        "memory": int(gi.get("memory_mib") or 0),
        "multiprocessors": int(ci.get("multiprocessors") or gi.get("multiprocessors") or 0),
        "slices.gi": int(gi.get("slices") or 1),
        "slices.ci": _ci_slices(gi, ci),
    }
    for engine, count in _engines(gpu, gi).items():
        attributes[f"engines.{engine}"] = count
    return attributes


def _mig_attributes_key(gpu: Mapping[str, Any], gi: Mapping[str, Any], ci: Mapping[str, Any]) -> tuple:
    return (mig_device_name(gi, ci), *sorted(_mig_attributes(gpu, gi, ci).items()))


class _ResourceLabels:
    """Labels ``<resource>.<suffix>`` for one resource, honouring time-slicing like GFD."""

    def __init__(self, resource: str, config: PluginConfig | None):
        self.resource = resource
        self.config = config  # None: sharing disabled (MIG-enabled full GPUs)

    def key(self, suffix: str) -> str:
        return f"{self.resource}.{suffix}"

    def _rule(self) -> SharedResource | None:
        return self.config.sharing(self.resource) if self.config else None

    def base(self, count: int, *parts: str) -> dict[str, str]:
        rule = self._rule()
        words = [p.replace(" ", "-") for p in parts if p]
        if rule and not rule.rename:
            words.append("SHARED")
        replicas = 0 if self.config is None else (rule.replicas if rule else 1)
        # GFD's resource labeler writes the sharing strategy next to the replicas of every resource.
        return {self.key("product"): "-".join(words), self.key("count"): str(count),
                self.key("replicas"): str(replicas),
                self.key("sharing-strategy"): "time-slicing" if rule else "none"}


def _full_gpu_labels(gpu: Mapping[str, Any], count: int, config: PluginConfig | None) -> dict[str, str]:
    if count == 0:
        return {}
    rl = _ResourceLabels(GPU_RESOURCE, config)
    labels = rl.base(count, str(gpu.get("name", "")))
    memory = int(gpu.get("memory_total_mib") or 0)
    if memory:
        labels[rl.key("memory")] = str(memory)
    major, minor = compute_capability(gpu)
    if major:
        labels[rl.key("family")] = _FAMILY.get(major, "undefined")
        labels[rl.key("compute.major")] = str(major)
        labels[rl.key("compute.minor")] = str(minor)
    return labels


def _mig_resource_labels(resource: str, gpu: Mapping[str, Any], profile: str, gi: Mapping[str, Any],
                         ci: Mapping[str, Any], count: int, config: PluginConfig) -> dict[str, str]:
    rl = _ResourceLabels(resource, config)
    labels = rl.base(count, str(gpu.get("name", "")), "MIG", profile)
    for suffix, value in _mig_attributes(gpu, gi, ci).items():
        labels[rl.key(suffix)] = str(value)
    return labels


def _gpu_labels(gpus: list[Mapping[str, Any]], config: PluginConfig) -> dict[str, str]:
    counts: dict[str, int] = {}
    enabled: dict[str, Mapping[str, Any]] = {}
    disabled: dict[str, Mapping[str, Any]] = {}
    for gpu in gpus:
        name = str(gpu.get("name", ""))
        counts[name] = counts.get(name, 0) + 1
        (enabled if _mig_enabled(gpu) else disabled)[name] = gpu
    labels: dict[str, str] = {}
    for name in sorted(enabled):
        labels.update(_full_gpu_labels(enabled[name], counts[name], None))
    for name in sorted(disabled):
        labels.update(_full_gpu_labels(disabled[name], counts[name], config))
    return labels


def _invalid_single_labels(gpu: Mapping[str, Any]) -> dict[str, str]:
    rl = _ResourceLabels(GPU_RESOURCE, None)
    labels = {rl.key("product"): "-".join(p.replace(" ", "-") for p in (str(gpu.get("name", "")), "MIG", "INVALID"))}
    labels.update({rl.key("count"): "0", rl.key("replicas"): "0", rl.key("memory"): "0"})
    return labels


def _single_labels(gpus: list[Mapping[str, Any]], config: PluginConfig) -> dict[str, str]:
    enabled = [g for g in gpus if _mig_enabled(g)]
    if not enabled:
        return {}
    if any(not _mig_devices(g) for g in enabled) or len(enabled) != len(gpus):
        return _invalid_single_labels(enabled[0])
    devices = [(gpu, d) for gpu in enabled for d in _mig_devices(gpu)]
    if len({d[0] for _gpu, d in devices}) != 1:
        return _invalid_single_labels(enabled[0])
    gpu, (profile, _uuid, gi, ci) = devices[0]
    return _mig_resource_labels(GPU_RESOURCE, gpu, profile, gi, ci, len(devices), config)


def _mixed_labels(gpus: list[Mapping[str, Any]], config: PluginConfig) -> dict[str, str]:
    first: dict[str, tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]] = {}
    counts: dict[str, int] = {}
    for gpu in gpus:
        if not _mig_enabled(gpu):
            continue
        for profile, _uuid, gi, ci in _mig_devices(gpu):
            first.setdefault(profile, (gpu, gi, ci))
            counts[profile] = counts.get(profile, 0) + 1
    labels: dict[str, str] = {}
    for profile in sorted(first):
        gpu, gi, ci = first[profile]
        labels.update(_mig_resource_labels(mig_resource_name(profile), gpu, profile, gi, ci, counts[profile], config))
    return labels


def _version_labels(state: Mapping[str, Any]) -> dict[str, str]:
    driver = str(state.get("driver_version") or "")
    parts = driver.split(".")
    major, minor = parts[0], parts[1] if len(parts) > 1 else "0"
    rev = parts[2] if len(parts) > 2 else ""
    cuda_major, _dot, cuda_minor = str(state.get("cuda_version") or "0.0").partition(".")
    cuda_minor = cuda_minor or "0"
    return {
        "nvidia.com/cuda.driver.major": major,
        "nvidia.com/cuda.driver.minor": minor,
        "nvidia.com/cuda.driver.rev": rev,
        "nvidia.com/cuda.runtime.major": cuda_major,
        "nvidia.com/cuda.runtime.minor": cuda_minor,
        "nvidia.com/cuda.driver-version.major": major,
        "nvidia.com/cuda.driver-version.minor": minor,
        "nvidia.com/cuda.driver-version.revision": rev,
        "nvidia.com/cuda.driver-version.full": driver,
        "nvidia.com/cuda.runtime-version.major": cuda_major,
        "nvidia.com/cuda.runtime-version.minor": cuda_minor,
        "nvidia.com/cuda.runtime-version.full": f"{cuda_major}.{cuda_minor}",
    }


def gfd_labels(state: Mapping[str, Any], config: PluginConfig, machine: str = "") -> dict[str, str]:
    """The nvidia.com/* labels GFD writes for this NVML state (without the timestamp)."""
    gpus = list(state.get("gpus") or [])
    if not gpus:
        return {}
    labels: dict[str, str] = {}
    if machine:
        labels["nvidia.com/gpu.machine"] = machine
    labels.update(_version_labels(state))
    labels["nvidia.com/mig.capable"] = str(any((g.get("mig") or {}).get("capable") for g in gpus)).lower()
    labels["nvidia.com/mps.capable"] = "false"
    labels["nvidia.com/gpu.sharing-strategy"] = config.sharing_strategy
    labels.update(_gpu_labels(gpus, config))
    if config.mig_strategy != "none":
        labels["nvidia.com/mig.strategy"] = config.mig_strategy
        labels.update(_single_labels(gpus, config) if config.mig_strategy == "single" else _mixed_labels(gpus, config))
    labels["nvidia.com/gpu.mode"] = "compute"
    return labels


def label_changes(current: Mapping[str, str], wanted: Mapping[str, str], owned: Iterable[str]) -> dict[str, str | None]:
    """A merge-patch of node labels: set what differs, remove owned labels no longer wanted."""
    patch: dict[str, str | None] = {k: v for k, v in wanted.items() if current.get(k) != v}
    for key in owned:
        if key not in wanted and key in current:
            patch[key] = None
    return patch
