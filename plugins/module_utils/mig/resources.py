# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection: no compatibility promise outside gpuops.nvidia.
"""What NVIDIA's device plugin and GPU Feature Discovery (GFD) will publish for a MIG layout.

Given a node's GPUs as ``gpuops.nvidia.gpu_info`` reports them, a desired per-GPU layout, the MIG
strategy (``none``, ``single``, ``mixed``) and an optional time-slicing config, compute the node's
``nvidia.com/*`` capacity, allocatable and labels, and the problems that make the real plugin
refuse to start or GFD label the node ``...-MIG-INVALID``. The rollout uses the result twice: to
refuse a layout that does not suit the strategy before touching a node, and to know what to wait
for after reconfiguring it.

The rules follow NVIDIA/k8s-device-plugin (``internal/rm/device_map.go`` for resources,
``internal/lm`` for labels); docs/mig-strategies.md lists them with their sources and the
assumptions made where the upstream behaviour is undefined. Pure: no I/O, no NVML.

A layout is ``{gpu_index: {"mig_enabled": bool, "devices": {profile: count}}}``; a GPU that is
absent keeps what it has now (its current MIG mode and instances, as gpu_info reports them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.naming import parse_profile

STRATEGIES = ("none", "single", "mixed")
GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
SHARED_SUFFIX = ".shared"
RESOURCE_PREFIX = "nvidia.com/"

# GFD's MIG device attribute labels, in the order upstream lists them, with the gpu_info field
# of the GPU instance profile each one comes from.
_ATTRIBUTE_FIELDS = (
    ("memory", "memory_mib"),
    ("multiprocessors", "multiprocessors"),
    ("slices.gi", "slices"),
    ("slices.ci", None),  # compute slices of the device: the profile's C, or G for a full-width CI
    ("engines.copy", "copy_engines"),
    ("engines.decoder", "decoders"),
    ("engines.encoder", "encoders"),
    ("engines.jpeg", "jpegs"),
    ("engines.ofa", "ofas"),
)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeSlicing:
    """The device plugin's ``sharing.timeSlicing`` as the plugin applies it.

    ``replicas`` maps a fully qualified resource name to its replica count (>= 2). Upstream
    ignores per-resource ``rename`` and ``devices`` (it replicates all devices and renames only
    through ``renameByDefault``), so they are not represented.
    """

    replicas: Mapping[str, int] = field(default_factory=dict)
    rename_by_default: bool = False

    def shared_name(self, resource: str) -> str:
        return resource + SHARED_SUFFIX if self.rename_by_default else resource


def parse_time_slicing(config: Optional[Mapping[str, Any]]) -> TimeSlicing:
    """Read a ``sharing.timeSlicing`` mapping (``renameByDefault``, ``resources: [{name, replicas}]``).

    ``None`` or ``{}`` means no time-slicing. Raises ValueError naming the field on bad input, with
    the plugin's own rules: at least one resource, each with a name and ``replicas >= 2``; a name
    without a domain gets ``nvidia.com/``.
    """
    if not config:
        return TimeSlicing()
    if not isinstance(config, Mapping):
        raise ValueError("time_slicing must be a mapping with 'resources', got %r" % (config,))
    unknown = sorted(set(config) - {"renameByDefault", "failRequestsGreaterThanOne", "resources"})
    if unknown:
        raise ValueError("time_slicing has unknown field(s) %s" % ", ".join(repr(k) for k in unknown))
    rename_by_default = config.get("renameByDefault", False)
    if not isinstance(rename_by_default, bool):
        raise ValueError("time_slicing.renameByDefault must be a boolean, got %r" % (rename_by_default,))
    resources = config.get("resources")
    if not isinstance(resources, list) or not resources:
        raise ValueError("time_slicing.resources must be a non-empty list, got %r" % (resources,))
    replicas: Dict[str, int] = {}
    for position, resource in enumerate(resources):
        where = "time_slicing.resources[%d]" % position
        if not isinstance(resource, Mapping):
            raise ValueError("%s must be a mapping with 'name' and 'replicas', got %r" % (where, resource))
        name = resource.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("%s.name must be a resource name such as 'nvidia.com/gpu', got %r" % (where, name))
        count = resource.get("replicas")
        if not _is_count(count) or count < 2:
            raise ValueError("%s.replicas must be an integer >= 2, got %r" % (where, count))
        qualified = name if name.startswith(RESOURCE_PREFIX) else RESOURCE_PREFIX + name
        replicas[qualified] = count
    return TimeSlicing(replicas=replicas, rename_by_default=rename_by_default)


def time_slicing_config(replicas: Any, rename_by_default: bool = False, resources: Optional[Sequence[str]] = None) -> Optional[Dict[str, Any]]:
    """The ``sharing.timeSlicing`` mapping for "advertise each device ``replicas`` times".

    ``replicas`` may come from a variable as text ("4"); None, 0 and 1 mean no time-slicing.
    ``resources`` are the replicated resource names (default: ``nvidia.com/gpu``).
    """
    if replicas is None or replicas == "":
        return None
    try:
        count = int(replicas)
    except (TypeError, ValueError):
        raise ValueError("time-slicing replicas must be an integer, got %r" % (replicas,))
    if isinstance(replicas, bool) or count < 0 or str(count) != str(replicas).strip():
        raise ValueError("time-slicing replicas must be an integer >= 0, got %r" % (replicas,))
    if count <= 1:
        return None
    names = list(resources) if resources else [GPU_RESOURCE]
    return {"renameByDefault": bool(rename_by_default), "resources": [{"name": name, "replicas": count} for name in names]}


def _is_count(value: Any) -> bool:
    """An int that is not a bool (YAML's true would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _gpu_list(gpus: Any) -> List[Mapping[str, Any]]:
    """Accept gpu_info's whole result or just its ``gpus`` list."""
    if isinstance(gpus, Mapping):
        gpus = gpus.get("gpus")
    if not isinstance(gpus, list):
        raise ValueError("gpus must be gpu_info's result or its 'gpus' list, got %r" % (type(gpus).__name__,))
    for position, gpu in enumerate(gpus):
        if not isinstance(gpu, Mapping) or not _is_count(gpu.get("index")):
            raise ValueError("gpus[%d] must be a gpu_info GPU with an integer 'index'" % position)
    return sorted(gpus, key=lambda gpu: gpu["index"])


def _check_strategy(strategy: Any) -> str:
    if strategy not in STRATEGIES:
        raise ValueError("mig strategy must be one of %s, got %r" % (", ".join(STRATEGIES), strategy))
    return strategy


# ---------------------------------------------------------------------------------------------
# The node as the daemons will see it
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MigDevice:
    """One MIG device (a compute instance) as the plugin and GFD enumerate it."""

    gpu_index: int
    profile: str  # mig-parted spelling, '+' kept: 1g.5gb+me
    # GFD attribute label suffix -> value; empty when the GPU's profile info is not known.
    attributes: Tuple[Tuple[str, int], ...] = ()

    @property
    def name(self) -> str:
        """The name the plugin and GFD use: the profile with '+' spelled '.'."""
        return self.profile.replace("+", ".")

    @property
    def is_full_width(self) -> bool:
        """True unless the compute instance is narrower than its GPU instance (``1c.3g.20gb``)."""
        try:
            parsed = parse_profile(self.profile)
        except ValueError:
            return True
        return parsed.is_gpu_instance_profile


@dataclass(frozen=True)
class NodeGpu:
    index: int
    name: str
    memory_total_mib: int
    mig_capable: bool
    mig_enabled: bool
    devices: Tuple[MigDevice, ...] = ()


def _prefix(node: Optional[str]) -> str:
    return "node %s: " % node if node else ""


def _profile_table(gpu: Mapping[str, Any]) -> Dict[str, Mapping[str, Any]]:
    profiles = (gpu.get("mig") or {}).get("profiles") or []
    return {p["name"]: p for p in profiles if isinstance(p, Mapping) and isinstance(p.get("name"), str)}


def _attributes(device_profile: str, gi_profile: Optional[Mapping[str, Any]]) -> Tuple[Tuple[str, int], ...]:
    """GFD's attribute labels of one MIG device, from its GPU instance profile info.

    NVML reports the attributes of the device itself; gpu_info reports them per GPU instance
    profile. For a full-width compute instance they are the same. For a narrower one
    (``1c.3g.20gb``) the SM count is scaled by C/G, an approximation (see docs/mig-strategies.md).
    """
    if gi_profile is None:
        return ()
    slices = int(gi_profile.get("slices") or 0)
    try:
        parsed = parse_profile(device_profile)
        compute_slices = parsed.compute_slices
    except ValueError:
        compute_slices = slices
    values = []
    for label, source in _ATTRIBUTE_FIELDS:
        if source is None:
            values.append((label, compute_slices))
        elif label == "multiprocessors" and slices and compute_slices != slices:
            values.append((label, int(gi_profile.get(source) or 0) * compute_slices // slices))
        else:
            values.append((label, int(gi_profile.get(source) or 0)))
    return tuple(values)


def _current_devices(gpu: Mapping[str, Any], table: Mapping[str, Mapping[str, Any]]) -> Tuple[MigDevice, ...]:
    by_id = {p.get("id"): p for p in table.values()}
    devices = []
    for instance in (gpu.get("mig") or {}).get("instances") or []:
        gi_profile = table.get(instance.get("profile")) or by_id.get(instance.get("profile_id"))
        for device in instance.get("devices") or []:
            profile = device.get("profile") or instance.get("profile")
            devices.append(MigDevice(gpu["index"], profile, _attributes(profile, gi_profile)))
    return tuple(devices)


def _layout_entry(index: int, entry: Any, gpu: Optional[Mapping[str, Any]], where: str) -> Tuple[Optional[NodeGpu], List[str]]:
    """One GPU as the layout wants it, or the layout's problems with it."""
    label = "%sGPU %d%s" % (where, index, " (%s)" % gpu.get("name") if gpu and gpu.get("name") else "")
    if not isinstance(entry, Mapping):
        return None, ["%s: layout entry must be a mapping with 'mig_enabled' and 'devices', got %r" % (label, entry)]
    unknown = sorted(set(entry) - {"mig_enabled", "devices"})
    if unknown:
        return None, ["%s: unknown layout field(s) %s" % (label, ", ".join(repr(k) for k in unknown))]
    enabled = entry.get("mig_enabled")
    if not isinstance(enabled, bool):
        return None, ["%s: mig_enabled must be true or false, got %r" % (label, enabled)]
    wanted = entry.get("devices") or {}
    if not isinstance(wanted, Mapping):
        return None, ["%s: devices must be a mapping of profile to count, got %r" % (label, wanted)]
    problems = []
    for profile, count in wanted.items():
        if not _is_count(count) or count < 0:
            problems.append("%s: count of MIG profile %s must be an integer >= 0, got %r" % (label, profile, count))
    if not enabled and any(count for count in wanted.values()):
        problems.append("%s: mig_enabled is false but devices lists %s" % (label, ", ".join(sorted(map(str, wanted)))))
    if gpu is not None:
        mig = gpu.get("mig") or {}
        if enabled and not mig.get("capable"):
            problems.append("%s is not MIG-capable but the layout enables MIG on it" % label)
        table = _profile_table(gpu)
        for profile in wanted:
            if wanted[profile] and table and profile not in table:
                problems.append("%s has no MIG profile %s (it offers %s)" % (label, profile, ", ".join(sorted(table))))
    if problems:
        return None, problems
    if gpu is None:
        return NodeGpu(index, "", 0, True, enabled, _devices_from_counts(index, wanted, {})), []
    table = _profile_table(gpu)
    return NodeGpu(
        index=index,
        name=str(gpu.get("name") or ""),
        memory_total_mib=int(gpu.get("memory_total_mib") or 0),
        mig_capable=bool((gpu.get("mig") or {}).get("capable")),
        mig_enabled=enabled,
        devices=_devices_from_counts(index, wanted, table) if enabled else (),
    ), []


def _devices_from_counts(index: int, wanted: Mapping[str, int], table: Mapping[str, Mapping[str, Any]]) -> Tuple[MigDevice, ...]:
    # One GPU instance with one full-width compute instance per counted profile, as mig-parted creates them.
    devices = []
    for profile in sorted(wanted):
        attributes = _attributes(profile, table.get(profile))
        devices.extend([MigDevice(index, profile, attributes)] * wanted[profile])
    return tuple(devices)


def _normalise_layout(layout: Any, where: str) -> Tuple[Dict[int, Any], List[str]]:
    if layout is None:
        return {}, []
    if not isinstance(layout, Mapping):
        return {}, ["%slayout must be a mapping of GPU index to {mig_enabled, devices}, got %r" % (where, layout)]
    entries: Dict[int, Any] = {}
    problems = []
    for key, entry in layout.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            problems.append("%slayout key %r is not a GPU index" % (where, key))
            continue
        if index in entries:
            problems.append("%sGPU %d appears twice in the layout" % (where, index))
            continue
        entries[index] = entry
    return entries, problems


def resolve_node(gpus: Any, layout: Any, node: Optional[str] = None) -> Tuple[List[NodeGpu], List[str]]:
    """The node's GPUs after ``layout`` is applied, plus the layout's problems (GPU/profile named)."""
    where = _prefix(node)
    gpu_list = _gpu_list(gpus)
    entries, problems = _normalise_layout(layout, where)
    known = {gpu["index"] for gpu in gpu_list}
    for index in sorted(set(entries) - known):
        problems.append("%sGPU %d in the layout does not exist on the node (its GPUs: %s)" % (
            where, index, ", ".join(str(i) for i in sorted(known)) or "none"))
    resolved = []
    for gpu in gpu_list:
        node_gpu = None
        if gpu["index"] in entries:
            node_gpu, entry_problems = _layout_entry(gpu["index"], entries[gpu["index"]], gpu, where)
            problems.extend(entry_problems)
        # A GPU the layout leaves out, or describes wrongly, is taken as it is now.
        resolved.append(node_gpu or _current_gpu(gpu))
    return resolved, problems


def _current_gpu(gpu: Mapping[str, Any]) -> NodeGpu:
    mig = gpu.get("mig") or {}
    enabled = bool(mig.get("current"))
    return NodeGpu(
        index=gpu["index"],
        name=str(gpu.get("name") or ""),
        memory_total_mib=int(gpu.get("memory_total_mib") or 0),
        mig_capable=bool(mig.get("capable")),
        mig_enabled=enabled,
        devices=_current_devices(gpu, _profile_table(gpu)) if enabled else (),
    )


def current_layout(gpus: Any) -> Dict[int, Dict[str, Any]]:
    """The layout each GPU has now, in the layout format (counts of GPU instance profiles)."""
    layout = {}
    for gpu in _gpu_list(gpus):
        mig = gpu.get("mig") or {}
        counts: Dict[str, int] = {}
        if mig.get("current"):
            for instance in mig.get("instances") or []:
                profile = instance.get("profile")
                counts[profile] = counts.get(profile, 0) + 1
        layout[gpu["index"]] = {"mig_enabled": bool(mig.get("current")), "devices": dict(sorted(counts.items()))}
    return layout


# ---------------------------------------------------------------------------------------------
# Strategy checks: the conditions under which the plugin refuses to start
# ---------------------------------------------------------------------------------------------


def _indices(numbers: Iterable[int]) -> str:
    numbers = sorted(set(numbers))
    return "GPU%s %s" % ("s" if len(numbers) > 1 else "", ", ".join(str(n) for n in numbers))


def strategy_problems(node_gpus: Sequence[NodeGpu], strategy: str, node: Optional[str] = None) -> List[str]:
    """Why the device plugin would fail to start (and GFD label INVALID) on this node, if at all."""
    strategy = _check_strategy(strategy)
    where = _prefix(node)
    if strategy == "none":
        return []
    problems = []
    enabled = [gpu for gpu in node_gpus if gpu.mig_enabled]
    disabled = [gpu for gpu in node_gpus if not gpu.mig_enabled]
    devices = [device for gpu in enabled for device in gpu.devices]
    if strategy == "mixed":
        narrow = [device for device in devices if not device.is_full_width]
        for name in sorted({device.profile for device in narrow}):
            problems.append(
                "%sMIG strategy 'mixed' advertises only full-width MIG devices, but %s would have %s "
                "(device plugin: \"MIG profile '%s' does not match any resource patterns\")" % (
                    where, _indices(d.gpu_index for d in narrow if d.profile == name), name, name))
        return problems
    for gpu in enabled:
        if not gpu.devices:
            problems.append(
                "%sMIG strategy 'single': GPU %d has MIG enabled but no MIG devices "
                "(device plugin: 'device %d has no MIG devices configured'; GFD: gpu.product ...-MIG-INVALID)" % (
                    where, gpu.index, gpu.index))
    if enabled and disabled:
        problems.append(
            "%sMIG strategy 'single' needs every GPU in the same MIG mode, but %s %s MIG enabled and %s %s it disabled "
            "(device plugin: 'all devices on the node must be configured with the same migEnabled value'; "
            "GFD: gpu.product ...-MIG-INVALID)" % (
                where, _indices(g.index for g in enabled), "has" if len(enabled) == 1 else "have",
                _indices(g.index for g in disabled), "has" if len(disabled) == 1 else "have"))
    names = sorted({device.name for device in devices})
    if len(names) > 1:
        found = "; ".join(
            "%s on %s" % (name, _indices(d.gpu_index for d in devices if d.name == name)) for name in names)
        problems.append(
            "%sMIG strategy 'single' needs one MIG profile on the whole node, but the layout has %s "
            "(device plugin: 'more than one MIG device type present on node'; GFD: gpu.product ...-MIG-INVALID); "
            "use MIG strategy 'mixed' or a config with a single profile" % (where, found))
    elif names:
        # Same name, different attributes: the same profile name on two GPU models.
        kinds = {device.attributes for device in devices if device.attributes}
        if len(kinds) > 1:
            problems.append(
                "%sMIG strategy 'single': profile %s differs between the GPU models of this node (memory, SMs or engines) "
                "(device plugin: 'more than one MIG device type present on node')" % (where, names[0]))
    return problems


def validate_strategy(layout: Any, strategy: str, gpus: Any = None, node: Optional[str] = None) -> List[str]:
    """Human-readable reasons why ``layout`` cannot run under ``strategy``; empty when it can.

    Without ``gpus`` only the GPUs named in the layout are judged; with ``gpus`` (gpu_info's result
    or its list) absent GPUs count with their current state and profiles are checked against what
    each GPU offers.
    """
    _check_strategy(strategy)
    if gpus is None:
        where = _prefix(node)
        entries, problems = _normalise_layout(layout, where)
        node_gpus = []
        for index in sorted(entries):
            node_gpu, entry_problems = _layout_entry(index, entries[index], None, where)
            problems.extend(entry_problems)
            if node_gpu is not None:
                node_gpus.append(node_gpu)
    else:
        node_gpus, problems = resolve_node(gpus, layout, node)
    return problems + strategy_problems(node_gpus, strategy, node)


# ---------------------------------------------------------------------------------------------
# The device plugin: extended resources
# ---------------------------------------------------------------------------------------------


def mig_resource_name(profile: str) -> str:
    """``nvidia.com/mig-1g.5gb``; '+' in a profile is spelled '.' (``nvidia.com/mig-1g.5gb.me``)."""
    return MIG_RESOURCE_PREFIX + profile.replace("+", ".")


def _plugin_resources(node_gpus: Sequence[NodeGpu], strategy: str, sharing: TimeSlicing) -> Dict[str, int]:
    counts: Dict[str, int] = {}

    def add(resource: str) -> None:
        counts[resource] = counts.get(resource, 0) + 1

    for gpu in node_gpus:
        if strategy == "none" or not gpu.mig_enabled:
            add(GPU_RESOURCE)
            continue
        for device in gpu.devices:
            add(GPU_RESOURCE if strategy == "single" else mig_resource_name(device.profile))
    published: Dict[str, int] = {}
    for resource, count in counts.items():
        replicas = sharing.replicas.get(resource)
        if replicas:
            name = sharing.shared_name(resource)
            published[name] = published.get(name, 0) + count * replicas
        else:
            published[resource] = published.get(resource, 0) + count
    return dict(sorted(published.items()))


# ---------------------------------------------------------------------------------------------
# GPU Feature Discovery: labels
# ---------------------------------------------------------------------------------------------


def sanitise(part: str) -> str:
    """GFD's product-name cleaning: drop characters other than ``A-Za-z0-9-_.`` and blanks, join words with '-'."""
    return "-".join(re.sub(r"[^A-Za-z0-9\-_. ]", "", part).split())


def product_name(*parts: str, shared: bool = False) -> str:
    """``NVIDIA-A100-SXM4-40GB``, ``NVIDIA-A100-SXM4-40GB-MIG-1g.5gb``, ``...-SHARED`` when replicated and not renamed."""
    cleaned = [sanitise(part) for part in parts if part]
    cleaned = [part for part in cleaned if part]
    if cleaned and shared:
        cleaned.append("SHARED")
    return "-".join(cleaned)


class _Labeler:
    """One resource's labels: ``<resource>.<suffix>``, as GFD's resourceLabeler writes them."""

    def __init__(self, resource: str, sharing: Optional[TimeSlicing]) -> None:
        self.resource = resource
        self.sharing = sharing  # None: sharing labels disabled (MIG-enabled full GPUs)

    @property
    def replicas(self) -> int:
        if self.sharing is None:
            return 0
        return self.sharing.replicas.get(self.resource, 1)

    @property
    def shared_product(self) -> bool:
        return self.replicas > 1 and not (self.sharing is not None and self.sharing.rename_by_default)

    def base(self, count: int, *parts: str) -> Dict[str, str]:
        return {
            self.resource + ".product": product_name(*parts, shared=self.shared_product),
            self.resource + ".count": str(count),
            self.resource + ".replicas": str(self.replicas),
            self.resource + ".sharing-strategy": "time-slicing" if self.replicas > 1 else "none",
        }

    def attributes(self, attributes: Iterable[Tuple[str, int]]) -> Dict[str, str]:
        return {"%s.%s" % (self.resource, key): str(value) for key, value in attributes}


def _full_gpu_labels(node_gpus: Sequence[NodeGpu], sharing: TimeSlicing) -> Dict[str, str]:
    counts: Dict[str, int] = {}
    last_enabled: Dict[str, NodeGpu] = {}
    last_disabled: Dict[str, NodeGpu] = {}
    for gpu in node_gpus:
        counts[gpu.name] = counts.get(gpu.name, 0) + 1
        (last_enabled if gpu.mig_enabled else last_disabled)[gpu.name] = gpu
    labels: Dict[str, str] = {}
    # MIG-enabled GPUs first and without sharing; full GPUs of the same model then override them.
    for group, sharing_config in ((last_enabled, None), (last_disabled, sharing)):
        for name, gpu in group.items():
            labeler = _Labeler(GPU_RESOURCE, sharing_config)
            labels.update(labeler.base(counts[name], name))
            if gpu.memory_total_mib:
                labels[GPU_RESOURCE + ".memory"] = str(gpu.memory_total_mib)
    return labels


def _mig_labels(
    devices: Sequence[MigDevice], parents: Mapping[int, NodeGpu], resource_of: Callable[[MigDevice], str], sharing: TimeSlicing
) -> Dict[str, str]:
    first: Dict[str, MigDevice] = {}
    counts: Dict[str, int] = {}
    for device in devices:
        first.setdefault(device.name, device)
        counts[device.name] = counts.get(device.name, 0) + 1
    labels: Dict[str, str] = {}
    for name, device in first.items():
        labeler = _Labeler(resource_of(device), sharing)
        labels.update(labeler.base(counts[name], parents[device.gpu_index].name, "MIG", name))
        labels.update(labeler.attributes(device.attributes))
    return labels


def _invalid_single_labels(model: str) -> Dict[str, str]:
    return {
        GPU_RESOURCE + ".product": product_name(model, "MIG", "INVALID"),
        GPU_RESOURCE + ".count": "0",
        GPU_RESOURCE + ".replicas": "0",
        GPU_RESOURCE + ".sharing-strategy": "",
        GPU_RESOURCE + ".memory": "0",
    }


def _gfd_labels(node_gpus: Sequence[NodeGpu], strategy: str, sharing: TimeSlicing) -> Dict[str, str]:
    if not node_gpus:
        return {}
    labels = {"nvidia.com/mig.capable": "true" if any(gpu.mig_capable for gpu in node_gpus) else "false"}
    labels.update(_full_gpu_labels(node_gpus, sharing))
    if strategy == "none":
        return labels
    labels["nvidia.com/mig.strategy"] = strategy
    parents = {gpu.index: gpu for gpu in node_gpus}
    enabled = [gpu for gpu in node_gpus if gpu.mig_enabled]
    devices = [device for gpu in enabled for device in gpu.devices]
    if strategy == "mixed":
        labels.update(_mig_labels(devices, parents, lambda d: mig_resource_name(d.profile), sharing))
        return labels
    if not enabled:
        return labels
    invalid = (
        any(not gpu.devices for gpu in enabled)
        or len(enabled) != len(node_gpus)
        or len({device.name for device in devices}) != 1
    )
    if invalid:
        labels.update(_invalid_single_labels(enabled[0].name))
    else:
        labels.update(_mig_labels(devices, parents, lambda d: GPU_RESOURCE, sharing))
    return labels


# ---------------------------------------------------------------------------------------------
# The whole picture
# ---------------------------------------------------------------------------------------------


def _warnings(node_gpus: Sequence[NodeGpu], strategy: str, node: Optional[str]) -> List[str]:
    where = _prefix(node)
    warnings = []
    models = sorted({gpu.name for gpu in node_gpus})
    if len(models) > 1:
        warnings.append(
            "%sGPUs of several models (%s): GFD's nvidia.com/gpu.* labels describe only one of them, "
            "and upstream does not define which" % (where, ", ".join(models)))
    if strategy == "mixed":
        empty = [gpu.index for gpu in node_gpus if gpu.mig_enabled and not gpu.devices]
        if empty:
            warnings.append("%s%s MIG enabled but no MIG devices: %s nothing to pods" % (
                where, _indices(empty) + (" has" if len(empty) == 1 else " have"),
                "it offers" if len(empty) == 1 else "they offer"))
    return warnings


def expected_resources(
    gpus: Any,
    layout: Any = None,
    strategy: str = "none",
    time_slicing: Optional[Mapping[str, Any]] = None,
    node: Optional[str] = None,
) -> Dict[str, Any]:
    """What the device plugin and GFD will publish on the node once ``layout`` is applied.

    Returns ``{"capacity", "allocatable", "labels", "errors", "warnings"}``. ``capacity`` and
    ``allocatable`` hold the ``nvidia.com/*`` extended resources (equal: every device is taken as
    healthy); they are empty when ``errors`` is not, because the plugin then refuses to start.
    ``labels`` holds the GFD labels that follow from the layout (see docs/mig-strategies.md for
    the set). Raises ValueError for a bad ``strategy``, ``time_slicing`` or ``gpus`` shape; the
    layout's own problems are reported in ``errors``.
    """
    strategy = _check_strategy(strategy)
    sharing = parse_time_slicing(time_slicing)
    node_gpus, errors = resolve_node(gpus, layout, node)
    errors = errors + strategy_problems(node_gpus, strategy, node)
    resources = {} if errors else _plugin_resources(node_gpus, strategy, sharing)
    return {
        "capacity": dict(resources),
        "allocatable": dict(resources),
        "labels": dict(sorted(_gfd_labels(node_gpus, strategy, sharing).items())),
        "errors": errors,
        "warnings": _warnings(node_gpus, strategy, node),
    }
