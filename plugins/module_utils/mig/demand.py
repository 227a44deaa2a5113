# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection: no compatibility promise outside gpuops.nvidia.
"""Partition by demand: new MIG geometries for free GPUs from the MIG devices pending pods ask for.

Pure and deterministic: the inputs are the pending pods' ``nvidia.com/mig-<profile>`` requests, and
per opted-in node its GPUs as ``gpuops.nvidia.gpu_info`` reports them (the profiles each GPU offers,
with their legal placements, and its GPU instances) plus the MIG devices that are allocated (the
kubelet's PodResources map, ``gpuops.nvidia.gpu_pod_devices``). The output is a mig-parted
``mig-configs`` map with one named config per changed node, and per node what changes for which pods.

The rules (docs/demand-partitioning.md):

- A GPU instance whose MIG device is allocated, or that runs processes, is never destroyed: it
  keeps its placement, and the GPU's new geometry is checked with the same planner the rollout
  runs on the node (plan.py), so the rollout keeps it too and evicts nothing.
- Only GPUs with MIG enabled (and no mode change pending) change; the MIG mode never does.
- Pods are served in order: priority (highest first), fewest slices, namespace, name. Each pod
  takes, on one node, first free devices that already exist, then new devices on GPUs this plan
  already changes, then on GPUs with nothing allocated, and only then on GPUs partly in use.
- The geometry of a changed GPU stays within what its NVML profiles and placements allow, and,
  when allowed geometries are given for its model, is one of them.
- The rest of a changed GPU keeps its free instances that still fit, then takes as many instances
  of the GPU's smallest plain profile (``1g.5gb`` on an A100 40GB) as fit: the default shape.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.facts import (
    Gpu, GpuInstance, GpuProcess, GpuProfile, MigDevice, Placement,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.plan import find_placements, plan_gpu
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import ConfigEntry, MigSpec, excerpt

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
CONFIG_PREFIX = "demand-"
# The label that opts a node in, and the one nos uses (accepted for people moving from nos).
OPT_IN_LABEL = "gpuops.io/mig-demand"
OPT_IN_VALUES = ("true", "enabled")
# nos's documentation names nos.nebuly.ai, its code (and so some clusters) nos.nebuly.com.
NOS_LABELS = ("nos.nebuly.ai/gpu-partitioning", "nos.nebuly.com/gpu-partitioning")
NOS_VALUE = "mig"
FILL_CHOICES = ("smallest", "none")
# Reasons that keep a whole node out of the plan start with this.
_NODE_WIDE = "the node cannot be planned: "

_RESOURCE_RE = re.compile(r"^((?:\d+c\.)?\d+g\.\d+gb)(.*)$")

# Tiers of a pod's placement, cheapest first (see the module docstring).
TIER_EXISTING, TIER_CHANGED, TIER_FREE, TIER_PARTLY_USED = range(4)


class DemandError(ValueError):
    """Bad input: names the field and the value."""


def opted_in(labels: Optional[Mapping[str, Any]]) -> bool:
    """Whether a node's labels opt it in: the collection's label, or nos's ``gpu-partitioning=mig``."""
    labels = labels or {}
    return str(labels.get(OPT_IN_LABEL, "")).lower() in OPT_IN_VALUES or any(labels.get(k) == NOS_VALUE for k in NOS_LABELS)


def profile_of_resource(resource: str) -> Optional[str]:
    """``nvidia.com/mig-1g.5gb.me`` -> ``1g.5gb+me``; None for a resource that is not a MIG device."""
    if not resource.startswith(MIG_RESOURCE_PREFIX):
        return None
    match = _RESOURCE_RE.match(resource[len(MIG_RESOURCE_PREFIX):])
    if not match:
        return None
    base, rest = match.groups()
    if rest.startswith("."):
        return base + "+" + rest[1:]
    return base + rest


# --- inputs ----------------------------------------------------------------------------------------


def gpu_from_dict(data: Mapping[str, Any], cache: Optional[Dict[Any, Any]] = None) -> Gpu:
    """A gpu_info GPU (``gpus[]``) as the facts the planners read.

    ``cache`` shares the parsed profile tables and placements between GPUs that report the same
    ones: the GPUs of a fleet are of a few models, and a fleet has thousands of them.
    """
    cache = {} if cache is None else cache
    mig = data.get("mig") or {}
    instances = tuple(
        GpuInstance(
            gi_id=int(i["gi_id"]), profile_id=int(i["profile_id"]), profile=str(i["profile"]),
            placement=_placement(i["placement_start"], i["placement_size"], cache),
            devices=tuple(MigDevice(ci_id=int(d.get("ci_id", 0)), profile=str(d.get("profile") or i["profile"]),
                                    uuid=str(d.get("uuid") or ""), full_width="c." not in str(d.get("profile") or ""))
                          for d in i.get("devices") or []),
        )
        for i in mig.get("instances") or []
    )
    processes = tuple(GpuProcess(pid=int(p.get("pid", 0)), gi_id=p.get("gi_id"), ci_id=p.get("ci_id"))
                      for p in data.get("processes") or [])
    info = _info(data, cache)
    return Gpu(
        index=info.index, uuid=info.uuid, name=info.name, pci_device_id=info.pci_device_id,
        pci_subsystem_id=info.pci_subsystem_id, memory_total_mib=int(data.get("memory_total_mib") or 0),
        mig_capable=info.mig_capable, mig_current=info.mig_current, mig_pending=info.mig_pending,
        profiles=info.profiles, instances=instances, processes=processes,
    )


def _info(data: Mapping[str, Any], cache: Dict[Any, Any]) -> _Info:
    mig = data.get("mig") or {}
    raw = mig.get("profiles") or []
    # A profile table is the model's and the driver's: the same PCI ID and the same profiles, counts
    # and placement counts and ends mean the same table, read once for the fleet.
    key = (data.get("pci_device_id"), data.get("memory_total_mib"),
           tuple([(p["name"], p["id"], p.get("instance_count"), len(p.get("placements") or ()),
                   tuple((p.get("placements") or [{}])[0].items()), tuple((p.get("placements") or [{}])[-1].items()))
                  for p in raw]))
    profiles = cache.get(key)
    if profiles is None:
        exact = tuple((p["name"], p["id"], p.get("enum", -1), p.get("slices"), p.get("memory_mib"), p.get("instance_count"),
                       tuple((x["start"], x["size"]) for x in p.get("placements") or [])) for p in raw)
        profiles = cache[key] = tuple(
            GpuProfile(
                name=str(name), id=int(pid), enum=int(enum), slices=int(slices or 0), memory_mib=int(memory or 0),
                instance_count=int(count or 0), placements=tuple(sorted(_placement(start, size, cache) for start, size in starts)),
                suffix=_suffix(str(name)),
            )
            for name, pid, enum, slices, memory, count, starts in exact
        )
    return _Info(
        index=int(data["index"]), uuid=str(data.get("uuid") or ""), name=str(data.get("name") or ""),
        pci_device_id=str(data.get("pci_device_id") or ""), pci_subsystem_id=str(data.get("pci_subsystem_id") or ""),
        mig_capable=bool(mig.get("capable")), mig_current=bool(mig.get("current")), mig_pending=bool(mig.get("pending")),
        profiles=profiles,
    )


def _placement(start: Any, size: Any, cache: Dict[Any, Any]) -> Placement:
    key = ("placement", int(start), int(size))
    found = cache.get(key)
    if found is None:
        found = cache[key] = Placement(key[1], key[2])
    return found


def _suffix(name: str) -> str:
    for mark in ("+", "-"):
        if mark in name:
            return mark + name.split(mark, 1)[1]
    return ""


@dataclass(frozen=True)
class PendingPod:
    namespace: str
    name: str
    requests: Tuple[Tuple[str, int], ...]  # resource -> count, sorted
    priority: int = 0
    node_selector: Tuple[Tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return "%s/%s" % (self.namespace, self.name)


def parse_pods(pods: Any) -> List[PendingPod]:
    """``[{namespace, name, requests: {resource: count}, priority, node_selector}]``, checked."""
    if not isinstance(pods, list):
        raise DemandError("pods: expected a list, got %s" % excerpt(pods))
    parsed: Dict[str, PendingPod] = {}
    for position, pod in enumerate(pods):
        where = "pods[%d]" % position
        if not isinstance(pod, Mapping):
            raise DemandError("%s: expected a mapping, got %s" % (where, excerpt(pod)))
        name, namespace = pod.get("name"), pod.get("namespace", "default")
        if not isinstance(name, str) or not name or not isinstance(namespace, str) or not namespace:
            raise DemandError("%s: name and namespace must be non-empty strings, got %s" % (where, excerpt(pod)))
        requests = pod.get("requests") or {}
        if not isinstance(requests, Mapping):
            raise DemandError("%s.requests: expected a mapping of resource to count, got %s" % (where, excerpt(requests)))
        counts = []
        for resource, count in sorted(requests.items()):
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise DemandError("%s.requests.%s: expected a count >= 0, got %s" % (where, resource, excerpt(count)))
            if count and str(resource).startswith("nvidia.com/"):
                counts.append((str(resource), count))
        priority = pod.get("priority") or 0
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise DemandError("%s.priority: expected an integer, got %s" % (where, excerpt(priority)))
        selector = pod.get("node_selector") or {}
        if not isinstance(selector, Mapping):
            raise DemandError("%s.node_selector: expected a mapping, got %s" % (where, excerpt(selector)))
        entry = PendingPod(namespace, name, tuple(counts), priority, tuple(sorted((str(k), str(v)) for k, v in selector.items())))
        if entry.key in parsed:
            raise DemandError("%s: pod %s is listed twice" % (where, entry.key))
        if counts:
            parsed[entry.key] = entry
    return list(parsed.values())


def allowed_geometries(spec: Optional[MigSpec], gpu: Any) -> Optional[List[Dict[str, int]]]:
    """The geometries a GPU may take from a mig-parted document: every enabled entry of every named
    config that matches the GPU (device-filter and devices), as ``{profile: count}``. None: no list
    was given, or none of its entries matches the GPU's model, so NVML's placements alone decide."""
    if spec is None:
        return None
    found: List[Dict[str, int]] = []
    for name in spec.names():
        for entry in spec.configs[name]:
            if entry.mig_enabled and entry.matches(gpu.index, gpu.pci_device_id, gpu.pci_subsystem_id):
                geometry = {profile: count for profile, count in entry.mig_devices if count}
                if geometry and geometry not in found:
                    found.append(geometry)
    return found or None


# --- one GPU ---------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """An existing GPU instance and what the plan does with it."""

    profile: str
    placement: Placement
    allocated: bool
    processes: bool = False
    claimed_by: Optional[str] = None


@dataclass(frozen=True)
class _Info:
    """What the planner reads of a GPU, parsed cheaply; plan.py's full facts are built on demand."""

    index: int
    uuid: str
    name: str
    pci_device_id: str
    pci_subsystem_id: str
    mig_capable: bool
    mig_current: bool
    mig_pending: bool
    profiles: Tuple[GpuProfile, ...]


@dataclass
class _Gpu:
    node: str
    info: _Info
    raw: Mapping[str, Any]
    cache: Dict[Any, Any]
    table_key: int
    profiles: Dict[str, GpuProfile]
    slots: List[_Slot]
    changeable: bool
    reason: str = ""
    allowed: Optional[List[Dict[str, int]]] = None
    new: List[Tuple[str, str]] = field(default_factory=list)  # (profile, pod) created for pods
    geometry: Optional[Dict[str, int]] = None  # final, for a changed GPU
    in_use: bool = False
    free: Dict[str, List[_Slot]] = field(default_factory=dict)  # unclaimed free instances by profile

    def __post_init__(self) -> None:
        free = self.free
        for slot in self.slots:
            if slot.allocated:
                self.in_use = True
            elif slot.profile in free:
                free[slot.profile].append(slot)
            else:
                free[slot.profile] = [slot]

    @property
    def changed(self) -> bool:
        return bool(self.new)

    def facts(self) -> Gpu:
        if "_facts" not in self.__dict__:
            self.__dict__["_facts"] = gpu_from_dict(self.raw, self.cache)
        return self.__dict__["_facts"]

    def fixed(self) -> List[_Slot]:
        """Instances that stay where they are: allocated ones and free ones a pod claimed."""
        return [slot for slot in self.slots if slot.allocated or slot.claimed_by]

    def free_slots(self, profile: str) -> List[_Slot]:
        return self.free.get(profile, [])

    def claim(self, slot: _Slot, pod: str) -> None:
        slot.claimed_by = pod
        self.free[slot.profile].remove(slot)


def _counts(names: Iterable[str]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


class _Fit:
    """Whether a set of instances fits a GPU: NVML's counts and placements, the media-engine rule,
    the allowed geometries. Memoised: the GPUs of a fleet are mostly alike."""

    def __init__(self) -> None:
        self.memo: Dict[Any, Optional[Dict[str, int]]] = {}
        self.kept: Dict[Any, bool] = {}

    def geometry(self, state: _Gpu, fixed: Sequence[_Slot], new: Sequence[str]) -> Optional[Dict[str, int]]:
        """The smallest geometry holding ``fixed`` (where they are) and ``new``; None if none fits.

        With allowed geometries, the first allowed one that holds them; else exactly them.
        """
        key = (state.table_key, tuple(sorted((s.profile, s.placement.start) for s in fixed)), tuple(sorted(new)),
               None if state.allowed is None else id(state.allowed))
        if key not in self.memo:
            self.memo[key] = self._geometry(state, fixed, new)
        return self.memo[key]

    def _geometry(self, state: _Gpu, fixed: Sequence[_Slot], new: Sequence[str]) -> Optional[Dict[str, int]]:
        wanted = _counts([s.profile for s in fixed] + list(new))
        candidates = [wanted] if state.allowed is None else [
            g for g in state.allowed if all(g.get(name, 0) >= count for name, count in wanted.items())]
        fixed_counts = _counts(s.profile for s in fixed)
        for geometry in candidates:
            if self.fits(state, geometry, fixed, fixed_counts):
                return dict(geometry)
        return None

    @staticmethod
    def fits(state: _Gpu, geometry: Mapping[str, int], fixed: Sequence[_Slot], fixed_counts: Mapping[str, int]) -> bool:
        profiles = state.profiles
        if any(name not in profiles or count > profiles[name].instance_count for name, count in geometry.items()):
            return False
        all_me = [name for name in geometry if profiles[name].suffix == "+me.all"]
        if all_me and (sum(geometry[n] for n in all_me) > 1
                       or any(profiles[n].suffix != "-me" for n in geometry if n not in all_me)):
            return False
        remaining: List[GpuProfile] = []
        for name, count in sorted(geometry.items()):
            remaining.extend([profiles[name]] * (count - fixed_counts.get(name, 0)))
        return find_placements(remaining, [s.placement for s in fixed]) is not None


def _entry(index: int, geometry: Mapping[str, int]) -> ConfigEntry:
    return ConfigEntry(config="demand", position=0, mig_enabled=True, devices=(index,),
                       mig_devices=tuple(sorted((name, count) for name, count in geometry.items() if count)))


def _keeps_allocated(state: _Gpu, geometry: Mapping[str, int], fit: Optional["_Fit"] = None) -> bool:
    """Whether the rollout's own planner, given this geometry, keeps every allocated instance."""
    if not state.in_use:
        return True
    if fit is None:
        return _plan_keeps_allocated(state, geometry)
    # What plan.py's choice depends on: the instances in NVML's order, which are held, which run processes.
    key = (state.table_key, tuple((s.profile, s.placement.start, s.allocated, s.processes) for s in state.slots),
           tuple(sorted(geometry.items())))
    if key not in fit.kept:
        fit.kept[key] = _plan_keeps_allocated(state, geometry)
    return fit.kept[key]


def _plan_keeps_allocated(state: _Gpu, geometry: Mapping[str, int]) -> bool:
    gpu_plan, problems = plan_gpu(state.facts(), _entry(state.info.index, geometry), "demand", in_use="ignore")
    if problems:
        return False
    allocated = {(s.profile, s.placement) for s in state.slots if s.allocated}
    return not any((gi.profile, gi.placement) in allocated for gi in gpu_plan.destroy)


def _fill(state: _Gpu, fit: _Fit, fill: str) -> Dict[str, int]:
    """The final geometry of a changed GPU: what its pods need, then the default shape."""
    required = fit.geometry(state, state.fixed(), [p for p, _pod in state.new])
    if required is None:  # pragma: no cover - every step that led here was checked to fit
        raise RuntimeError("GPU %d of node %s: the planned instances no longer fit" % (state.info.index, state.node))
    if state.allowed is not None or fill == "none":
        return required
    fixed = list(state.fixed())
    new = [p for p, _pod in state.new]
    # Free instances that still fit stay (nothing to destroy and re-create for them).
    for slot in sorted(state.slots, key=lambda s: s.placement):
        if slot in fixed:
            continue
        if fit.geometry(state, fixed + [slot], new) is not None:
            fixed.append(slot)
    plain = [p for p in state.profiles.values() if not p.suffix and p.placements]
    if plain:
        smallest = min(plain, key=lambda p: (p.placements[0].size, p.slices, p.memory_mib, p.name))
        while fit.geometry(state, fixed, new + [smallest.name]) is not None:
            new.append(smallest.name)
    geometry = fit.geometry(state, fixed, new) or required
    if geometry != required and not _keeps_allocated(state, geometry, fit):
        return required
    return geometry


# --- the fleet -------------------------------------------------------------------------------------


@dataclass
class _Node:
    name: str
    labels: Dict[str, str]
    gpus: List[_Gpu]


def _node_states(nodes: Any, spec: Optional[MigSpec], tables: Dict[Any, int]) -> Tuple[List[_Node], List[Dict[str, str]]]:
    if not isinstance(nodes, list):
        raise DemandError("nodes: expected a list, got %s" % excerpt(nodes))
    states: List[_Node] = []
    skipped: List[Dict[str, str]] = []
    seen = set()
    parsed: Dict[Any, Any] = {}
    for position, node in enumerate(nodes):
        where = "nodes[%d]" % position
        if not isinstance(node, Mapping) or not isinstance(node.get("name"), str) or not node.get("name"):
            raise DemandError("%s: expected a mapping with a non-empty 'name', got %s" % (where, excerpt(node)))
        name = node["name"]
        if name in seen:
            raise DemandError("%s: node %s is listed twice" % (where, name))
        seen.add(name)
        gpus = node.get("gpus")
        if not isinstance(gpus, list):
            raise DemandError("%s.gpus: expected gpu_info's gpus list, got %s" % (where, excerpt(gpus)))
        allocated = node.get("allocated")
        if allocated is not None and not isinstance(allocated, list):
            raise DemandError("%s.allocated: expected a list of device UUIDs, got %s" % (where, excerpt(allocated)))
        unknown = allocated is None
        used = set(allocated or [])
        try:
            node_gpus = sorted((_gpu_state(name, raw, used, unknown, spec, tables, parsed) for raw in gpus),
                               key=lambda g: g.info.index)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DemandError("%s.gpus: not gpu_info's gpus list (%s)" % (where, excerpt(str(exc))))
        blocking = sorted({g.reason for g in node_gpus if g.reason.startswith(_NODE_WIDE)})
        if blocking:
            # The node's config names every GPU, and such a GPU cannot be written as it is: leave the node alone.
            for state in node_gpus:
                state.changeable, state.reason = False, blocking[0]
        if not any(g.changeable for g in node_gpus):
            reasons = sorted({g.reason for g in node_gpus if g.reason}) or ["it has no GPU"]
            skipped.append({"node": name, "reason": "; ".join(reasons)})
        labels = {str(k): str(v) for k, v in (node.get("labels") or {}).items()}
        states.append(_Node(name, labels, node_gpus))
    return sorted(states, key=lambda n: n.name), skipped


def _gpu_state(node: str, raw: Mapping[str, Any], used: set, unknown: bool, spec: Optional[MigSpec],
               tables: Dict[Any, Any], parsed: Dict[Any, Any]) -> _Gpu:
    gpu = _info(raw, parsed)
    # GPUs that report the same profile table share one parsed tuple (_info's cache).
    where = (id(gpu.profiles), gpu.index, gpu.pci_device_id, gpu.pci_subsystem_id)
    if where not in tables:
        allowed = allowed_geometries(spec, gpu)
        shape = (id(gpu.profiles), json.dumps(allowed, sort_keys=True))
        tables[where] = (tables.setdefault(shape, len(tables)), allowed)
    table_key, allowed = tables[where]
    profiles = {p.name: p for p in gpu.profiles}
    processes = raw.get("processes") or []
    running = {p.get("gi_id") for p in processes}
    slots = []
    narrow = False
    instances = (raw.get("mig") or {}).get("instances") or [] if gpu.mig_current else []
    for instance in instances:
        devices = instance.get("devices") or []
        on_it = instance.get("gi_id") in running
        busy = unknown or on_it or any(d.get("uuid") in used for d in devices)
        narrow = narrow or any("c." in str(d.get("profile") or "") for d in devices)
        slots.append(_Slot(str(instance["profile"]), _placement(instance["placement_start"], instance["placement_size"], parsed),
                           busy, on_it))
    reason = ""
    if narrow:
        reason = _NODE_WIDE + "GPU %d has compute instances narrower than their GPU instance" % gpu.index
    elif gpu.mig_capable and gpu.mig_pending != gpu.mig_current:
        reason = _NODE_WIDE + "GPU %d has a MIG mode change pending" % gpu.index
    elif any(s.profile not in profiles for s in slots):
        reason = _NODE_WIDE + "GPU %d has an instance of a profile it does not list" % gpu.index
    elif not gpu.mig_capable:
        reason = "GPU %d is not MIG-capable" % gpu.index
    elif not gpu.mig_current:
        reason = "GPU %d has MIG disabled; demand planning never changes the MIG mode" % gpu.index
    elif gpu.uuid in used or None in running:
        reason = "GPU %d is in use as a whole GPU" % gpu.index
    elif unknown and slots:
        reason = "which MIG devices are allocated is unknown on this node"
    return _Gpu(node, gpu, raw, parsed, table_key, profiles, slots, changeable=not reason, reason=reason, allowed=allowed)


def _pod_order(pod: PendingPod, slices: Mapping[str, int]) -> Tuple[Any, ...]:
    size = sum(slices.get(resource, 8) * count for resource, count in pod.requests)
    return (-pod.priority, size, pod.namespace, pod.name)


def _try_node(node: _Node, pod: PendingPod, wanted: List[str], tier: int, fit: _Fit) -> Optional[List[Tuple[_Gpu, Any]]]:
    """Where each wanted device of the pod goes on this node with at most ``tier``: a list of
    (GPU, slot to claim or profile to create); None when the pod does not fit. Changes nothing."""
    claimed: Dict[int, List[_Slot]] = {}
    created: Dict[int, List[str]] = {}
    steps: List[Tuple[_Gpu, Any]] = []
    for profile in wanted:
        step = None
        # Free devices that exist already, on any GPU (also one that cannot change), come first.
        for state in node.gpus:
            taken = claimed.get(state.info.index, [])
            for slot in state.free_slots(profile):
                if slot in taken:
                    continue
                if state.changed or state.info.index in created:
                    # The GPU is being re-laid: the device stays only if the new instances fit around it.
                    new = [p for p, _pod in state.new] + created.get(state.info.index, [])
                    geometry = fit.geometry(state, state.fixed() + taken + [slot], new)
                    if geometry is None or not _keeps_allocated(state, geometry, fit):
                        continue
                step = (state, slot)
                break
            if step:
                break
        if step is None and tier >= TIER_CHANGED:
            for rank in range(TIER_CHANGED, tier + 1):
                for state in node.gpus:
                    if not state.changeable or profile not in state.profiles:
                        continue
                    if _rank(state, created) != rank:
                        continue
                    extra = created.get(state.info.index, []) + [profile]
                    fixed = state.fixed() + claimed.get(state.info.index, [])
                    geometry = fit.geometry(state, fixed, [p for p, _pod in state.new] + extra)
                    if geometry is None or not _keeps_allocated(state, geometry, fit):
                        continue
                    step = (state, profile)
                    break
                if step:
                    break
        if step is None:
            return None
        state, what = step
        if isinstance(what, _Slot):
            claimed.setdefault(state.info.index, []).append(what)
        else:
            created.setdefault(state.info.index, []).append(what)
        steps.append(step)
    return steps


def _rank(state: _Gpu, created: Mapping[int, List[str]]) -> int:
    if state.changed or state.info.index in created:
        return TIER_CHANGED
    return TIER_PARTLY_USED if state.in_use else TIER_FREE


def _why_not(pod: PendingPod, nodes: Sequence[_Node], wanted: List[str]) -> str:
    whole = [resource for resource, _count in pod.requests if not resource.startswith(MIG_RESOURCE_PREFIX)]
    if whole:
        return ("requests %s: a whole GPU needs MIG disabled, and demand planning changes MIG devices only, never "
                "the MIG mode" % ", ".join(whole))
    if not nodes:
        return "no opted-in node matches the pod's node selector"
    offered = {name for node in nodes for state in node.gpus for name in state.profiles}
    missing = sorted(set(wanted) - offered)
    if missing:
        return "no GPU of an opted-in node offers MIG profile %s" % ", ".join(missing)
    allowed_out = sorted({name for name in wanted if all(
        state.allowed is not None and not any(name in g for g in state.allowed)
        for node in nodes for state in node.gpus if name in state.profiles)})
    if allowed_out:
        return "MIG profile %s is in no allowed geometry of the GPUs that offer it" % ", ".join(allowed_out)
    return ("not enough free room: every opted-in GPU that offers %s is in use or already planned for other pending "
            "pods" % ", ".join(sorted(set(wanted))))


def _config_name(entries: List[Dict[str, Any]]) -> str:
    digest = hashlib.sha256(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest()
    return CONFIG_PREFIX + digest[:12]


def _gpu_entry(state: _Gpu) -> Dict[str, Any]:
    index = state.info.index
    if not state.info.mig_current:
        return {"devices": [index], "mig-enabled": False}
    geometry = state.geometry if state.changed else _counts(slot.profile for slot in state.slots)
    return {"devices": [index], "mig-enabled": True, "mig-devices": dict(sorted((geometry or {}).items()))}


class _Search:
    """Which nodes may still take a profile at each tier, in name order.

    What a node can take only shrinks as pods are served (devices are claimed, GPUs fill up), with
    one exception: a GPU the plan starts changing joins the "already changed" tier. So a node that
    cannot take a profile at a tier is dropped from that tier's list for good, a set of devices no
    node can take is not searched for again, and the search stays near-linear in pods plus nodes.
    """

    def __init__(self, nodes: List[_Node]) -> None:
        self.nodes = nodes
        self.open: Dict[Tuple[int, str], List[int]] = {}
        self.failed: Dict[int, set] = {}
        for position, node in enumerate(nodes):
            for state in node.gpus:
                for profile, slots in state.free.items():
                    if slots:
                        self.add(TIER_EXISTING, profile, position)
                if state.changeable:
                    for profile in state.profiles:
                        self.add(TIER_PARTLY_USED if state.in_use else TIER_FREE, profile, position)

    def add(self, tier: int, profile: str, position: int) -> None:
        positions = self.open.setdefault((tier, profile), [])
        if not positions or positions[-1] < position:
            positions.append(position)
            return
        at = bisect.bisect_left(positions, position)
        if at == len(positions) or positions[at] != position:
            positions.insert(at, position)

    def drop(self, tier: int, profile: str, position: int) -> None:
        positions = self.open.get((tier, profile), [])
        at = bisect.bisect_left(positions, position)
        if at < len(positions) and positions[at] == position:
            del positions[at]

    def candidates(self, tier: int, profiles: Sequence[str]) -> List[int]:
        found = set()
        for profile in set(profiles):
            found.update(self.open.get((tier, profile), ()))
        return sorted(found)

    def place(self, pod: PendingPod, wanted: List[str], fit: _Fit) -> Optional[Tuple[_Node, List[Tuple[_Gpu, Any]]]]:
        key = tuple(wanted)
        for tier in range(TIER_EXISTING, TIER_PARTLY_USED + 1):
            for position in self.candidates(tier, wanted):
                node = self.nodes[position]
                if any(node.labels.get(k) != v for k, v in pod.node_selector) or (tier, key) in self.failed.get(position, ()):
                    continue
                steps = _try_node(node, pod, wanted, tier, fit)
                if steps is not None:
                    return node, steps
                if len(wanted) == 1:
                    self.drop(tier, wanted[0], position)
                else:
                    self.failed.setdefault(position, set()).add((tier, key))
        return None

    def served(self, position: int, steps: List[Tuple[_Gpu, Any]], newly_changed: List[_Gpu]) -> None:
        for state in newly_changed:
            self.failed.pop(position, None)
            for profile in state.profiles:
                self.add(TIER_CHANGED, profile, position)


def plan_demand(pods: Any, nodes: Any, allowed: Optional[MigSpec] = None, fill: str = "smallest") -> Dict[str, Any]:
    """The demand plan (see the module docstring). ``nodes``: ``[{name, labels, gpus, allocated}]``
    where ``gpus`` is gpu_info's list and ``allocated`` the UUIDs of the devices pods hold (None when
    unknown: every instance counts as allocated). Raises DemandError for bad input."""
    if fill not in FILL_CHOICES:
        raise DemandError("fill: expected one of %s, got %s" % (", ".join(FILL_CHOICES), excerpt(fill)))
    # A fleet's plan allocates some hundred thousand small objects, and each collection of the
    # cyclic garbage collector would walk the caller's inputs (every node's report) again: about
    # 40 % of the time of a 1,000-node plan. The plan makes no reference cycles to reclaim meanwhile.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _plan(pods, nodes, allowed, fill)
    finally:
        if collecting:
            gc.enable()


def _plan(pods: Any, nodes: Any, allowed: Optional[MigSpec], fill: str) -> Dict[str, Any]:
    pending = parse_pods(pods)
    node_states, skipped = _node_states(nodes, allowed, {})
    fit = _Fit()
    search = _Search(node_states)
    positions = {node.name: position for position, node in enumerate(node_states)}
    slices: Dict[str, int] = {}
    tables = {id(state.info.profiles): state.info.profiles for node in node_states for state in node.gpus}
    for table in tables.values():
        for profile in table:
            slices.setdefault(MIG_RESOURCE_PREFIX + profile.name.replace("+", "."), max(1, profile.slices))
    served: List[Dict[str, Any]] = []
    unsatisfied: List[Dict[str, Any]] = []
    # Devices that no node could take stay so: the fleet only fills up while pods are served.
    hopeless: Dict[Any, str] = {}
    for pod in sorted(pending, key=lambda p: _pod_order(p, slices)):
        wanted = [profile_of_resource(r) or "" for r, count in pod.requests for _unit in range(count)]
        wanted.sort(key=lambda p: (-slices.get(MIG_RESOURCE_PREFIX + p.replace("+", "."), 1), p))
        failure = (pod.requests, pod.node_selector)
        placed = None
        if all(wanted) and failure not in hopeless:
            placed = search.place(pod, wanted, fit)
        if placed is None:
            if failure not in hopeless:
                candidates = [n for n in node_states if all(n.labels.get(k) == v for k, v in pod.node_selector)]
                hopeless[failure] = _why_not(pod, candidates, wanted)
            unsatisfied.append({"pod": pod.key, "requests": dict(pod.requests), "reason": hopeless[failure]})
            continue
        node, steps = placed
        devices: Dict[int, List[str]] = {}
        created = False
        newly_changed = []
        for state, what in steps:
            if isinstance(what, _Slot):
                state.claim(what, pod.key)
                devices.setdefault(state.info.index, []).append(what.profile)
            else:
                if not state.changed:
                    newly_changed.append(state)
                state.new.append((what, pod.key))
                devices.setdefault(state.info.index, []).append(what)
                created = True
        search.served(positions[node.name], steps, newly_changed)
        served.append({"pod": pod.key, "node": node.name, "new_devices": created,
                       "devices": {str(i): _counts(names) for i, names in sorted(devices.items())}})
    return _result(node_states, served, unsatisfied, skipped, fit, fill)


def _result(node_states: List[_Node], served: List[Dict[str, Any]], unsatisfied: List[Dict[str, Any]],
            skipped: List[Dict[str, str]], fit: _Fit, fill: str) -> Dict[str, Any]:
    configs: Dict[str, List[Dict[str, Any]]] = {}
    assignments: Dict[str, str] = {}
    changes: Dict[str, Any] = {}
    for node in node_states:
        changed = [s for s in node.gpus if s.changed]
        if not changed:
            continue
        for state in changed:
            state.geometry = _fill(state, fit, fill)
        entries = [_gpu_entry(state) for state in node.gpus]
        name = _config_name(entries)
        configs[name] = entries
        assignments[node.name] = name
        changes[node.name] = {"config": name, "gpus": [_gpu_change(state) for state in changed]}
    return {
        "changed": bool(assignments),
        "mig_configs": configs,
        "document": {"version": "v1", "mig-configs": configs},
        "assignments": assignments,
        "nodes": changes,
        "served": served,
        "unsatisfied": unsatisfied,
        "skipped_nodes": skipped,
    }


def _gpu_change(state: _Gpu) -> Dict[str, Any]:
    before = _counts(slot.profile for slot in state.slots)
    after = dict(state.geometry or {})
    return {
        "index": state.info.index,
        "uuid": state.info.uuid,
        "name": state.info.name,
        "before": before,
        "after": after,
        "create": {n: after.get(n, 0) - before.get(n, 0) for n in sorted(after) if after.get(n, 0) > before.get(n, 0)},
        "destroy": {n: before[n] - after.get(n, 0) for n in sorted(before) if before[n] > after.get(n, 0)},
        "kept_in_use": _counts(s.profile for s in state.slots if s.allocated),
        "pods": sorted({pod for _profile, pod in state.new}),
    }
