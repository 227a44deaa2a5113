# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gpu_pending_pods event source's pure parts: which pods count, and how they are batched."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from ansible_collections.gpuops.nvidia.extensions.eda.plugins.event_source import gpu_pending_pods as source

UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}


def pod(name: str, resources: dict | None = None, *, uid: str | None = None, namespace: str = "default",
        conditions: list | None = None, node: str | None = None, phase: str = "Pending", owner: str | None = None) -> dict:
    meta = {"name": name, "namespace": namespace, "uid": uid or "uid-" + name}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "x"}]
    spec = {"containers": [{"name": "c", "resources": {"limits": resources if resources is not None else {"nvidia.com/mig-1g.5gb": 1}}}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": meta, "spec": spec,
            "status": {"phase": phase, "conditions": [UNSCHEDULABLE] if conditions is None else conditions}}


def test_only_unschedulable_unbound_gpu_pods_count():
    assert source.gpu_pending_pod(pod("a")).requests == (("nvidia.com/mig-1g.5gb", 1),)
    assert source.gpu_pending_pod(pod("g", {"nvidia.com/gpu": "2", "cpu": "1"})).requests == (("nvidia.com/gpu", 2),)
    assert source.gpu_pending_pod(pod("cpu", {"cpu": "1"})) is None
    assert source.gpu_pending_pod(pod("other", {"example.com/fpga": 1})) is None
    assert source.gpu_pending_pod(pod("waiting", conditions=[])) is None
    assert source.gpu_pending_pod(pod("bound", node="n1")) is None
    assert source.gpu_pending_pod(pod("running", phase="Running")) is None
    assert source.gpu_pending_pod(pod("ds", owner="DaemonSet")) is None


def test_init_containers_count_as_their_largest_request():
    p = pod("i", {"nvidia.com/gpu": 1})
    p["spec"]["initContainers"] = [{"resources": {"requests": {"nvidia.com/gpu": 3}}}]
    assert dict(source.gpu_pending_pod(p).requests) == {"nvidia.com/gpu": 3}


def test_one_event_for_the_batch_after_the_window_and_none_again():
    batcher = source.PendingBatcher(window=10, refire_interval=300)
    batcher.seen(pod("a"), 0)
    assert batcher.deadline(0) == 10
    batcher.seen(pod("b", {"nvidia.com/mig-3g.20gb": 2}), 4)
    batcher.seen(pod("cpu", {"cpu": "1"}), 5)
    assert batcher.fire(9.9) is None
    event = batcher.fire(10)
    assert event["type"] == "gpu_pending_pods"
    assert [p["name"] for p in event["pods"]] == ["a", "b"]
    assert event["requests"] == {"nvidia.com/mig-1g.5gb": 1, "nvidia.com/mig-3g.20gb": 2}
    # Status updates of the same pods open no new window.
    batcher.seen(pod("a"), 20)
    assert batcher.fire(40) is None
    assert batcher.deadline(40) == 310
    # Still pending after the re-fire interval: listed again, after a window.
    assert batcher.fire(310) is None
    again = batcher.fire(320)
    assert [p["name"] for p in again["pods"]] == ["a", "b"]


def test_a_changed_or_recreated_pod_fires_again_alone():
    batcher = source.PendingBatcher(window=5, refire_interval=1000)
    batcher.seen(pod("a"), 0)
    batcher.seen(pod("b"), 0)
    assert len(batcher.fire(5)["pods"]) == 2
    batcher.seen(pod("a", {"nvidia.com/mig-2g.10gb": 1}), 6)
    event = batcher.fire(11)
    assert [(p["name"], p["requests"]) for p in event["pods"]] == [("a", {"nvidia.com/mig-2g.10gb": 1})]
    batcher.gone("default/b")
    batcher.seen(pod("b", uid="new"), 12)
    assert [p["uid"] for p in batcher.fire(17)["pods"]] == ["new"]


def test_pods_scheduled_before_the_window_ends_fire_nothing():
    batcher = source.PendingBatcher(window=5, refire_interval=1000)
    batcher.seen(pod("a"), 0)
    batcher.seen(pod("a", node="n1", phase="Running", conditions=[]), 2)
    assert batcher.fire(5) is None
    assert batcher.deadline(6) is None


def test_a_list_replaces_what_the_watch_said():
    batcher = source.PendingBatcher(window=1, refire_interval=1000)
    batcher.seen(pod("a"), 0)
    batcher.replace([pod("b"), {"kind": "odd"}, None, "text"], 0.5)
    assert [p["name"] for p in batcher.fire(1)["pods"]] == ["b"]
    source.apply_change(batcher, "DELETED", pod("b"), 2)
    assert not batcher.pending


@pytest.mark.parametrize("args, message", [
    ({"window": "soon"}, "window: expected a number"),
    ({"window": -1}, "window: expected a number"),
    ({"watch_timeout": 0}, "watch_timeout: expected a number of seconds > 0"),
    ({"validate_certs": "maybe"}, "validate_certs: expected a boolean"),
    ({"kubeconfig": 3}, "kubeconfig: expected a string"),
    ({"windw": 3}, "unknown options: windw"),
])
def test_bad_options_are_named(args, message):
    with pytest.raises(source.SettingsError, match=message):
        source.parse_settings(args)


def test_options_from_rulebook_templates():
    settings = source.parse_settings({"window": "2.5", "validate_certs": "false", "kubeconfig": "", "watch_timeout": "30"})
    assert (settings.window, settings.validate_certs, settings.kubeconfig, settings.watch_timeout) == (2.5, False, None, 30)
    assert source.parse_settings({}).validate_certs is True


# Anything a watch might deliver: generated JSON-like values where pods are expected.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["metadata", "spec", "status", "name", "namespace", "uid", "containers", "resources",
                         "limits", "requests", "nvidia.com/gpu", "nvidia.com/mig-1g.5gb", "phase", "conditions",
                         "type", "reason", "nodeName", "ownerReferences", "kind", "initContainers"]) | st.text(max_size=5),
        inner, max_size=5),
    max_leaves=30)


@given(st.lists(st.tuples(st.sampled_from(["list", "ADDED", "MODIFIED", "DELETED"]), json_values), max_size=12))
def test_odd_objects_never_crash_the_batcher(changes):
    batcher = source.PendingBatcher(window=1, refire_interval=10)
    for step, (kind, payload) in enumerate(changes):
        source.apply_change(batcher, kind, payload, float(step))
        batcher.deadline(float(step))
        batcher.fire(float(step))


names = st.sampled_from(["a", "b", "c", "d"])
gpu_asks = st.sampled_from([{"nvidia.com/gpu": 1}, {"nvidia.com/mig-1g.5gb": 2}, {"cpu": "1"}])
steps = st.lists(st.tuples(st.sampled_from(["pending", "scheduled", "deleted"]), names, gpu_asks,
                           st.floats(min_value=0, max_value=30)), max_size=25)


@given(steps, st.floats(min_value=0, max_value=20), st.floats(min_value=1, max_value=100))
def test_each_demand_fires_at_most_once_per_refire_interval(changes, window, refire):
    """Generated histories: an event comes only after a full window, lists only pending GPU pods, and
    never lists the same demand of a pod twice within the re-fire interval."""
    batcher = source.PendingBatcher(window=window, refire_interval=refire)
    now, last_fired, state = 0.0, {}, {}
    for action, name, asks, pause in changes:
        now += pause
        deadline = batcher.deadline(now)
        if deadline is not None and deadline <= now:
            event = batcher.fire(now)
            if event is not None:
                assert event["pods"]
                for listed in event["pods"]:
                    key = (listed["name"], tuple(sorted(listed["requests"].items())))
                    assert key not in last_fired or now - last_fired[key] >= refire
                    assert set(listed["requests"]) <= {"nvidia.com/gpu", "nvidia.com/mig-1g.5gb"}
                    last_fired[key] = now
        demand = tuple(sorted((k, int(v)) for k, v in asks.items() if k.startswith("nvidia.com/")))
        if action != "pending" or not demand or state.get(name) != demand:
            # A pod that is scheduled, deleted, no longer asks for GPUs or asks for others is a new demand.
            last_fired = {k: v for k, v in last_fired.items() if k[0] != name}
        state[name] = demand if action == "pending" and demand else None
        if action == "pending":
            batcher.seen(pod(name, asks), now)
        elif action == "scheduled":
            batcher.seen(pod(name, asks, node="n1", phase="Running", conditions=[]), now)
        else:
            source.apply_change(batcher, "DELETED", pod(name, asks), now)


class FakeResponse:
    def __init__(self, data: bytes = b"", lines: list | None = None) -> None:
        self.data = data
        self.lines = lines or []
        self.released = False

    def stream(self, amt=None, decode_content=False):  # pylint: disable=unused-argument
        for line in self.lines:
            yield (line if isinstance(line, bytes) else __import__("json").dumps(line).encode()) + b"\n"

    def release_conn(self):
        self.released = True


class FakeApi:
    """Answers the source's list and watch calls from a script; records them."""

    def __init__(self, script: list, stop) -> None:
        self.script, self.stop, self.calls = list(script), stop, []

    def list_pod_for_all_namespaces(self, **kwargs):
        self.calls.append(kwargs)
        if not self.script:
            self.stop.set()
            return pod_list("30") if not kwargs.get("watch") else FakeResponse(lines=[])
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class RecordingStop:
    """threading.Event stand-in that records the backoff waits instead of waiting."""

    def __init__(self) -> None:
        self.waits, self.flag = [], False

    def is_set(self):
        return self.flag

    def set(self):
        self.flag = True

    def wait(self, seconds):
        self.waits.append(seconds)


def pod_list(version: str, *pods: dict) -> FakeResponse:
    return FakeResponse(data=__import__("json").dumps({"metadata": {"resourceVersion": version}, "items": list(pods)}).encode())


def test_the_watch_resumes_from_the_list_and_lists_again_on_410_gone():
    from kubernetes.client.rest import ApiException

    stop = RecordingStop()
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    script = [
        pod_list("10", pod("a")),
        FakeResponse(lines=[{"type": "ADDED", "object": pod("b") | {"metadata": {"name": "b", "resourceVersion": "11"}}},
                            b"not json at all"]),
        # the broken line: a retry after a backoff, from a fresh list
        pod_list("12"),
        FakeResponse(lines=[gone]),
        pod_list("20", pod("c")),
        ApiException(status=500, reason="boom"),
        ApiException(status=500, reason="boom"),
        ApiException(status=410, reason="Gone"),
    ]
    api = FakeApi(script, stop)
    reports = []
    source.watch_pods(source.Settings(max_backoff=1.5), lambda kind, payload: reports.append((kind, payload)), stop,
                      make_api=lambda settings: api)
    kinds = [report[0] for report in reports]
    assert kinds == ["list", "ADDED", "list", "list", "list"]
    assert [p["metadata"]["name"] for p in reports[3][1]] == ["c"]
    watches = [call for call in api.calls if call.get("watch")]
    assert [call["resource_version"] for call in watches[:2]] == ["10", "12"]
    assert all(call["allow_watch_bookmarks"] and call["timeout_seconds"] == 300 for call in watches)
    # Backoff doubles from 1 s, bounded by max_backoff; 410 Gone lists again without waiting.
    assert stop.waits == [1.0, 1.0, 1.5]


def test_an_unknown_option_stops_the_source_before_it_reads_anything():
    import asyncio

    with pytest.raises(source.SettingsError, match="unknown options: kubconfig"):
        asyncio.run(source.main(asyncio.Queue(), {"kubconfig": "/x"}))
