# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The wait loop: watch first, polling when the watch breaks, always bounded by the deadline."""

from __future__ import annotations

import pytest
import urllib3
from k8s_unit_helpers import api_error, make_node

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError, RetryPolicy
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.conditions import NodeConditions
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.wait import (
    apply_event,
    unmatched_pods,
    wait_for_node,
    wait_for_nodes,
    wait_until,
)


class ScriptedSource:
    """A list/watch source: each list returns the next snapshot; each watch the next script."""

    def __init__(self, clock, snapshots, watches):
        self.clock = clock
        self.snapshots = list(snapshots)
        self.watches = list(watches)
        self.list_calls = 0
        self.watch_calls = []

    def describe(self):
        return "things"

    def list(self):
        self.list_calls += 1
        items = self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]
        return items, str(self.list_calls)

    def watch(self, resource_version, timeout_seconds):
        self.watch_calls.append((resource_version, timeout_seconds))
        script = self.watches.pop(0) if self.watches else []
        failure = script if isinstance(script, BaseException) else None
        if failure is not None:
            raise failure
        yield from script
        if not script:
            self.clock.sleep(timeout_seconds)


def obj(uid, **fields):
    return dict({"metadata": {"uid": uid, "name": uid}}, **fields)


def gone(uid):
    return lambda objects: uid not in objects


def test_satisfied_by_the_first_list(clock):
    source = ScriptedSource(clock, [[obj("b")]], [])
    result = wait_until(source, gone("a"), RetryPolicy(sleep=clock.sleep, clock=clock).deadline(10), RetryPolicy(sleep=clock.sleep, clock=clock), 1)
    assert result.met and source.watch_calls == [] and clock.sleeps == []


def test_watch_event_satisfies_without_sleeping(clock):
    retry = RetryPolicy(sleep=clock.sleep, clock=clock)
    source = ScriptedSource(clock, [[obj("a")]], [[{"type": "MODIFIED", "object": obj("a")}, {"type": "DELETED", "object": obj("a")}]])
    result = wait_until(source, gone("a"), retry.deadline(30), retry, 1)
    assert result.met
    assert source.list_calls == 1
    assert source.watch_calls == [("1", 30)]
    assert clock.sleeps == []


def test_recreated_object_with_a_new_uid_is_another_object(clock):
    retry = RetryPolicy(sleep=clock.sleep, clock=clock)
    recreated = {"metadata": {"uid": "a2", "name": "a"}}
    dropped = urllib3.exceptions.ProtocolError("Connection broken")
    source = ScriptedSource(clock, [[obj("a")], [recreated]], [dropped])
    result = wait_until(source, gone("a"), retry.deadline(30), retry, 1)
    assert result.met and set(result.objects) == {"a2"}


def test_broken_watch_falls_back_to_polling(clock):
    retry = RetryPolicy(sleep=clock.sleep, clock=clock)
    dropped = urllib3.exceptions.ProtocolError("Connection broken")
    source = ScriptedSource(clock, [[obj("a")], [obj("a")], []], [dropped, dropped])
    result = wait_until(source, gone("a"), retry.deadline(30), retry, 2)
    assert result.met
    assert result.watch_failures == 2
    assert source.list_calls == 3
    assert clock.sleeps == [2, 2]


def test_refused_watch_is_not_tried_again(clock):
    retry = RetryPolicy(sleep=clock.sleep, clock=clock)
    source = ScriptedSource(clock, [[obj("a")], [obj("a")], [obj("a")], []], [api_error(403, "watch forbidden", "Forbidden")])
    result = wait_until(source, gone("a"), retry.deadline(30), retry, 1)
    assert result.met and len(source.watch_calls) == 1 and source.list_calls == 4


def test_error_event_relists_at_once(clock):
    retry = RetryPolicy(sleep=clock.sleep, clock=clock)
    expired = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    source = ScriptedSource(clock, [[obj("a")], []], [[expired]])
    result = wait_until(source, gone("a"), retry.deadline(30), retry, 1)
    assert result.met and source.list_calls == 2
    # An ERROR event is a failed watch: poll interval before the next list.
    assert clock.sleeps == [1]


def test_deadline_ends_the_wait_with_a_fresh_view(clock):
    retry = RetryPolicy(sleep=clock.sleep, clock=clock)
    source = ScriptedSource(clock, [[obj("a")]], [])
    result = wait_until(source, gone("a"), retry.deadline(5), retry, 1)
    assert not result.met and "a" in result.objects
    assert source.watch_calls == [("1", 5)]


def test_watch_windows_are_bounded(clock):
    retry = RetryPolicy(sleep=clock.sleep, clock=clock)
    source = ScriptedSource(clock, [[obj("a")]], [])
    wait_until(source, gone("a"), retry.deadline(150), retry, 1, watch_window=60)
    assert [call[1] for call in source.watch_calls][:2] == [60, 60]


def test_apply_event():
    objects = {"a": obj("a")}
    assert apply_event(objects, {"type": "ADDED", "object": obj("b")}) and set(objects) == {"a", "b"}
    assert apply_event(objects, {"type": "DELETED", "object": obj("a")}) and set(objects) == {"b"}
    assert apply_event(objects, {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}) and set(objects) == {"b"}
    assert not apply_event(objects, {"type": "ERROR", "object": {}})


def test_wait_for_node_reports_each_unmet_condition(fake_kube):
    kube = fake_kube(nodes=[make_node(allocatable={"nvidia.com/gpu": "0"}, labels={"nvidia.com/mig.config.state": "pending"})])
    conditions = NodeConditions(allocatable={"nvidia.com/gpu": 4}, labels={"nvidia.com/mig.config.state": "success"}, ready=True)
    with pytest.raises(K8sError) as raised:
        wait_for_node(kube, "gpu-node-1", conditions, timeout=10, poll_interval=1)
    message = raised.value.msg
    assert "did not meet the conditions within 10s" in message
    assert "allocatable[nvidia.com/gpu]: expected '4', observed '0'" in message
    assert "labels[nvidia.com/mig.config.state]: expected 'success', observed 'pending'" in message
    assert "ready" not in message.split(":", 1)[1].replace("nvidia", "")
    assert raised.value.details["matched"] == ["ready"]
    assert raised.value.details["node"]["name"] == "gpu-node-1"


def test_wait_for_node_follows_the_watch(fake_kube):
    kube = fake_kube(nodes=[make_node(allocatable={"nvidia.com/gpu": "0"})])
    kube.watch_events = [[{"type": "MODIFIED", "object": make_node(allocatable={"nvidia.com/gpu": "4"})}]]
    result = wait_for_node(kube, "gpu-node-1", NodeConditions(allocatable={"nvidia.com/gpu": 4}), timeout=60, poll_interval=1)
    assert result["matched"] == ["allocatable[nvidia.com/gpu]"]
    assert result["node"]["allocatable"] == {"nvidia.com/gpu": "4"}
    assert ("list_nodes", "metadata.name=gpu-node-1") in kube.calls


def test_wait_for_node_needs_a_condition(fake_kube):
    with pytest.raises(K8sError, match="no condition given"):
        wait_for_node(fake_kube(nodes=[]), "n", NodeConditions(), timeout=1, poll_interval=1)


def test_wait_for_nodes_follows_the_batch_with_one_watch(fake_kube):
    kube = fake_kube(nodes=[make_node("n1", allocatable={"nvidia.com/gpu": "0"}), make_node("n2", allocatable={"nvidia.com/gpu": "0"})])
    kube.watch_events = [[{"type": "MODIFIED", "object": make_node("n1", allocatable={"nvidia.com/gpu": "4"})},
                          {"type": "MODIFIED", "object": make_node("n2", allocatable={"nvidia.com/gpu": "7"})}]]
    requests = [{"name": "n1", "allocatable": {"nvidia.com/gpu": 4}, "timeout": 60, "poll_interval": 1},
                {"name": "n2", "allocatable": {"nvidia.com/gpu": 2}, "timeout": 30, "poll_interval": 1}]
    outcomes = wait_for_nodes(kube, requests, lambda request: NodeConditions(allocatable=request["allocatable"]))
    assert outcomes["n1"]["matched"] == ["allocatable[nvidia.com/gpu]"]
    assert isinstance(outcomes["n2"], K8sError)
    assert "node n2 did not meet the conditions within 60s" in outcomes["n2"].msg
    assert "allocatable[nvidia.com/gpu]: expected '2'" in outcomes["n2"].msg
    # The whole batch from one selection of the nodes, not one per node.
    assert {call[1] for call in kube.calls if call[0] == "list_nodes"} == {None}
    assert kube.count("watch") >= 1


def test_a_node_of_the_batch_without_a_condition_fails_alone(fake_kube):
    kube = fake_kube(nodes=[make_node("n1")])
    requests = [{"name": "n1", "ready": True, "timeout": 5, "poll_interval": 1}, {"name": "n2", "ready": None, "timeout": 5, "poll_interval": 1}]
    outcomes = wait_for_nodes(kube, requests, lambda request: NodeConditions(ready=request["ready"]))
    assert outcomes["n1"]["matched"] == ["ready"]
    assert "no condition given" in outcomes["n2"].msg


def test_unmatched_pods_are_those_whose_node_selector_no_longer_holds():
    def pod(name, selector, phase="Running"):
        return {"metadata": {"namespace": "ns", "name": name}, "spec": {"nodeSelector": selector}, "status": {"phase": phase}}

    labels = {"nvidia.com/gpu.deploy.device-plugin": "paused-for-mig-change", "kubernetes.io/os": "linux"}
    pods = [pod("plugin", {"nvidia.com/gpu.deploy.device-plugin": "true"}),
            pod("finished", {"nvidia.com/gpu.deploy.device-plugin": "true"}, phase="Succeeded"),
            pod("linux", {"kubernetes.io/os": "linux"}),
            pod("plain", {}),
            pod("gone-label", {"example.com/pool": "a"})]
    assert unmatched_pods(pods, labels) == ["ns/gone-label", "ns/plugin"]
