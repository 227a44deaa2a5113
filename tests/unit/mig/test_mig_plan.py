# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The per-GPU plan: minimal diff, placements, fallback, validation before mutation."""

from __future__ import annotations

import dataclasses

import pytest
from mig_fixtures import gpu, profiles_for

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.facts import (
    GpuInstance, GpuProcess, MigDevice, Placement,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.plan import (
    PlanError, build_plan, find_placements, resolve_profile,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import parse_spec

A100 = "NVIDIA A100-SXM4-40GB"
A100_80 = "NVIDIA A100-SXM4-80GB"
A30 = "NVIDIA A30"
RTX = "NVIDIA RTX PRO 6000 Blackwell Server Edition"


def entries(*raw, name="c"):
    return parse_spec({"version": "v1", "mig-configs": {name: list(raw)}}).configs[name]


def enabled(devices, **extra):
    entry = {"devices": "all", "mig-enabled": True, "mig-devices": devices}
    entry.update(extra)
    return entry


def plan_one(g, *raw, **kwargs):
    return build_plan("c", entries(*raw), [g], **kwargs).gpu(g.index)


def assert_legal(gpu_plan, g):
    """Every planned instance sits at a legal placement and nothing overlaps."""
    by_id = {p.id: p for p in g.profiles}
    taken = [gi.placement for gi in gpu_plan.keep]
    for new in gpu_plan.create:
        assert new.placement in by_id[new.profile.id].placements
        assert not any(new.placement.overlaps(t) for t in taken)
        taken.append(new.placement)


def test_fresh_gpu_gets_balanced_layout_with_placements():
    g = gpu(A100)
    p = plan_one(g, enabled({"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}))
    assert p.changed and p.set_mode is None and not p.destroy and not p.keep
    assert sorted(n.profile.name for n in p.create) == ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"]
    assert_legal(p, g)
    assert p.after()["layout"]["1g.5gb"]["count"] == 2


def test_matching_gpu_is_unchanged():
    g = gpu(A100, instances=[("3g.20gb", 4), ("2g.10gb", 0), ("1g.5gb", 2), ("1g.5gb", 3)])
    p = plan_one(g, enabled({"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}))
    assert not p.changed and len(p.keep) == 4 and not p.create and not p.destroy


def test_keeps_matching_instances_regardless_of_placement():
    g = gpu(A100, instances=[("1g.5gb", 6), ("1g.5gb", 5)])
    p = plan_one(g, enabled({"1g.5gb": 2}))
    assert not p.changed


def test_minimal_diff_keeps_what_fits_and_creates_the_rest():
    g = gpu(A100, instances=[("1g.5gb", s) for s in range(7)])
    p = plan_one(g, enabled({"1g.5gb": 3, "2g.10gb": 2}))
    assert len(p.keep) == 3 and len(p.destroy) == 4 and len(p.create) == 2 and not p.relayout
    assert_legal(p, g)


def test_surplus_is_destroyed():
    g = gpu(A100, instances=[("1g.5gb", s) for s in range(7)])
    p = plan_one(g, enabled({"1g.5gb": 2}))
    assert len(p.keep) == 2 and len(p.destroy) == 5 and not p.create


def test_busy_instances_are_kept_first():
    g = gpu(A100, instances=[("1g.5gb", s) for s in range(7)], processes=[GpuProcess(pid=42, gi_id=7)])
    p = plan_one(g, enabled({"1g.5gb": 1}))
    assert [gi.gi_id for gi in p.keep] == [7]


def test_unwanted_profiles_destroyed():
    g = gpu(A100, instances=[("7g.40gb", 0)])
    p = plan_one(g, enabled({"3g.20gb": 2}))
    assert [gi.profile for gi in p.destroy] == ["7g.40gb"]
    assert sorted(n.placement.start for n in p.create) == [0, 4]


def test_falls_back_to_relayout_of_that_gpu_only():
    g0 = gpu(A100, index=0, instances=[("3g.20gb", 0)])
    g1 = gpu(A100, index=1, instances=[("3g.20gb", 4)])
    plan = build_plan("c", entries(enabled({"4g.20gb": 1, "3g.20gb": 1})), [g0, g1])
    p0, p1 = plan.gpu(0), plan.gpu(1)
    assert p0.relayout and [gi.profile for gi in p0.destroy] == ["3g.20gb"]
    assert sorted((n.profile.name, n.placement.start) for n in p0.create) == [("3g.20gb", 4), ("4g.20gb", 0)]
    assert p0.warnings
    assert not p1.relayout and not p1.destroy and [n.profile.name for n in p1.create] == ["4g.20gb"]


def test_impossible_combination_is_a_validation_error_naming_everything():
    g = gpu(A100, index=3)
    with pytest.raises(PlanError) as info:
        plan_one(g, enabled({"3g.20gb": 2, "1g.5gb": 1}))
    message = str(info.value)
    assert "'c'" in message and "GPU 3" in message and A100 in message and "3g.20gb" in message and "1g.5gb" in message


def test_unknown_profile_on_that_model():
    with pytest.raises(PlanError, match="'2g.20gb' is not offered"):
        plan_one(gpu(A100), enabled({"2g.20gb": 1}))


def test_count_above_instance_count():
    with pytest.raises(PlanError, match="8 x 1g.5gb requested but the GPU offers at most 7"):
        plan_one(gpu(A100), enabled({"1g.5gb": 8}))


def test_count_above_instance_count_of_a_renamed_profile_names_both_spellings():
    # 7g.79gb is an older driver's name for 7g.80gb: the refusal says what the config asked for.
    with pytest.raises(PlanError, match=r"2 x 7g\.79gb \(this GPU's 7g\.80gb\) requested but the GPU offers at most 1"):
        plan_one(gpu(A100_80), enabled({"7g.79gb": 2}))


def test_all_gpus_validated_together():
    good = gpu(A100, index=0)
    bad = gpu(A30, index=1)
    with pytest.raises(PlanError) as info:
        build_plan("c", entries(enabled({"3g.20gb": 1})), [good, bad])
    assert len(info.value.problems) == 1 and "GPU 1" in info.value.problems[0]


def test_alternative_name_resolves_with_warning():
    g = gpu(A100_80)
    p = plan_one(g, enabled({"7g.79gb": 1}))
    assert [n.profile.name for n in p.create] == ["7g.80gb"]
    assert any("7g.79gb" in w and "7g.80gb" in w for w in p.warnings)
    assert p.desired == {"7g.80gb": 1}


def test_alternative_name_must_have_same_kind_and_be_close():
    g = gpu(A100_80)
    profile, note = resolve_profile(g, "1g.10gb+me")
    assert profile.id == 20 and note is None
    assert resolve_profile(g, "7g.40gb")[0] is None
    assert resolve_profile(g, "7g.80gb+me")[0] is None
    assert resolve_profile(gpu(A100), "1g.6gb")[0] is None  # the A30's profile, not a rename
    assert resolve_profile(gpu(A100), "7g.41gb")[0].name == "7g.40gb"


def test_compute_instance_profiles_refused():
    with pytest.raises(PlanError, match="compute-instance profiles"):
        plan_one(gpu(A100), enabled({"1c.3g.20gb": 1}))


def test_enable_from_disabled():
    g = gpu(A100, current=False)
    p = plan_one(g, enabled({"7g.40gb": 1}))
    assert p.set_mode is True and p.mode_change and [n.placement for n in p.create] == [Placement(0, 8)]


def test_pending_enable_needs_no_set_but_is_a_change():
    g = gpu(A100, current=False, pending=True)
    p = plan_one(g, enabled({}))
    assert p.set_mode is None and p.mode_change and p.changed


def test_cancel_pending_disable_is_allowed_with_processes():
    g = gpu(A100, current=True, pending=False, processes=[GpuProcess(pid=5, gi_id=None)])
    assert plan_one(g, enabled({})).set_mode is True


def test_cancel_pending_disable():
    g = gpu(A100, current=True, pending=False)
    p = plan_one(g, enabled({}))
    assert p.set_mode is True and not p.mode_change and p.changed


def test_disable_destroys_instances_first():
    g = gpu(A100, instances=[("7g.40gb", 0)])
    p = plan_one(g, {"devices": "all", "mig-enabled": False})
    assert p.set_mode is False and [gi.profile for gi in p.destroy] == ["7g.40gb"]
    assert p.after() == {"mig_enabled": False, "mig_pending": False, "layout": {}}


def test_disabled_stays_disabled():
    p = plan_one(gpu(A100, current=False), {"devices": "all", "mig-enabled": False})
    assert not p.changed


def test_enabled_empty_destroys_everything():
    p = plan_one(gpu(A100, instances=[("1g.5gb", 0)]), enabled({}))
    assert len(p.destroy) == 1 and p.changed


def test_not_mig_capable():
    with pytest.raises(PlanError, match="not MIG-capable"):
        plan_one(gpu(A100, capable=False), enabled({}))
    p = plan_one(gpu(A100, capable=False), {"devices": "all", "mig-enabled": False})
    assert not p.changed


def test_refuses_to_destroy_busy_instance():
    g = gpu(A100, instances=[("7g.40gb", 0)], processes=[GpuProcess(pid=1234, gi_id=1, ci_id=0)])
    with pytest.raises(PlanError, match="processes 1234 run on it"):
        plan_one(g, enabled({"3g.20gb": 1}))


def test_refuses_mode_change_with_processes():
    g = gpu(A100, current=False, processes=[GpuProcess(pid=99)])
    with pytest.raises(PlanError, match="processes 99 use the GPU"):
        plan_one(g, enabled({}))


def test_in_use_ignore_plans_as_if_the_processes_were_gone():
    busy_instance = gpu(A100, instances=[("7g.40gb", 0)], processes=[GpuProcess(pid=1234, gi_id=1, ci_id=0)])
    p = plan_one(busy_instance, enabled({"3g.20gb": 1}), in_use="ignore")
    assert [gi.profile for gi in p.destroy] == ["7g.40gb"]
    assert any("processes 1234 run on it" in w for w in p.warnings)
    busy_gpu = gpu(A100, current=False, processes=[GpuProcess(pid=99)])
    p = plan_one(busy_gpu, enabled({}), in_use="ignore")
    assert p.mode_change
    assert any("processes 99 use the GPU" in w for w in p.warnings)


def test_later_entry_wins_and_filters_select_models():
    a, b = gpu(A100, index=0), gpu(A30, index=1)
    raw = [
        {"devices": "all", "mig-enabled": False},
        enabled({"1g.5gb": 7}, **{"device-filter": "0x20B010DE"}),
        enabled({"2g.12gb": 2}, **{"device-filter": ["0x20B710DE"]}),
    ]
    plan = build_plan("c", entries(*raw), [a, b])
    assert plan.gpu(0).entry == 1 and plan.gpu(1).entry == 2
    assert len(plan.gpu(0).create) == 7 and len(plan.gpu(1).create) == 2


def test_unmatched_gpus_left_or_failed():
    a, b = gpu(A100, index=0), gpu(A30, index=1)
    raw = enabled({"1g.5gb": 1}, **{"device-filter": "0x20B010DE"})
    plan = build_plan("c", entries(raw), [a, b])
    assert plan.unmatched == [1] and not plan.gpu(1).changed and not plan.gpu(1).targeted
    with pytest.raises(PlanError, match="matches no entry for GPU 1"):
        build_plan("c", entries(raw), [a, b], unmatched_gpus="fail")


def test_devices_option_limits_and_checks_range():
    a, b = gpu(A100, index=0), gpu(A100, index=1)
    plan = build_plan("c", entries(enabled({"1g.5gb": 1})), [a, b], devices=[1])
    assert not plan.gpu(0).targeted and plan.gpu(1).changed and plan.unmatched == []
    with pytest.raises(PlanError, match="devices: GPU index 4 out of range"):
        build_plan("c", entries(enabled({"1g.5gb": 1})), [a, b], devices=[4])
    with pytest.raises(PlanError, match="entry 0: devices: GPU index 2 out of range"):
        build_plan("c", entries({"devices": [2], "mig-enabled": False}), [a, b])


def test_exclusive_media_engines():
    with pytest.raises(PlanError, match="takes all media engines"):
        plan_one(gpu(RTX), enabled({"1g.24gb+me.all": 1, "1g.24gb": 1}))
    p = plan_one(gpu(RTX), enabled({"1g.24gb+me.all": 1, "1g.24gb-me": 3}))
    assert len(p.create) == 4


def test_four_slot_gpus():
    p = plan_one(gpu(A30), enabled({"1g.6gb": 2, "2g.12gb": 1}))
    assert_legal(p, gpu(A30))
    with pytest.raises(PlanError, match="no placement"):
        plan_one(gpu(A30), enabled({"2g.12gb": 2, "1g.6gb": 1}))


def test_instance_without_compute_gets_one_and_odd_compute_layout_is_rebuilt():
    g = gpu(A100)
    p19 = next(p for p in g.profiles if p.name == "1g.5gb")
    p9 = next(p for p in g.profiles if p.name == "3g.20gb")
    bare = GpuInstance(gi_id=7, profile_id=p19.id, profile="1g.5gb", placement=Placement(0, 1))
    split = GpuInstance(gi_id=1, profile_id=p9.id, profile="3g.20gb", placement=Placement(4, 4), devices=(
        MigDevice(ci_id=0, profile="1c.3g.20gb", uuid="MIG-a", full_width=False),
        MigDevice(ci_id=1, profile="2c.3g.20gb", uuid="MIG-b", full_width=False)))
    g = dataclasses.replace(gpu(A100, profiles=g.profiles), instances=(bare, split))
    p = plan_one(g, enabled({"1g.5gb": 1, "3g.20gb": 1}))
    assert [gi.gi_id for gi in p.add_compute] == [7]
    assert [gi.gi_id for gi in p.destroy] == [1]
    assert [n.placement for n in p.create] == [Placement(4, 4)]


def test_no_profiles_while_disabled_defers_validation():
    g = gpu(A100, current=False, profiles=())
    p = plan_one(g, enabled({"1g.5gb": 2}))
    assert p.deferred and p.set_mode is True and p.desired == {"1g.5gb": 2}


def test_plan_and_diff_are_data():
    g = gpu(A100, instances=[("7g.40gb", 0)])
    plan = build_plan("c", entries(enabled({"3g.20gb": 2})), [g])
    data = plan.to_dict()
    assert data["changed"] and data["gpus"][0]["destroy"][0]["profile"] == "7g.40gb"
    diff = plan.diff()
    key = "gpu 0 (%s)" % A100
    assert diff["before"][key]["layout"] == {"7g.40gb": {"count": 1, "placements": ["0:8"]}}
    assert diff["after"][key]["layout"] == {"3g.20gb": {"count": 2, "placements": ["0:4", "4:4"]}}


def test_find_placements_direct():
    by_name = {p.name: p for p in profiles_for(A100)}
    assert find_placements([by_name["4g.20gb"]], [Placement(0, 1)]) is None
    found = find_placements([by_name["1g.5gb"]] * 3, [Placement(0, 4)])
    assert found == [Placement(4, 1), Placement(5, 1), Placement(6, 1)]
    assert find_placements([], []) == []


@pytest.mark.parametrize("model", [A100, A100_80, A30, RTX])
def test_every_profile_alone_up_to_its_maximum(model):
    for profile in profiles_for(model):
        g = gpu(model)
        p = plan_one(g, enabled({profile.name: profile.instance_count}))
        assert len(p.create) == profile.instance_count
        assert_legal(p, g)
