"""Fault injection and the request log (contract §2), in-process and over /_sim/."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from gpuops_sim.k8s.faults import Fault, fault_from_dict


def _sim(emulator: Any, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(emulator.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("status, reason", [(409, "Conflict"), (429, "TooManyRequests"), (500, "InternalError"),
                                            (503, "ServiceUnavailable")])
def test_status_faults_give_realistic_bodies(emulator, core, node_body, status, reason):
    core.create_node(node_body("node-1"))
    emulator.add_fault(verb="patch", resource="nodes", name="node-1", status=status, count=1)
    with pytest.raises(ApiException) as raised:
        core.patch_node("node-1", {"metadata": {"labels": {"a": "b"}}})
    error = raised.value
    body = json.loads(error.body)
    assert error.status == status and body["reason"] == reason and body["kind"] == "Status" and body["code"] == status
    assert error.headers["Content-Type"] == "application/json"
    if status == 409:
        assert body["message"].startswith('Operation cannot be fulfilled on nodes "node-1"')
    if status == 429:
        assert error.headers["Retry-After"] == "1"
    # only the next request failed
    assert core.patch_node("node-1", {"metadata": {"labels": {"a": "b"}}}).metadata.labels == {"a": "b"}


def test_fault_count_and_selectors(emulator, core, node_body):
    core.create_node(node_body("node-1"))
    core.create_node(node_body("node-2"))
    emulator.add_fault(verb="get", resource="nodes", name="node-2", status=500, count=2)
    assert core.read_node("node-1").metadata.name == "node-1"
    for _attempt in range(2):
        with pytest.raises(ApiException):
            core.read_node("node-2")
    assert core.read_node("node-2").metadata.name == "node-2"


def test_subresource_selector(emulator, core, node_body):
    core.create_node(node_body("node-1"))
    emulator.add_fault(resource="nodes", subresource="", status=500, count=0)
    core.patch_node_status("node-1", {"status": {"conditions": [{"type": "X", "status": "True"}]}})
    with pytest.raises(ApiException):
        core.patch_node("node-1", {"metadata": {"labels": {"a": "b"}}})


def test_eviction_fault(emulator, core, pod_body):
    core.create_namespaced_pod("default", pod_body("p1"))
    emulator.add_fault(verb="create", resource="pods", subresource="eviction", status=429, retry_after=3)
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name="p1", namespace="default"))
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_pod_eviction("p1", "default", eviction)
    assert raised.value.status == 429 and raised.value.headers["Retry-After"] == "3"
    assert "disruption budget" in raised.value.body
    core.create_namespaced_pod_eviction("p1", "default", eviction)
    assert [r["status"] for r in emulator.requests if r["subresource"] == "eviction"] == [429, 201]


def test_latency_fault_still_serves(emulator, core, node_body):
    core.create_node(node_body("node-1"))
    emulator.add_fault(verb="get", resource="nodes", latency_ms=50)
    assert core.read_node("node-1").metadata.name == "node-1"
    assert emulator.requests[-1]["status"] == 200


def test_drop_connection(emulator, core, node_body):
    core.create_node(node_body("node-1"))
    emulator.add_fault(verb="patch", resource="nodes", drop_connection=True)
    with pytest.raises(urllib3.exceptions.HTTPError):
        core.patch_node("node-1", {"metadata": {"labels": {"a": "b"}}})
    assert [r["status"] for r in emulator.requests if r["verb"] == "patch"] == [0]
    assert "a" not in (core.read_node("node-1").metadata.labels or {})


def test_drop_watch_cuts_the_stream(emulator, core, node_body):
    core.create_node(node_body("node-1"))
    core.create_node(node_body("node-2"))
    emulator.add_fault(verb="watch", resource="nodes", drop_watch=True, after_events=1)
    seen = []
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for event in watch.Watch().stream(core.list_node, timeout_seconds=5):
            seen.append(event["object"].metadata.name)
    assert seen == ["node-1"]
    # the next watch is served normally
    assert len(list(watch.Watch().stream(core.list_node, timeout_seconds=1))) == 2


def test_faults_over_http(emulator, core, node_body):
    core.create_node(node_body("node-1"))
    created = _sim(emulator, "POST", "/_sim/faults", {"verb": "get", "resource": "nodes", "status": 503, "count": 1})
    assert created["status"] == 503
    assert len(_sim(emulator, "GET", "/_sim/faults")["items"]) == 1
    _sim(emulator, "DELETE", "/_sim/faults")
    assert core.read_node("node-1").metadata.name == "node-1"
    with pytest.raises(urllib.error.HTTPError) as raised:
        _sim(emulator, "POST", "/_sim/faults", {"verb": "get", "status": 503, "bogus": 1})
    assert raised.value.code == 400


def test_fault_validation():
    with pytest.raises(ValueError, match="at least one of verb"):
        fault_from_dict({"status": 500})
    with pytest.raises(ValueError, match="verb 'fetch'"):
        fault_from_dict({"verb": "fetch", "status": 500})
    with pytest.raises(ValueError, match="at least one of status"):
        fault_from_dict({"verb": "get"})
    assert fault_from_dict({"verb": "get", "status": 500, "count": None}).count is None
    assert Fault(verb="watch", drop_watch=True).matches({"verb": "watch"})
    assert not Fault(resource="pods", drop_watch=True).matches({"verb": "list", "resource": "pods"})


def test_request_log_records(emulator, core, pod_body, node_body):
    core.create_node(node_body("node-1"))
    core.create_namespaced_pod("default", pod_body("p1"))
    core.create_namespaced_pod("default", pod_body("p2"))
    emulator.clear_requests()
    core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-1")
    core.create_namespaced_pod_eviction("p1", "default", client.V1Eviction(metadata=client.V1ObjectMeta(name="p1")))
    core.delete_namespaced_pod("p2", "default")
    with pytest.raises(ApiException):
        core.read_namespaced_pod("p2", "default")
    records = emulator.requests
    assert [(r["verb"], r["resource"], r["subresource"], r["name"], r["status"]) for r in records] == [
        ("list", "pods", None, None, 200),
        ("create", "pods", "eviction", "p1", 201),
        ("delete", "pods", None, "p2", 200),
        ("get", "pods", None, "p2", 404),
    ]
    assert records[0]["query"] == {"fieldSelector": "spec.nodeName=node-1"}
    assert records[1]["method"] == "POST" and records[1]["path"] == "/api/v1/namespaces/default/pods/p1/eviction"
    assert records[1]["namespace"] == "default"
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
    over_http = _sim(emulator, "GET", "/_sim/requests")["items"]
    assert [r["seq"] for r in over_http] == [r["seq"] for r in records]
    _sim(emulator, "DELETE", "/_sim/requests")
    assert emulator.requests == []


def test_reset_clears_objects_faults_and_log(emulator, core, node_body):
    core.create_node(node_body("node-1"))
    emulator.add_fault(verb="get", resource="nodes", status=500, count=0)
    emulator.reset()
    assert emulator.requests == []
    assert core.list_node().items == []
    assert [n.metadata.name for n in core.list_namespace().items] == ["default", "kube-node-lease", "kube-public", "kube-system"]
