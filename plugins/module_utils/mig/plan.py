# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection: no compatibility promise outside gpuops.nvidia.
"""Diff the observed GPUs against a selected mig-parted config: what to keep, destroy and create.

Pure: the input is the config entries and the GPUs as NVML reported them (``facts.Gpu``: the
profiles each GPU offers with their legal placements, its GPU instances with theirs). Nothing here
knows a GPU model. Every targeted GPU is validated before the caller mutates anything: a
``PlanError`` lists every problem on every GPU.

Per GPU the plan keeps the existing GPU instances whose profile is wanted (wherever they sit),
destroys the rest, and creates the missing ones at explicit placements found by an exhaustive
search of the legal starts (the grid has at most 8 memory slices). When the wanted instances cannot
all be placed around the kept ones, it keeps fewer, down to none (a full re-layout of that GPU
only); instances that run processes are the last to be given up.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.facts import Gpu, GpuInstance, GpuProfile, Placement
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.naming import parse_profile
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import ConfigEntry

# A renamed profile (7g.79gb -> 7g.80gb, 1g.24gb -> 1g.23gb) differs by driver memory accounting
# only: accept the nearest profile of the same shape within this share of the larger size. Another
# model's profile (1g.6gb on a 1g.5gb part) is further apart and stays unknown.
ALTERNATIVE_NAME_TOLERANCE = 0.05


class PlanError(ValueError):
    """The config cannot be applied; ``problems`` lists every reason, on every GPU."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class NewInstance:
    profile: GpuProfile
    placement: Placement

    def to_dict(self) -> Dict[str, Any]:
        return {"profile": self.profile.name, "profile_id": self.profile.id, "placement": self.placement.to_dict()}


def _instance_dict(gi: GpuInstance) -> Dict[str, Any]:
    return {"gi_id": gi.gi_id, "profile": gi.profile, "profile_id": gi.profile_id, "placement": gi.placement.to_dict()}


def _placement_text(placement: Placement) -> str:
    return "%d:%d" % (placement.start, placement.size)


@dataclass
class GpuPlan:
    """What to do on one GPU. ``desired_enabled`` is None for a GPU the config leaves alone."""

    index: int
    uuid: str
    name: str
    mig_current: bool
    mig_pending: bool
    desired_enabled: Optional[bool] = None
    desired: Dict[str, int] = field(default_factory=dict)
    entry: Optional[int] = None
    set_mode: Optional[bool] = None
    keep: List[GpuInstance] = field(default_factory=list)
    destroy: List[GpuInstance] = field(default_factory=list)
    create: List[NewInstance] = field(default_factory=list)
    add_compute: List[GpuInstance] = field(default_factory=list)
    relayout: bool = False
    deferred: bool = False
    warnings: List[str] = field(default_factory=list)
    before_instances: List[GpuInstance] = field(default_factory=list)

    @property
    def targeted(self) -> bool:
        return self.desired_enabled is not None

    @property
    def mode_change(self) -> bool:
        """The current mode differs from the wanted one: a set, and possibly a reset, is owed."""
        return self.targeted and self.mig_current != self.desired_enabled

    @property
    def instances_change(self) -> bool:
        return bool(self.destroy or self.create or self.add_compute or self.deferred)

    @property
    def changed(self) -> bool:
        return self.targeted and (self.mode_change or self.set_mode is not None or self.instances_change)

    def _layout(self, instances: Iterable[Tuple[str, Placement]]) -> Dict[str, Dict[str, Any]]:
        layout: Dict[str, Dict[str, Any]] = {}
        for profile, placement in sorted(instances, key=lambda item: (item[1].start, item[0])):
            slot = layout.setdefault(profile, {"count": 0, "placements": []})
            slot["count"] += 1
            slot["placements"].append(_placement_text(placement))
        return dict(sorted(layout.items()))

    def before(self) -> Dict[str, Any]:
        return {
            "mig_enabled": self.mig_current,
            "mig_pending": self.mig_pending,
            "layout": self._layout((gi.profile, gi.placement) for gi in self.before_instances),
        }

    def after(self) -> Dict[str, Any]:
        if not self.targeted:
            return self.before()
        kept = [(gi.profile, gi.placement) for gi in self.keep]
        created = [(new.profile.name, new.placement) for new in self.create]
        result = {
            "mig_enabled": self.desired_enabled,
            "mig_pending": self.desired_enabled,
            "layout": self._layout(kept + created) if self.desired_enabled else {},
        }
        if self.deferred:
            result["layout"] = {name: {"count": count, "placements": []} for name, count in sorted(self.desired.items())}
        return result

    def to_dict(self) -> Dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "targeted": self.targeted,
            "entry": self.entry,
            "changed": self.changed,
            "mig_enabled": self.desired_enabled,
            "mig_devices": dict(self.desired),
            "mode_change": self.mode_change,
            "set_mode": self.set_mode,
            "keep": [_instance_dict(gi) for gi in self.keep],
            "destroy": [_instance_dict(gi) for gi in self.destroy],
            "create": [new.to_dict() for new in self.create],
            "add_compute_instance": [_instance_dict(gi) for gi in self.add_compute],
            "relayout": self.relayout,
            "deferred": self.deferred,
            "warnings": list(self.warnings),
            "before": self.before(),
            "after": self.after(),
        }


@dataclass
class Plan:
    config: str
    gpus: List[GpuPlan]
    unmatched: List[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(g.changed for g in self.gpus)

    @property
    def warnings(self) -> List[str]:
        return [w for g in self.gpus for w in g.warnings]

    def gpu(self, index: int) -> GpuPlan:
        for gpu_plan in self.gpus:
            if gpu_plan.index == index:
                return gpu_plan
        raise KeyError(index)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "config": self.config,
            "changed": self.changed,
            "unmatched_gpus": list(self.unmatched),
            "gpus": [g.to_dict() for g in self.gpus],
        }

    def diff(self) -> Dict[str, Any]:
        """Ansible's diff: before/after layout per GPU, only for the GPUs the config targets."""
        before: Dict[str, Any] = {}
        after: Dict[str, Any] = {}
        for gpu_plan in self.gpus:
            if not gpu_plan.targeted:
                continue
            key = "gpu %d (%s)" % (gpu_plan.index, gpu_plan.name)
            before[key] = gpu_plan.before()
            after[key] = gpu_plan.after()
        return {"before": before, "after": after}


# --- profile resolution -------------------------------------------------------------------------


def resolve_profile(gpu: Gpu, requested: str) -> Tuple[Optional[GpuProfile], Optional[str]]:
    """The profile ``requested`` names on this GPU, and a warning when only an alternative name matched.

    Returns (None, reason) when the GPU offers no such profile.
    """
    wanted = parse_profile(requested)
    if not wanted.is_gpu_instance_profile:
        return None, "compute-instance profiles such as %r are not supported; name GPU instance profiles (<G>g.<GB>gb)" % requested
    offered = [(parse_profile(p.name), p) for p in gpu.profiles]
    for parsed, profile in offered:
        if parsed == wanted:
            return profile, None
    same_shape = [(abs(parsed.gb - wanted.gb), profile) for parsed, profile in offered if parsed.shape() == wanted.shape()]
    if same_shape:
        same_shape.sort(key=lambda item: item[0])
        distance, nearest = same_shape[0]
        unique = len(same_shape) == 1 or same_shape[1][0] != distance
        nearest_gb = parse_profile(nearest.name).gb
        if unique and distance <= ALTERNATIVE_NAME_TOLERANCE * max(wanted.gb, nearest_gb):
            return nearest, (
                "GPU %d (%s): profile %r is not offered; using %r, the same slices and kind named from this driver's memory accounting"
                % (gpu.index, gpu.name, requested, nearest.name)
            )
    names = ", ".join(p.name for p in gpu.profiles) or "none"
    return None, "profile %r is not offered by this GPU (it offers: %s)" % (requested, names)


# --- placement search ---------------------------------------------------------------------------


def find_placements(
    profiles: Sequence[GpuProfile], occupied: Sequence[Placement]
) -> Optional[List[Placement]]:
    """Legal, non-overlapping placements for ``profiles`` around ``occupied``; None if there are none.

    Exhaustive backtracking over each profile's legal starts. Larger instances go first, and equal
    profiles take increasing starts (their order does not matter), which keeps the search tiny.
    """
    order = sorted(range(len(profiles)), key=lambda i: (-max((p.size for p in profiles[i].placements), default=0), profiles[i].id))
    chosen: Dict[int, Placement] = {}

    def place(k: int, taken: List[Placement]) -> bool:
        if k == len(order):
            return True
        i = order[k]
        profile = profiles[i]
        lowest = -1
        if k > 0 and profiles[order[k - 1]].id == profile.id:
            lowest = chosen[order[k - 1]].start
        for placement in sorted(profile.placements):
            if placement.start <= lowest:
                continue
            if any(placement.overlaps(t) for t in taken):
                continue
            chosen[i] = placement
            taken.append(placement)
            if place(k + 1, taken):
                return True
            taken.pop()
            del chosen[i]
        return False

    if not place(0, list(occupied)):
        return None
    return [chosen[i] for i in range(len(profiles))]


def _full_width(gi: GpuInstance) -> bool:
    """A GPU instance as mig-parted makes it: one full-width compute instance, or none yet."""
    return len(gi.devices) == 0 or (len(gi.devices) == 1 and gi.devices[0].full_width)


def _plan_instances(gpu: Gpu, wanted: Dict[int, int], profiles: Dict[int, GpuProfile], plan: GpuPlan, problems: List[str]) -> None:
    """Fill keep/destroy/create/add_compute for a GPU whose MIG mode is (or will be) enabled."""
    existing = list(gpu.instances) if gpu.mig_current else []
    candidates = [gi for gi in existing if gi.profile_id in wanted and _full_width(gi)]
    busy = {gi.gi_id for gi in existing if gpu.processes_on(gi.gi_id)}

    def subsets() -> Iterable[Tuple[GpuInstance, ...]]:
        for size in range(len(candidates), -1, -1):
            for subset in itertools.combinations(candidates, size):
                counts: Dict[int, int] = {}
                for gi in subset:
                    counts[gi.profile_id] = counts.get(gi.profile_id, 0) + 1
                if all(counts[pid] <= wanted[pid] for pid in counts):
                    yield subset

    ranked = sorted(subsets(), key=lambda s: (-sum(1 for gi in s if gi.gi_id in busy), -len(s)))
    for kept in ranked:
        missing: List[GpuProfile] = []
        for pid, count in sorted(wanted.items()):
            have = sum(1 for gi in kept if gi.profile_id == pid)
            missing.extend([profiles[pid]] * (count - have))
        found = find_placements(missing, [gi.placement for gi in kept])
        if found is None:
            continue
        kept_ids = {gi.gi_id for gi in kept}
        plan.keep = list(kept)
        plan.destroy = [gi for gi in existing if gi.gi_id not in kept_ids]
        plan.create = [NewInstance(p, pl) for p, pl in zip(missing, found)]
        plan.add_compute = [gi for gi in kept if not gi.devices]
        dropped = sum(1 for gi in candidates if gi.gi_id not in kept_ids)
        surplus = sum(max(0, sum(1 for gi in candidates if gi.profile_id == pid) - n) for pid, n in wanted.items())
        plan.relayout = dropped > surplus
        if plan.relayout:
            plan.warnings.append(
                "GPU %d (%s): the wanted instances do not fit around the existing ones; re-laying out the GPU"
                % (gpu.index, gpu.name)
            )
        return
    listing = ", ".join("%s x%d" % (profiles[pid].name, n) for pid, n in sorted(wanted.items()))
    problems.append(
        "GPU %d (%s): no placement of %s fits on this GPU (legal placements: %s)"
        % (
            gpu.index,
            gpu.name,
            listing,
            "; ".join(
                "%s at %s" % (profiles[pid].name, ",".join(_placement_text(p) for p in profiles[pid].placements))
                for pid in sorted(wanted)
            ),
        )
    )


def _check_exclusive_media(gpu: Gpu, wanted: Dict[int, int], profiles: Dict[int, GpuProfile], problems: List[str], where: str) -> None:
    """nvml.h: an ``_ALL_ME`` instance blocks every other profile except ``_NO_ME`` ones."""
    all_me = [pid for pid in wanted if profiles[pid].suffix == "+me.all"]
    if not all_me:
        return
    others = [profiles[pid].name for pid in wanted if pid not in all_me and profiles[pid].suffix != "-me"]
    if others or sum(wanted[pid] for pid in all_me) > 1:
        problems.append(
            "%s GPU %d (%s): %s takes all media engines and can only be combined with '-me' profiles, not with %s"
            % (where, gpu.index, gpu.name, profiles[all_me[0]].name, ", ".join(others) or "another '+me.all' instance")
        )


def plan_gpu(gpu: Gpu, entry: Optional[ConfigEntry], config: str, in_use: str = "fail") -> Tuple[GpuPlan, List[str]]:
    """The plan for one GPU, plus the problems that forbid applying it.

    ``in_use="ignore"`` plans as if the processes on the GPU were gone (the rollout evicts their pods
    before applying): instances they hold may be destroyed and the mode may change, with a warning.
    """
    plan, problems, busy = _plan_gpu(gpu, entry, config)
    if in_use == "ignore":
        plan.warnings.extend(busy)
    else:
        problems.extend(busy)
    return plan, problems


def _plan_gpu(gpu: Gpu, entry: Optional[ConfigEntry], config: str) -> Tuple[GpuPlan, List[str], List[str]]:
    """The plan for one GPU, the problems that forbid it, and those that only processes cause."""
    plan = GpuPlan(
        index=gpu.index,
        uuid=gpu.uuid,
        name=gpu.name,
        mig_current=gpu.mig_current,
        mig_pending=gpu.mig_pending,
        before_instances=list(gpu.instances),
    )
    problems: List[str] = []
    busy: List[str] = []
    if entry is None:
        return plan, problems, busy
    where = "config %r entry %d:" % (config, entry.position)
    plan.entry = entry.position
    plan.desired_enabled = entry.mig_enabled
    if not gpu.mig_capable:
        if entry.mig_enabled:
            problems.append("%s GPU %d (%s) is not MIG-capable but the entry sets mig-enabled: true" % (where, gpu.index, gpu.name))
        # A GPU without MIG is already "disabled": nothing to do.
        plan.desired_enabled = gpu.mig_current if not entry.mig_enabled else entry.mig_enabled
        return plan, problems, busy

    enabled = entry.mig_enabled
    if plan.mig_pending != enabled:
        plan.set_mode = enabled
    if plan.mode_change:
        holders = sorted({p.pid for p in gpu.processes})
        if holders:
            busy.append(
                "%s GPU %d (%s): the MIG mode must change to %s but processes %s use the GPU"
                % (where, gpu.index, gpu.name, "enabled" if enabled else "disabled", ", ".join(map(str, holders)))
            )

    if not enabled:
        plan.destroy = list(gpu.instances) if gpu.mig_current else []
        _check_destroy(gpu, plan, busy, where)
        return plan, problems, busy

    profiles = {p.id: p for p in gpu.profiles}
    wanted: Dict[int, int] = {}
    resolved_names: Dict[str, int] = {}
    requested_as: Dict[int, str] = {}
    for requested, count in entry.mig_devices:
        if count == 0:
            continue
        if not gpu.profiles and not gpu.mig_current:
            resolved_names[requested] = resolved_names.get(requested, 0) + count
            continue
        profile, note = resolve_profile(gpu, requested)
        if profile is None:
            problems.append("%s GPU %d (%s): %s" % (where, gpu.index, gpu.name, note))
            continue
        if note:
            plan.warnings.append(note)
        wanted[profile.id] = wanted.get(profile.id, 0) + count
        requested_as.setdefault(profile.id, requested)
        resolved_names[profile.name] = resolved_names.get(profile.name, 0) + count
    plan.desired = dict(sorted(resolved_names.items()))

    if not gpu.profiles and not gpu.mig_current:
        # Some drivers list no profiles while MIG is off: validate after the mode change.
        if plan.desired:
            plan.deferred = True
            plan.warnings.append(
                "GPU %d (%s) reports no MIG profiles while MIG is disabled; the instances are validated after enabling MIG"
                % (gpu.index, gpu.name)
            )
        return plan, problems, busy

    for pid, count in sorted(wanted.items()):
        profile = profiles[pid]
        if count > profile.instance_count:
            # Name the profile as the config spells it, and this GPU's name for it when they differ.
            asked = requested_as[pid]
            shown = asked if asked == profile.name else "%s (this GPU's %s)" % (asked, profile.name)
            problems.append(
                "%s GPU %d (%s): %d x %s requested but the GPU offers at most %d"
                % (where, gpu.index, gpu.name, count, shown, profile.instance_count)
            )
    _check_exclusive_media(gpu, wanted, profiles, problems, where)
    if problems:
        return plan, problems, busy
    _plan_instances(gpu, wanted, profiles, plan, problems)
    if problems:
        problems[:] = ["%s %s" % (where, p) for p in problems]
        return plan, problems, busy
    _check_destroy(gpu, plan, busy, where)
    return plan, problems, busy


def _check_destroy(gpu: Gpu, plan: GpuPlan, problems: List[str], where: str) -> None:
    for gi in plan.destroy:
        pids = sorted({p.pid for p in gpu.processes_on(gi.gi_id)})
        if pids:
            problems.append(
                "%s GPU %d (%s): GPU instance %d (%s at %s) must be destroyed but processes %s run on it"
                % (where, gpu.index, gpu.name, gi.gi_id, gi.profile, _placement_text(gi.placement), ", ".join(map(str, pids)))
            )


def overridden_entry_problems(gpu: Gpu, entry: ConfigEntry, config: str) -> List[str]:
    """What is wrong with an entry that matches ``gpu`` but that a later entry overrides.

    Such an entry is never applied to this GPU, yet it must be valid for it: each profile a GPU
    instance profile the GPU offers, each count within what the GPU offers.
    """
    if not entry.mig_enabled or not gpu.mig_capable or (not gpu.profiles and not gpu.mig_current):
        return []
    where = "config %r entry %d:" % (config, entry.position)
    problems = []
    for requested, count in entry.mig_devices:
        if count == 0:
            continue
        profile, note = resolve_profile(gpu, requested)
        if profile is None:
            problems.append("%s GPU %d (%s): %s" % (where, gpu.index, gpu.name, note))
        elif count > profile.instance_count:
            problems.append("%s GPU %d (%s): %d x %s requested but the GPU offers at most %d"
                            % (where, gpu.index, gpu.name, count, profile.name, profile.instance_count))
    return problems


def select_entries(
    entries: Sequence[ConfigEntry], gpus: Sequence[Gpu]
) -> Dict[int, ConfigEntry]:
    """The entry that decides each GPU: entries apply in file order, so the last match wins."""
    decided: Dict[int, ConfigEntry] = {}
    for entry in entries:
        for gpu in gpus:
            if entry.matches(gpu.index, gpu.pci_device_id, gpu.pci_subsystem_id):
                decided[gpu.index] = entry
    return decided


def build_plan(
    config: str,
    entries: Sequence[ConfigEntry],
    gpus: Sequence[Gpu],
    devices: Optional[Sequence[int]] = None,
    unmatched_gpus: str = "leave",
    in_use: str = "fail",
) -> Plan:
    """Plan every GPU; raise PlanError with every problem found, before anything is mutated."""
    problems: List[str] = []
    indexes = {gpu.index for gpu in gpus}
    if devices is not None:
        outside = sorted(set(devices) - indexes)
        if outside:
            problems.append(
                "devices: GPU index %s out of range (this node has GPUs %s)"
                % (", ".join(map(str, outside)), ", ".join(map(str, sorted(indexes))) or "none")
            )
    for entry in entries:
        if entry.devices is None:
            continue
        outside = sorted(set(entry.devices) - indexes)
        if outside:
            problems.append(
                "config %r entry %d: devices: GPU index %s out of range (this node has GPUs %s)"
                % (config, entry.position, ", ".join(map(str, outside)), ", ".join(map(str, sorted(indexes))) or "none")
            )
    targets = [gpu for gpu in gpus if devices is None or gpu.index in devices]
    decided = select_entries(entries, targets)
    for gpu in targets:
        for entry in entries:
            if entry is not decided.get(gpu.index) and entry.matches(gpu.index, gpu.pci_device_id, gpu.pci_subsystem_id):
                problems.extend(overridden_entry_problems(gpu, entry, config))
    plan = Plan(config=config, gpus=[])
    for gpu in sorted(gpus, key=lambda g: g.index):
        in_scope = devices is None or gpu.index in devices
        entry = decided.get(gpu.index) if in_scope else None
        if in_scope and entry is None:
            plan.unmatched.append(gpu.index)
        gpu_plan, gpu_problems = plan_gpu(gpu, entry, config, in_use=in_use)
        plan.gpus.append(gpu_plan)
        problems.extend(gpu_problems)
    if plan.unmatched and unmatched_gpus == "fail":
        problems.append(
            "config %r matches no entry for GPU %s (unmatched_gpus=fail)" % (config, ", ".join(map(str, plan.unmatched)))
        )
    if problems:
        raise PlanError(problems)
    return plan
