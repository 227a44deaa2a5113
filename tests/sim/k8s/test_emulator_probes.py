"""The 27 probes of the emulator study (reference Part B.2), run with the real kubernetes client."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def test_version(api_client):
    assert client.VersionApi(api_client).get_code().git_version.startswith("v1.")


def test_create_get_list_nodes_with_server_set_metadata(core, node_body):
    created = core.create_node(node_body("node-1"))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert int(created.metadata.resource_version) > 0
    assert created.metadata.generation == 1
    assert core.read_node("node-1").metadata.uid == created.metadata.uid
    listed = core.list_node()
    assert [n.metadata.name for n in listed.items] == ["node-1"]
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)


def test_resource_versions_increase(core, node_body):
    first = core.create_node(node_body("node-1"))
    second = core.create_node(node_body("node-2"))
    patched = core.patch_node("node-1", {"metadata": {"labels": {"a": "b"}}})
    assert int(first.metadata.resource_version) < int(second.metadata.resource_version) < int(patched.metadata.resource_version)


@pytest.mark.parametrize("selector, expected", [
    ("gpu=true", ["node-1"]),
    ("gpu==true", ["node-1"]),
    ("gpu!=true", ["node-2", "node-3"]),
    ("gpu in (true,maybe)", ["node-1", "node-3"]),
    ("gpu notin (true)", ["node-2", "node-3"]),
    ("gpu", ["node-1", "node-3"]),
    ("!gpu", ["node-2"]),
    ("gpu,zone=a", ["node-1"]),
])
def test_node_label_selectors(core, node_body, selector, expected):
    core.create_node(node_body("node-1", {"gpu": "true", "zone": "a"}))
    core.create_node(node_body("node-2", {"zone": "a"}))
    core.create_node(node_body("node-3", {"gpu": "maybe"}))
    assert [n.metadata.name for n in core.list_node(label_selector=selector).items] == expected


def test_pods_namespaced_and_all_namespaces(core, pod_body):
    core.create_namespace({"metadata": {"name": "team"}})
    core.create_namespaced_pod("default", pod_body("p1"))
    core.create_namespaced_pod("team", pod_body("p2"))
    assert [p.metadata.name for p in core.list_namespaced_pod("team").items] == ["p2"]
    everywhere = core.list_pod_for_all_namespaces()
    assert sorted((p.metadata.namespace, p.metadata.name) for p in everywhere.items) == [("default", "p1"), ("team", "p2")]
    assert everywhere.kind == "PodList" and everywhere.api_version == "v1"


def test_pod_field_selectors(core, pod_body):
    core.create_namespaced_pod("default", pod_body("p1", node="node-1"))
    core.create_namespaced_pod("default", pod_body("p2", node="node-2"))
    core.create_namespaced_pod("default", pod_body("p3", node=None, running=False))

    def names(selector: str) -> list[str]:
        return sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(field_selector=selector).items)

    assert names("spec.nodeName=node-1") == ["p1"]
    assert names("spec.nodeName!=node-1") == ["p2", "p3"]
    assert names("spec.nodeName=") == ["p3"]
    assert names("status.phase=Pending") == ["p3"]
    assert names("status.phase=Running,spec.nodeName=node-2") == ["p2"]
    assert names("metadata.name=p2") == ["p2"]
    assert names("metadata.namespace=default") == ["p1", "p2", "p3"]


def test_unsupported_field_selector_is_a_bad_request(core):
    with pytest.raises(ApiException) as raised:
        core.list_pod_for_all_namespaces(field_selector="spec.bogus=1")
    assert raised.value.status == 400
    assert "field label not supported: spec.bogus" in raised.value.body


def test_pod_label_selector(core, pod_body):
    core.create_namespaced_pod("default", pod_body("a1", labels={"app": "a"}))
    core.create_namespaced_pod("default", pod_body("b1", labels={"app": "b"}))
    assert [p.metadata.name for p in core.list_namespaced_pod("default", label_selector="app=a").items] == ["a1"]


def test_not_found_and_already_exists(core, node_body):
    with pytest.raises(ApiException) as missing:
        core.read_node("nope")
    assert missing.value.status == 404
    assert missing.value.headers["Content-Type"] == "application/json"
    assert '"reason":"NotFound"' in missing.value.body and 'nodes \\"nope\\" not found' in missing.value.body
    core.create_node(node_body("node-1"))
    with pytest.raises(ApiException) as duplicate:
        core.create_node(node_body("node-1"))
    assert duplicate.value.status == 409
    assert '"reason":"AlreadyExists"' in duplicate.value.body


def test_default_patch_is_strategic_and_merges_labels(core, node_body, emulator):
    core.create_node(node_body("node-1", {"a": "1"}))
    node = core.patch_node("node-1", {"metadata": {"labels": {"b": "2"}}})
    assert node.metadata.labels == {"a": "1", "b": "2"}
    assert emulator.requests[-1]["content_type"] == "application/strategic-merge-patch+json"


def test_strategic_patch_replaces_atomic_taints(core, node_body):
    core.create_node(node_body("node-1", taints=[{"key": "old", "effect": "NoSchedule"}]))
    node = core.patch_node("node-1", {"spec": {"taints": [{"key": "new", "value": "v", "effect": "NoExecute"}]}})
    assert [(t.key, t.effect) for t in node.spec.taints] == [("new", "NoExecute")]


def test_strategic_patch_merges_conditions_by_type(core, node_body):
    core.create_node(node_body("node-1"))
    node = core.patch_node_status("node-1", {"status": {"conditions": [{"type": "GPUHealthy", "status": "True"}]}})
    assert sorted(c.type for c in node.status.conditions) == ["GPUHealthy", "Ready"]
    node = core.patch_node_status("node-1", {"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    assert {c.type: c.status for c in node.status.conditions} == {"Ready": "False", "GPUHealthy": "True"}


def test_strategic_patch_delete_directive(core, node_body):
    core.create_node(node_body("node-1"))
    core.patch_node_status("node-1", {"status": {"conditions": [{"type": "GPUHealthy", "status": "True"}]}})
    node = core.patch_node_status("node-1", {"status": {"conditions": [{"type": "GPUHealthy", "$patch": "delete"}]}})
    assert [c.type for c in node.status.conditions] == ["Ready"]


def test_pod_without_status_is_pending(core, pod_body):
    pod = core.create_namespaced_pod("default", pod_body("p1", running=False))
    assert pod.status.phase == "Pending"


def test_merge_patch_null_deletes(core, node_body):
    core.create_node(node_body("node-1", {"a": "1", "b": "2"}))
    node = core.patch_node("node-1", {"metadata": {"labels": {"a": None}}}, _content_type=MERGE)
    assert node.metadata.labels == {"b": "2"}


def test_json_patch(core, node_body):
    core.create_node(node_body("node-1", {"a": "1"}))
    node = core.patch_node("node-1", [{"op": "add", "path": "/metadata/labels/b", "value": "2"},
                                      {"op": "remove", "path": "/metadata/labels/a"}], _content_type=JSON_PATCH)
    assert node.metadata.labels == {"b": "2"}


def test_json_patch_test_failure_is_unprocessable(core, node_body):
    core.create_node(node_body("node-1", {"a": "1"}))
    with pytest.raises(ApiException) as raised:
        core.patch_node("node-1", [{"op": "test", "path": "/metadata/labels/a", "value": "2"}], _content_type=JSON_PATCH)
    assert raised.value.status == 422


def test_replace_node(core, node_body):
    created = core.create_node(node_body("node-1"))
    created.metadata.labels = {"replaced": "yes"}
    replaced = core.replace_node("node-1", created)
    assert replaced.metadata.labels == {"replaced": "yes"}
    assert replaced.metadata.uid == created.metadata.uid
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)


def test_put_with_stale_resource_version_conflicts(core, node_body):
    created = core.create_node(node_body("node-1"))
    core.patch_node("node-1", {"metadata": {"labels": {"x": "1"}}})
    with pytest.raises(ApiException) as raised:
        core.replace_node("node-1", created)
    assert raised.value.status == 409
    assert ("Operation cannot be fulfilled on nodes \\\"node-1\\\": the object has been modified; please apply your "
            "changes to the latest version and try again") in raised.value.body


def test_patch_with_stale_resource_version_conflicts(core, node_body):
    created = core.create_node(node_body("node-1"))
    core.patch_node("node-1", {"metadata": {"labels": {"x": "1"}}})
    stale = {"metadata": {"resourceVersion": created.metadata.resource_version, "labels": {"y": "2"}}}
    with pytest.raises(ApiException) as raised:
        core.patch_node("node-1", stale, _content_type=MERGE)
    assert raised.value.status == 409
    fresh = core.read_node("node-1")
    stale["metadata"]["resourceVersion"] = fresh.metadata.resource_version
    assert core.patch_node("node-1", stale).metadata.labels == {"x": "1", "y": "2"}


def test_pdb_create_read(policy):
    policy.create_namespaced_pod_disruption_budget("default", {
        "metadata": {"name": "pdb"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "a"}}}})
    pdb = policy.read_namespaced_pod_disruption_budget("pdb", "default")
    assert pdb.spec.min_available == 1
    assert pdb.status.disruptions_allowed == 0 and pdb.status.expected_pods == 0


def _eviction(name: str) -> client.V1Eviction:
    return client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace="default"))


def test_eviction_blocked_by_pdb_is_429(core, policy, pod_body):
    core.create_namespaced_pod("default", pod_body("web-0", labels={"app": "web"}))
    policy.create_namespaced_pod_disruption_budget("default", {
        "metadata": {"name": "web"}, "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}}})
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_pod_eviction("web-0", "default", _eviction("web-0"))
    error = raised.value
    assert error.status == 429 and error.reason == "Too Many Requests"
    assert error.headers["Content-Type"] == "application/json"
    assert "Cannot evict pod as it would violate the pod's disruption budget." in error.body
    assert '"reason":"DisruptionBudget"' in error.body
    assert "The disruption budget web needs 1 healthy pods and has 1 currently" in error.body
    assert core.read_namespaced_pod("web-0", "default").metadata.deletion_timestamp is None


def test_eviction_of_unprotected_pod_deletes_it(core, pod_body, emulator):
    core.create_namespaced_pod("default", pod_body("p1"))
    core.create_namespaced_pod_eviction("p1", "default", _eviction("p1"))
    assert emulator.requests[-1]["status"] == 201
    with pytest.raises(ApiException) as raised:
        core.read_namespaced_pod("p1", "default")
    assert raised.value.status == 404


def test_delete_pod_with_grace_period_zero(core, pod_body):
    core.create_namespaced_pod("default", pod_body("p1"))
    core.delete_namespaced_pod("p1", "default", body=client.V1DeleteOptions(grace_period_seconds=0))
    assert core.list_namespaced_pod("default").items == []


def test_watch_sees_events_and_ends_at_server_timeout(core, pod_body):
    core.create_namespaced_pod("default", pod_body("p1"))
    start = time.monotonic()
    events = [(e["type"], e["object"].metadata.name)
              for e in watch.Watch().stream(core.list_namespaced_pod, "default", timeout_seconds=1)]
    assert events == [("ADDED", "p1")]
    assert time.monotonic() - start < 10  # ended by the server, not by a client read timeout


def test_watch_from_resource_version_with_selectors(core, pod_body):
    listed = core.list_namespaced_pod("default")
    received: list[Any] = []

    def consume() -> None:
        stream = watch.Watch().stream(core.list_namespaced_pod, "default", resource_version=listed.metadata.resource_version,
                                      label_selector="app=a", field_selector="spec.nodeName=node-1", timeout_seconds=2)
        for event in stream:
            received.append((event["type"], event["object"].metadata.name))

    thread = threading.Thread(target=consume)
    thread.start()
    core.create_namespaced_pod("default", pod_body("a1", node="node-1", labels={"app": "a"}))
    core.create_namespaced_pod("default", pod_body("b1", node="node-1", labels={"app": "b"}))
    core.create_namespaced_pod("default", pod_body("a2", node="node-2", labels={"app": "a"}))
    core.patch_namespaced_pod("a1", "default", {"metadata": {"labels": {"x": "y"}}})
    core.patch_namespaced_pod("a1", "default", {"metadata": {"labels": {"app": "gone"}}})
    thread.join(20)
    assert received == [("ADDED", "a1"), ("MODIFIED", "a1"), ("DELETED", "a1")]


def test_dynamic_client_discovery_and_list(api_client, core, node_body):
    from kubernetes.dynamic import DynamicClient

    core.create_node(node_body("node-1"))
    dynamic = DynamicClient(api_client)
    nodes = dynamic.resources.get(api_version="v1", kind="Node").get()
    assert [n.metadata.name for n in nodes.items] == ["node-1"]
    eviction = dynamic.resources.get(api_version="v1", kind="Pod").subresources["eviction"]
    assert eviction.kind == "Eviction"
    daemonsets = dynamic.resources.get(api_version="apps/v1", kind="DaemonSet")
    assert daemonsets.namespaced


def test_dynamic_client_eviction_subresource(api_client, core, pod_body):
    from kubernetes.dynamic import DynamicClient

    core.create_namespaced_pod("default", pod_body("p1"))
    dynamic = DynamicClient(api_client)
    pods = dynamic.resources.get(api_version="v1", kind="Pod")
    pods.subresources["eviction"].create(body={"apiVersion": "policy/v1", "kind": "Eviction",
                                               "metadata": {"name": "p1", "namespace": "default"}},
                                         name="p1", namespace="default")
    assert core.list_namespaced_pod("default").items == []
