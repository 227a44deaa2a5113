# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The demand planner: what it re-lays, what it keeps, whom it serves, and why a pod stays pending."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.demand import (
    DemandError, opted_in, plan_demand, profile_of_resource,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.facts import Placement
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.plan import find_placements, plan_gpu
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import parse_spec

from mig_fixtures import gpu, profiles_for

A40 = "NVIDIA A100-SXM4-40GB"
A80 = "NVIDIA A100-SXM4-80GB"
A30 = "NVIDIA A30"
FULL_1G = [("1g.5gb", start) for start in range(7)]

# nos's knownMigGeometries for the A100 40GB, in the mig-parted format (known-geometries.md §G).
NOS_A100_40GB = [{"1g.5gb": 7}, {"1g.5gb": 5, "2g.10gb": 1}, {"1g.5gb": 3, "2g.10gb": 2}, {"1g.5gb": 1, "2g.10gb": 3},
                 {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}, {"2g.10gb": 2, "3g.20gb": 1}, {"1g.5gb": 3, "3g.20gb": 1},
                 {"1g.5gb": 1, "2g.10gb": 1, "3g.20gb": 1}, {"3g.20gb": 2}, {"1g.5gb": 3, "4g.20gb": 1},
                 {"1g.5gb": 1, "2g.10gb": 1, "4g.20gb": 1}, {"7g.40gb": 1}]


def allow_list(geometries, device_filter="0x20B010DE"):
    return parse_spec({"version": "v1", "mig-configs": {
        "allowed-%d" % n: [{"device-filter": device_filter, "devices": "all", "mig-enabled": True, "mig-devices": g}]
        for n, g in enumerate(geometries)}})


def pod(name, namespace="ml", **requests):
    return {"name": name, "namespace": namespace,
            "requests": {"nvidia.com/" + key.replace("_", "."): count for key, count in requests.items()}}


def mig(name, count=1):
    return {"nvidia.com/mig-" + name: count}


def node(name, *gpus, allocated=()):
    return {"name": name, "gpus": [g.to_dict() for g in gpus], "allocated": list(allocated)}


# --- small cases -------------------------------------------------------------------------------------


def test_resource_names_map_to_profiles():
    assert profile_of_resource("nvidia.com/mig-1g.5gb") == "1g.5gb"
    assert profile_of_resource("nvidia.com/mig-1g.5gb.me") == "1g.5gb+me"
    assert profile_of_resource("nvidia.com/mig-1g.24gb.me.all") == "1g.24gb+me.all"
    assert profile_of_resource("nvidia.com/mig-1g.24gb-me") == "1g.24gb-me"
    assert profile_of_resource("nvidia.com/gpu") is None


def test_opt_in_labels_are_the_collections_and_nos():
    assert opted_in({"gpuops.io/mig-demand": "true"})
    assert opted_in({"nos.nebuly.ai/gpu-partitioning": "mig"})
    assert opted_in({"nos.nebuly.com/gpu-partitioning": "mig"})
    assert not opted_in({"nos.nebuly.ai/gpu-partitioning": "mps"})
    assert not opted_in({"gpuops.io/mig-demand": "false"})
    assert not opted_in({})


def test_a_free_gpu_is_re_laid_and_the_used_one_is_kept():
    nodes = [node("n1", gpu(A40, 0, instances=FULL_1G), gpu(A40, 1, instances=FULL_1G),
                  allocated=["MIG-0-%d" % i for i in range(1, 8)])]
    result = plan_demand([{"name": "train", "namespace": "ml", "requests": mig("3g.20gb")}], nodes)
    assert result["assignments"] == {"n1": next(iter(result["mig_configs"]))}
    entries = result["mig_configs"][result["assignments"]["n1"]]
    assert entries[0] == {"devices": [0], "mig-enabled": True, "mig-devices": {"1g.5gb": 7}}
    # The default shape fills the rest of the changed GPU with its smallest plain profile.
    assert entries[1] == {"devices": [1], "mig-enabled": True, "mig-devices": {"1g.5gb": 4, "3g.20gb": 1}} or \
        entries[1] == {"devices": [1], "mig-enabled": True, "mig-devices": {"1g.5gb": 3, "3g.20gb": 1}}
    change = result["nodes"]["n1"]["gpus"]
    assert [c["index"] for c in change] == [1] and change[0]["pods"] == ["ml/train"]
    assert result["served"] == [{"pod": "ml/train", "node": "n1", "new_devices": True, "devices": {"1": {"3g.20gb": 1}}}]
    assert result["unsatisfied"] == []


def test_free_gpus_are_preferred_to_partly_used_ones():
    partly = gpu(A40, 0, instances=[("3g.20gb", 0)])
    free = gpu(A40, 1, instances=[("3g.20gb", 0)])
    result = plan_demand([{"name": "p", "namespace": "ml", "requests": mig("2g.10gb")}],
                         [node("n1", partly, free, allocated=["MIG-0-1"])])
    assert [c["index"] for c in result["nodes"]["n1"]["gpus"]] == [1]


def test_an_allocated_device_stays_where_it_is_and_the_rest_is_used():
    used = gpu(A40, 0, instances=[("1g.5gb", 6), ("1g.5gb", 0), ("1g.5gb", 1)])
    result = plan_demand([{"name": "p", "namespace": "ml", "requests": mig("3g.20gb")}],
                         [node("n1", used, allocated=["MIG-0-1"])])
    change = result["nodes"]["n1"]["gpus"][0]
    assert change["kept_in_use"] == {"1g.5gb": 1}
    assert change["after"]["3g.20gb"] == 1
    # The rollout's own planner keeps the allocated instance at slice 6.
    entry = parse_spec({"version": "v1", "mig-configs": result["mig_configs"]}).configs[result["assignments"]["n1"]][0]
    plan, problems = plan_gpu(used, entry, "x")
    assert not problems and all(gi.placement != Placement(6, 1) for gi in plan.destroy)


def test_existing_free_devices_are_used_before_anything_changes():
    result = plan_demand([{"name": "p", "namespace": "ml", "requests": mig("1g.5gb", 2)}],
                         [node("n1", gpu(A40, 0, instances=FULL_1G), allocated=["MIG-0-1"])])
    assert not result["changed"] and result["mig_configs"] == {}
    assert result["served"] == [{"pod": "ml/p", "node": "n1", "new_devices": False, "devices": {"0": {"1g.5gb": 2}}}]


def test_over_demand_and_whole_gpus_stay_pending_with_a_reason():
    pods = [{"name": "big%d" % i, "namespace": "ml", "requests": mig("7g.40gb")} for i in range(3)]
    pods.append({"name": "whole", "namespace": "ml", "requests": {"nvidia.com/gpu": 1}})
    pods.append({"name": "h100", "namespace": "ml", "requests": mig("1g.10gb+me".replace("+", "."))})
    result = plan_demand(pods, [node("n1", gpu(A40, 0), gpu(A40, 1))])
    reasons = {u["pod"]: u["reason"] for u in result["unsatisfied"]}
    assert sorted(s["pod"] for s in result["served"]) == ["ml/big0", "ml/big1"]
    assert "not enough free room" in reasons["ml/big2"]
    assert "whole GPU" in reasons["ml/whole"]
    assert "offers MIG profile 1g.10gb+me" in reasons["ml/h100"]


def test_the_mig_mode_never_changes_and_unknown_allocation_blocks_a_node():
    off = gpu(A40, 0, current=False)
    unknown = {"name": "n2", "gpus": [gpu(A40, 0, instances=[("3g.20gb", 0)]).to_dict()], "allocated": None}
    result = plan_demand([{"name": "p", "namespace": "ml", "requests": mig("3g.20gb")}], [node("n1", off), unknown])
    assert not result["changed"]
    assert "never changes the MIG mode" in result["skipped_nodes"][0]["reason"]
    assert "unknown" in result["skipped_nodes"][1]["reason"]


def test_allowed_geometries_bound_the_result():
    result = plan_demand([{"name": "p", "namespace": "ml", "requests": mig("4g.20gb")}],
                         [node("n1", gpu(A40, 0))], allowed=allow_list(NOS_A100_40GB))
    # The first allowed geometry that holds the request, configs taken in name order ("allowed-10" first).
    assert result["nodes"]["n1"]["gpus"][0]["after"] == {"1g.5gb": 1, "2g.10gb": 1, "4g.20gb": 1}
    refused = plan_demand([{"name": "p", "namespace": "ml", "requests": mig("4g.20gb")}],
                          [node("n1", gpu(A40, 0))], allowed=allow_list([{"1g.5gb": 7}]))
    assert "no allowed geometry" in refused["unsatisfied"][0]["reason"]


def test_a_pods_devices_are_on_one_node_and_selectors_are_respected():
    pods = [{"name": "two", "namespace": "ml", "requests": mig("3g.20gb", 2), "node_selector": {"pool": "b"}}]
    nodes = [dict(node("a", gpu(A40, 0), gpu(A40, 1)), labels={"pool": "a"}),
             dict(node("b", gpu(A40, 0)), labels={"pool": "b"})]
    result = plan_demand(pods, nodes)
    assert result["served"][0]["node"] == "b"
    assert result["served"][0]["devices"] == {"0": {"3g.20gb": 2}}


def test_bad_input_is_refused_naming_the_field():
    with pytest.raises(DemandError, match=r"pods\[0\].requests.nvidia.com/mig-1g.5gb"):
        plan_demand([{"name": "p", "requests": {"nvidia.com/mig-1g.5gb": -1}}], [])
    with pytest.raises(DemandError, match=r"nodes\[0\].gpus"):
        plan_demand([], [{"name": "n", "gpus": "x"}])
    with pytest.raises(DemandError, match="fill"):
        plan_demand([], [], fill="largest")


# --- generated fleets and demands -------------------------------------------------------------------


MODELS = (A40, A80, A30)


@st.composite
def fleets(draw):
    rng = random.Random(draw(st.integers(0, 2 ** 32 - 1)))
    nodes = []
    allocated_by_node = {}
    for n in range(draw(st.integers(1, 4))):
        model = draw(st.sampled_from(MODELS))
        gpus, allocated = [], []
        for index in range(draw(st.integers(1, 3))):
            state = rng.choice(("layout", "layout", "empty", "off"))
            if state == "off":
                gpus.append(gpu(model, index, current=False))
                continue
            instances = _random_layout(model, rng) if state == "layout" else []
            made = gpu(model, index, instances=instances)
            gpus.append(made)
            for gi in made.instances:
                if rng.random() < 0.4:
                    allocated.append(gi.devices[0].uuid)
        nodes.append(node("node-%d" % n, *gpus, allocated=allocated))
        allocated_by_node["node-%d" % n] = set(allocated)
    names = sorted({p.name for m in MODELS for p in profiles_for(m)})
    pods = []
    for i in range(draw(st.integers(0, 10))):
        requests = {}
        for _request in range(rng.choice((1, 1, 1, 2))):
            resource = "nvidia.com/gpu" if rng.random() < 0.05 else "nvidia.com/mig-" + rng.choice(names).replace("+", ".")
            requests[resource] = rng.choice((1, 1, 2))
        pods.append({"name": "pod-%d" % i, "namespace": "ns", "requests": requests, "priority": rng.choice((0, 0, 10))})
    allowed = allow_list(NOS_A100_40GB) if draw(st.booleans()) else None
    return nodes, pods, allowed, allocated_by_node


def _random_layout(model, rng):
    profiles = [p for p in profiles_for(model) if p.suffix in ("", "+me")]
    chosen, taken = [], []
    for _attempt in range(rng.randint(1, 7)):
        profile = rng.choice(profiles)
        if sum(1 for name, _s in chosen if name == profile.name) >= profile.instance_count:
            continue
        starts = [p for p in profile.placements if not any(p.overlaps(t) for t in taken)]
        if starts:
            placement = rng.choice(starts)
            chosen.append((profile.name, placement.start))
            taken.append(placement)
    return chosen


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), st.randoms(use_true_random=False))
def test_generated_fleets_keep_every_allocated_device_and_stay_within_the_rules(fleet, shuffle):
    nodes, pods, allowed, allocated_by_node = fleet
    result = plan_demand(pods, nodes, allowed=allowed)

    # Deterministic: the same inputs, in any order, give the same plan.
    shuffled_nodes, shuffled_pods = list(nodes), list(pods)
    shuffle.shuffle(shuffled_nodes)
    shuffle.shuffle(shuffled_pods)
    again = plan_demand(shuffled_pods, shuffled_nodes, allowed=allowed)
    assert again["mig_configs"] == result["mig_configs"] and again["assignments"] == result["assignments"]
    assert again["served"] == result["served"] and again["unsatisfied"] == result["unsatisfied"]

    # Every pod is either served or left pending with a reason.
    asked = {"ns/" + p["name"] for p in pods}
    assert {s["pod"] for s in result["served"]} | {u["pod"] for u in result["unsatisfied"]} == asked
    assert all(u["reason"] for u in result["unsatisfied"])

    spec = parse_spec(result["document"]) if result["mig_configs"] else None
    for raw in nodes:
        name = raw["name"]
        facts = {g["index"]: g for g in raw["gpus"]}
        if name not in result["assignments"]:
            continue
        entries = spec.configs[result["assignments"][name]]
        changed = {c["index"] for c in result["nodes"][name]["gpus"]}
        event("re-lays a GPU with devices in use" if any(c["kept_in_use"] for c in result["nodes"][name]["gpus"])
              else "re-lays only free GPUs")
        for entry in entries:
            (index,) = entry.devices
            before = _gpu_fact(facts[index])
            plan, problems = plan_gpu(before, entry, "demand", in_use="ignore")
            # Within what NVML allows: the rollout's planner accepts it; the MIG mode never changes.
            assert not problems, problems
            assert not plan.mode_change and plan.set_mode is None
            destroyed = {d.uuid for gi in plan.destroy for d in gi.devices}
            assert not destroyed & allocated_by_node[name], "an allocated device would be destroyed"
            if index not in changed:
                assert not plan.changed, "a GPU the plan does not change must stay as it is"
            elif allowed is not None and before.pci_device_id == "0x20B010DE":
                assert dict(entry.mig_devices) in NOS_A100_40GB


def _gpu_fact(data):
    from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.demand import gpu_from_dict
    return gpu_from_dict(data)


def test_find_placements_is_what_the_planner_relies_on():
    # A 3g.20gb fits around a 1g at slice 6 only at start 0.
    profiles = {p.name: p for p in profiles_for(A40)}
    assert find_placements([profiles["3g.20gb"]], [Placement(6, 1)]) == [Placement(0, 4)]


# --- the module's reading of the cluster ------------------------------------------------------------


def _pod(name, phase="Pending", node=None, reason="Unschedulable", owner=None, **limits):
    return {"metadata": {"name": name, "namespace": "ml", "ownerReferences": [{"kind": owner}] if owner else []},
            "spec": {"nodeName": node, "priority": 5, "nodeSelector": {"pool": "a"},
                     "containers": [{"resources": {"limits": {"nvidia.com/" + k.replace("_", "."): v for k, v in limits.items()}}}]},
            "status": {"phase": phase, "conditions": [{"type": "PodScheduled", "status": "False", "reason": reason}]}}


def test_the_module_reads_only_unschedulable_gpu_pods_as_nos_does():
    from ansible_collections.gpuops.nvidia.plugins.modules.mig_demand_plan import pending_pods

    items = [_pod("wanted", **{"mig-3g_20gb": "1"}), _pod("bound", node="n1", **{"mig-3g_20gb": "1"}),
             _pod("running", phase="Running", **{"mig-3g_20gb": "1"}), _pod("no-gpu"),
             _pod("gated", reason="SchedulingGated", **{"mig-3g_20gb": "1"}),
             _pod("daemon", owner="DaemonSet", **{"mig-3g_20gb": "1"})]
    assert pending_pods(items) == [{"namespace": "ml", "name": "wanted", "requests": {"nvidia.com/mig-3g.20gb": 1},
                                    "priority": 5, "node_selector": {"pool": "a"}}]


class _Client:
    def __init__(self, bound):
        self.bound = bound
        self.asked = []

    def list_pods(self, field_selector=None):
        self.asked.append(field_selector)
        return {"items": self.bound}


def test_the_module_counts_every_device_held_when_the_map_is_unavailable_and_gpu_pods_are_bound():
    from ansible_collections.gpuops.nvidia.plugins.modules.mig_demand_plan import node_inputs

    nodes = [{"metadata": {"name": name, "labels": OPT}} for name, OPT in (("a", {}), ("b", {}), ("c", {}), ("d", {}))]
    gpus = [gpu(A40, 0, instances=FULL_1G).to_dict()]
    facts = {
        "a": {"gpus": {"gpus": gpus}, "pod_devices": {"available": True, "pods": [{"devices": ["MIG-0-1"]}]}},
        "b": {"gpus": gpus, "pod_devices": {"available": False}},
        "c": {"gpus": gpus, "pod_devices": {"available": False}},
    }
    client = _Client([_pod("held", phase="Running", node="b", **{"mig-1g_5gb": "1"})])
    inputs, skipped = node_inputs(client, nodes[:2], facts)
    assert [(i["name"], i["allocated"]) for i in inputs] == [("a", ["MIG-0-1"]), ("b", None)]
    client = _Client([])
    inputs, skipped = node_inputs(client, nodes[2:], facts)
    assert [(i["name"], i["allocated"]) for i in inputs] == [("c", [])]
    assert skipped == [{"node": "d", "reason": "no GPU facts were given for it (node_facts)"}]


def test_fill_none_leaves_the_rest_empty_and_processes_count_as_held():
    from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.facts import GpuProcess

    busy = gpu(A40, 0, instances=[("1g.5gb", 6)], processes=[GpuProcess(pid=7, gi_id=1, ci_id=0)])
    result = plan_demand([{"name": "p", "namespace": "ml", "requests": mig("3g.20gb")}], [node("n1", busy)], fill="none")
    change = result["nodes"]["n1"]["gpus"][0]
    assert change["after"] == {"1g.5gb": 1, "3g.20gb": 1}
    assert change["kept_in_use"] == {"1g.5gb": 1}
