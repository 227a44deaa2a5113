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
NOS_LABEL = "nos.nebuly.ai/gpu-partitioning"
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
    return str(labels.get(OPT_IN_LABEL, "")).lower() in OPT_IN_VALUES or labels.get(NOS_LABEL) == NOS_VALUE


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


def gpu_from_dict(data: Mapping[str, Any]) -> Gpu:
    """A gpu_info GPU (``gpus[]``) as the facts the planners read."""
    mig = data.get("mig") or {}
    profiles = tuple(
        GpuProfile(
            name=str(p["name"]), id=int(p["id"]), enum=int(p.get("enum", -1)), slices=int(p.get("slices") or 0),
            memory_mib=int(p.get("memory_mib") or 0), instance_count=int(p.get("instance_count") or 0),
            placements=tuple(sorted(Placement(int(x["start"]), int(x["size"])) for x in p.get("placements") or [])),
            suffix=_suffix(str(p["name"])),
        )
        for p in mig.get("profiles") or []
    )
    instances = tuple(
        GpuInstance(
            gi_id=int(i["gi_id"]), profile_id=int(i["profile_id"]), profile=str(i["profile"]),
            placement=Placement(int(i["placement_start"]), int(i["placement_size"])),
            devices=tuple(MigDevice(ci_id=int(d.get("ci_id", 0)), profile=str(d.get("profile") or i["profile"]),
                                    uuid=str(d.get("uuid") or ""), full_width="c." not in str(d.get("profile") or ""))
                          for d in i.get("devices") or []),
        )
        for i in mig.get("instances") or []
    )
    processes = tuple(GpuProcess(pid=int(p.get("pid", 0)), gi_id=p.get("gi_id"), ci_id=p.get("ci_id"))
                      for p in data.get("processes") or [])
    return Gpu(
        index=int(data["index"]), uuid=str(data.get("uuid") or ""), name=str(data.get("name") or ""),
        pci_device_id=str(data.get("pci_device_id") or ""), pci_subsystem_id=str(data.get("pci_subsystem_id") or ""),
        memory_total_mib=int(data.get("memory_total_mib") or 0), mig_capable=bool(mig.get("capable")),
        mig_current=bool(mig.get("current")), mig_pending=bool(mig.get("pending")),
        profiles=profiles, instances=instances, processes=processes,
    )


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


def allowed_geometries(spec: Optional[MigSpec], gpu: Gpu) -> Optional[List[Dict[str, int]]]:
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
    claimed_by: Optional[str] = None


@dataclass
class _Gpu:
    node: str
    gpu: Gpu
    table_key: int
    profiles: Dict[str, GpuProfile]
    slots: List[_Slot]
    changeable: bool
    reason: str = ""
    allowed: Optional[List[Dict[str, int]]] = None
    new: List[Tuple[str, str]] = field(default_factory=list)  # (profile, pod) created for pods
    geometry: Optional[Dict[str, int]] = None  # final, for a changed GPU

    @property
    def changed(self) -> bool:
        return bool(self.new)

    @property
    def in_use(self) -> bool:
        return any(slot.allocated for slot in self.slots)

    def fixed(self) -> List[_Slot]:
        """Instances that stay where they are: allocated ones and free ones a pod claimed."""
        return [slot for slot in self.slots if slot.allocated or slot.claimed_by]

    def free_slots(self, profile: str) -> List[_Slot]:
        return [slot for slot in self.slots if slot.profile == profile and not slot.allocated and not slot.claimed_by]


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


def _keeps_allocated(state: _Gpu, geometry: Mapping[str, int]) -> bool:
    """Whether the rollout's own planner, given this geometry, keeps every allocated instance."""
    if not state.in_use:
        return True
    gpu_plan, problems = plan_gpu(state.gpu, _entry(state.gpu.index, geometry), "demand", in_use="ignore")
    if problems:
        return False
    allocated = {(s.profile, s.placement) for s in state.slots if s.allocated}
    return not any((gi.profile, gi.placement) in allocated for gi in gpu_plan.destroy)


def _fill(state: _Gpu, fit: _Fit, fill: str) -> Dict[str, int]:
    """The final geometry of a changed GPU: what its pods need, then the default shape."""
    required = fit.geometry(state, state.fixed(), [p for p, _pod in state.new])
    if required is None:  # pragma: no cover - every step that led here was checked to fit
        raise RuntimeError("GPU %d of node %s: the planned instances no longer fit" % (state.gpu.index, state.node))
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
    if geometry != required and not _keeps_allocated(state, geometry):
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
        try:
            facts = sorted((gpu_from_dict(g) for g in gpus), key=lambda g: g.index)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DemandError("%s.gpus: not gpu_info's gpus list (%s)" % (where, excerpt(str(exc))))
        unknown = allocated is None
        used = set(allocated or [])
        node_gpus = [_gpu_state(name, gpu, used, unknown, spec, tables) for gpu in facts]
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


def _gpu_state(node: str, gpu: Gpu, used: set, unknown: bool, spec: Optional[MigSpec], tables: Dict[Any, int]) -> _Gpu:
    table = tuple((p.name, p.id, p.instance_count, p.placements) for p in gpu.profiles)
    profiles = {p.name: p for p in gpu.profiles}
    allowed = allowed_geometries(spec, gpu)
    table_key = tables.setdefault((table, json.dumps(allowed, sort_keys=True)), len(tables))
    slots = []
    reason = ""
    unplaced = any(p.gi_id is None for p in gpu.processes)
    for gi in gpu.instances:
        busy = unknown or bool(gpu.processes_on(gi.gi_id)) or any(d.uuid in used for d in gi.devices)
        slots.append(_Slot(gi.profile, gi.placement, busy))
    if any(not d.full_width for gi in gpu.instances for d in gi.devices):
        reason = _NODE_WIDE + "GPU %d has compute instances narrower than their GPU instance" % gpu.index
    elif gpu.mig_capable and gpu.mig_pending != gpu.mig_current:
        reason = _NODE_WIDE + "GPU %d has a MIG mode change pending" % gpu.index
    elif any(s.profile not in profiles for s in slots):
        reason = _NODE_WIDE + "GPU %d has an instance of a profile it does not list" % gpu.index
    elif not gpu.mig_capable:
        reason = "GPU %d is not MIG-capable" % gpu.index
    elif not gpu.mig_current:
        reason = "GPU %d has MIG disabled; demand planning never changes the MIG mode" % gpu.index
    elif gpu.uuid in used or unplaced:
        reason = "GPU %d is in use as a whole GPU" % gpu.index
    elif unknown and slots:
        reason = "which MIG devices are allocated is unknown on this node"
    return _Gpu(node, gpu, table_key, profiles, slots, changeable=not reason, reason=reason, allowed=allowed)


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
            taken = claimed.get(state.gpu.index, [])
            for slot in state.free_slots(profile):
                if slot in taken:
                    continue
                if state.changed or state.gpu.index in created:
                    # The GPU is being re-laid: the device stays only if the new instances fit around it.
                    new = [p for p, _ in state.new] + created.get(state.gpu.index, [])
                    geometry = fit.geometry(state, state.fixed() + taken + [slot], new)
                    if geometry is None or not _keeps_allocated(state, geometry):
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
                    extra = created.get(state.gpu.index, []) + [profile]
                    fixed = state.fixed() + claimed.get(state.gpu.index, [])
                    geometry = fit.geometry(state, fixed, [p for p, _ in state.new] + extra)
                    if geometry is None or not _keeps_allocated(state, geometry):
                        continue
                    step = (state, profile)
                    break
                if step:
                    break
        if step is None:
            return None
        state, what = step
        if isinstance(what, _Slot):
            claimed.setdefault(state.gpu.index, []).append(what)
        else:
            created.setdefault(state.gpu.index, []).append(what)
        steps.append(step)
    return steps


def _rank(state: _Gpu, created: Mapping[int, List[str]]) -> int:
    if state.changed or state.gpu.index in created:
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
    gpu = state.gpu
    if not gpu.mig_current:
        return {"devices": [gpu.index], "mig-enabled": False}
    geometry = state.geometry if state.changed else _counts(gi.profile for gi in gpu.instances)
    return {"devices": [gpu.index], "mig-enabled": True, "mig-devices": dict(sorted((geometry or {}).items()))}


def plan_demand(pods: Any, nodes: Any, allowed: Optional[MigSpec] = None, fill: str = "smallest") -> Dict[str, Any]:
    """The demand plan (see the module docstring). ``nodes``: ``[{name, labels, gpus, allocated}]``
    where ``gpus`` is gpu_info's list and ``allocated`` the UUIDs of the devices pods hold (None when
    unknown: every instance counts as allocated). Raises DemandError for bad input."""
    if fill not in FILL_CHOICES:
        raise DemandError("fill: expected one of %s, got %s" % (", ".join(FILL_CHOICES), excerpt(fill)))
    pending = parse_pods(pods)
    node_states, skipped = _node_states(nodes, allowed, {})
    fit = _Fit()
    slices = {}
    for node in node_states:
        for state in node.gpus:
            for name, profile in state.profiles.items():
                slices.setdefault(MIG_RESOURCE_PREFIX + name.replace("+", "."), max(1, profile.slices))
    served: List[Dict[str, Any]] = []
    unsatisfied: List[Dict[str, Any]] = []
    for pod in sorted(pending, key=lambda p: _pod_order(p, slices)):
        candidates = [n for n in node_states if all(n.labels.get(k) == v for k, v in pod.node_selector)]
        wanted = [profile_of_resource(r) or "" for r, count in pod.requests for _ in range(count)]
        wanted.sort(key=lambda p: (-slices.get(MIG_RESOURCE_PREFIX + p.replace("+", "."), 1), p))
        placed = None
        if all(wanted):
            for tier in range(TIER_EXISTING, TIER_PARTLY_USED + 1):
                for node in candidates:
                    steps = _try_node(node, pod, wanted, tier, fit)
                    if steps is not None:
                        placed = (node, steps)
                        break
                if placed:
                    break
        if placed is None:
            unsatisfied.append({"pod": pod.key, "requests": dict(pod.requests), "reason": _why_not(pod, candidates, wanted)})
            continue
        node, steps = placed
        devices: Dict[int, List[str]] = {}
        created = False
        for state, what in steps:
            if isinstance(what, _Slot):
                what.claimed_by = pod.key
                devices.setdefault(state.gpu.index, []).append(what.profile)
            else:
                state.new.append((what, pod.key))
                devices.setdefault(state.gpu.index, []).append(what)
                created = True
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
    before = _counts(gi.profile for gi in state.gpu.instances)
    after = dict(state.geometry or {})
    return {
        "index": state.gpu.index,
        "uuid": state.gpu.uuid,
        "name": state.gpu.name,
        "before": before,
        "after": after,
        "create": {n: after.get(n, 0) - before.get(n, 0) for n in sorted(after) if after.get(n, 0) > before.get(n, 0)},
        "destroy": {n: before[n] - after.get(n, 0) for n in sorted(before) if before[n] > after.get(n, 0)},
        "kept_in_use": _counts(s.profile for s in state.slots if s.allocated),
        "pods": sorted({pod for _profile, pod in state.new}),
    }
