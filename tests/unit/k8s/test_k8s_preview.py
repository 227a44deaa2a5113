# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet preview a check-mode rollout ends with (module_utils/k8s/preview.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.gpuops.nvidia.plugins.callback.mig_rollout import preview_files
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.preview import build_preview, render_markdown

SMALL = "nvidia.com/mig-1g.5gb"
LARGE = "nvidia.com/mig-3g.20gb"


def node(host, pending=True, skipped=False, now=None, after=None):
    return {"host": host, "node": host, "before": "2 GPU(s): 7x1g.5gb", "after": "2 GPU(s): 2x3g.20gb" if pending else "2 GPU(s): 7x1g.5gb",
            "pending": pending, "skipped": skipped,
            "allocatable": {SMALL: "14", "cpu": "8"} if now is None else now,
            "expected_allocatable": ({LARGE: "4"} if pending else {SMALL: "14"}) if after is None else after}


def pod(name, reason="holds MIG-abc, which changes"):
    return {"namespace": "default", "name": name, "reason": reason}


def test_batches_follow_serial_and_inventory_order_with_capacity_while_fenced_and_at_the_end():
    nodes = [node("a"), node("b"), node("c"), node("spare", pending=False)]
    reports = {"a": {"result": "success", "would_evict": [pod("p1")]},
               "b": {"result": "success", "would_evict": [pod("p2"), pod("p3")]},
               "c": {"result": "success", "would_evict": []}}
    preview = build_preview(nodes, reports, 2)
    assert preview["changes"] is True
    assert [[n["node"] for n in batch["nodes"]] for batch in preview["batches"]] == [["a", "b"], ["c"]]
    assert preview["batches"][0]["capacity"] == {SMALL: 28}
    assert preview["batches"][1]["capacity"] == {SMALL: 14, LARGE: 8}
    assert preview["capacity"] == {"now": {SMALL: 56}, "end": {SMALL: 14, LARGE: 12}}
    assert [p["name"] for p in preview["batches"][0]["nodes"][1]["evict"]] == ["p2", "p3"]
    assert {p["kind"] for b in preview["batches"] for n in b["nodes"] for p in n["evict"]} == {"device"}
    assert preview["unchanged"] == ["spare"] and preview["blocking_pdbs"] == []


def test_a_budget_allowing_no_disruption_shows_as_blocking_with_the_pods_it_holds_back():
    shortfall = {"namespace": "default", "name": "infer", "disruptions_allowed": 0, "pods": ["default/p1"]}
    reports = {"a": {"result": "failed", "message": "Fence the nodes: evacuate: nothing was evicted", "would_evict": [],
                     "pdb_shortfalls": [shortfall], "remaining": [pod("p1", "on the node")]}}
    preview = build_preview([node("a")], reports, 1)
    entry = preview["batches"][0]["nodes"][0]
    assert entry["blocking_pdbs"] == [shortfall]
    assert [p["name"] for p in entry["evict"]] == ["p1"]
    assert preview["blocking_pdbs"] == [dict(shortfall, node="a")]
    assert "1 PodDisruptionBudget(s) would block" in preview["summary"]
    assert "blocked by PodDisruptionBudget default/infer: allows 0 disruption(s)" in render_markdown(preview)


def test_the_jobs_a_node_would_wait_for_are_among_its_waits():
    reports = {"a": {"result": "success", "would_evict": [], "jobs": ["default/train-0"]}}
    entry = build_preview([node("a")], reports, 1)["batches"][0]["nodes"][0]
    assert entry["waits"] == ["default/train-0: a job the fence waits for (mig_reconfigure_wait_for_jobs_selector) before the eviction"]
    assert "wait: default/train-0: a job the fence waits for" in render_markdown(build_preview([node("a")], reports, 1))


def test_reasons_say_before_a_reboot_and_when_the_device_map_is_unavailable():
    reports = {"a": {"result": "success", "would_evict": [pod("p1"), pod("web", "before the reboot")],
                     "would_evict_before_reboot": [pod("web", "before the reboot")]},
               "b": {"result": "success", "would_evict": [pod("p2", "on the node")],
                     "device_map": {"available": False, "reason": "socket missing"}}}
    preview = build_preview([node("a"), node("b")], reports, "100%")
    kinds = {p["name"]: p["kind"] for n in preview["batches"][0]["nodes"] for p in n["evict"]}
    assert kinds == {"p1": "device", "web": "before-reboot", "p2": "device-map-unavailable"}
    assert "socket missing" in render_markdown(preview)


def test_a_converged_fleet_says_nothing_changes():
    preview = build_preview([node("a", pending=False), node("b", pending=False)], {}, 1)
    assert preview["changes"] is False and preview["batches"] == []
    assert preview["summary"].startswith("nothing changes")
    assert preview["capacity"]["now"] == preview["capacity"]["end"] == {SMALL: 28}
    assert "nothing changes" in render_markdown(preview)


def test_a_deferred_node_keeps_its_capacity_and_says_why_and_unreached_batches_say_so():
    reports = {"a": {"result": "deferred", "message": "left for a later run: max_unavailable"}}
    preview = build_preview([node("a"), node("b")], reports, 1)
    first, second = preview["batches"]
    assert first["capacity"] == {SMALL: 28}
    assert first["nodes"][0]["waits"] == ["deferred: left for a later run: max_unavailable"]
    assert second["nodes"][0]["result"] == "not previewed"
    assert preview["capacity"]["end"] == {SMALL: 14, LARGE: 4}


def test_preview_files_drop_a_given_suffix():
    assert preview_files("/tmp/x/preview.json") == ("/tmp/x/preview.json", "/tmp/x/preview.md")
    assert preview_files("/tmp/x/preview") == ("/tmp/x/preview.json", "/tmp/x/preview.md")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3)), min_size=0, max_size=8), st.integers(0, 4))
def test_every_pending_node_is_in_exactly_one_batch_and_every_pod_listed_once(fleet, serial):
    nodes = [node("n%d" % i, pending=entry[0]) for i, entry in enumerate(fleet)]
    reports = {"n%d" % i: {"result": "success", "would_evict": [pod("n%d-p%d" % (i, j)) for j in range(count)] * 2}
               for i, (pending, count) in enumerate(fleet) if pending}
    preview = build_preview(nodes, reports, serial)
    hosts = [n["host"] for batch in preview["batches"] for n in batch["nodes"]]
    assert hosts == [n["host"] for n in nodes if n["pending"]]
    pods = [p["name"] for batch in preview["batches"] for n in batch["nodes"] for p in n["evict"]]
    assert sorted(pods) == sorted("n%d-p%d" % (i, j) for i, (pending, count) in enumerate(fleet) if pending for j in range(count))
    assert preview["changes"] == bool(hosts)
