"""The in-process store: semantics the agents and the HTTP layer rely on (no HTTP here)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gpuops_sim.k8s.patch import PatchError, json_patch, merge_patch, strategic_merge
from gpuops_sim.k8s.selectors import (SelectorError, compile_label_selector, labels_match, parse_field_selector,
                                      parse_label_selector)
from gpuops_sim.k8s.store import (AlreadyExists, Conflict, Forbidden, Gone, NotFound, Store, TooManyRequests,
                                  pdb_status, scaled_value)


@pytest.fixture
def store() -> Store:
    return Store(history_limit=1000)


def pod(name: str, node: str | None = "node-1", labels: dict[str, str] | None = None, ready: bool = True,
        phase: str = "Running", **meta: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": name, "labels": dict(labels or {}), **meta},
                            "spec": {"containers": [{"name": "c", "image": "i"}]},
                            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    if node:
        body["spec"]["nodeName"] = node
    return body


# --- selectors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, labels, expected", [
    ("a=1", {"a": "1"}, True),
    ("a=1", {"a": "2"}, False),
    ("a!=1", {}, True),
    ("a in (1, 2)", {"a": "2"}, True),
    ("a notin (1,2)", {"a": "3"}, True),
    ("a notin (1,2)", {}, True),
    ("a,!b", {"a": ""}, True),
    ("a,!b", {"a": "", "b": "x"}, False),
    ("nvidia.com/gpu.deploy.device-plugin=true", {"nvidia.com/gpu.deploy.device-plugin": "true"}, True),
    ("", {"anything": "x"}, True),
])
def test_label_selector_strings(text, labels, expected):
    assert labels_match(parse_label_selector(text), labels) is expected


def test_label_selector_objects():
    selector = compile_label_selector({"matchLabels": {"app": "a"},
                                       "matchExpressions": [{"key": "tier", "operator": "In", "values": ["x", "y"]},
                                                            {"key": "gone", "operator": "DoesNotExist"}]})
    assert labels_match(selector, {"app": "a", "tier": "y"})
    assert not labels_match(selector, {"app": "a", "tier": "y", "gone": "1"})
    assert labels_match(compile_label_selector({}), {"x": "y"})
    assert not labels_match(compile_label_selector(None), {"x": "y"})


def test_bad_selectors_raise():
    with pytest.raises(SelectorError):
        parse_label_selector("a b c")
    with pytest.raises(SelectorError, match="field label not supported: spec.x"):
        parse_field_selector("spec.x=1", ["metadata.name"])


# --- patches ----------------------------------------------------------------------------------------

def test_merge_patch_rfc7386():
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None, "d": 3}, "l": [2]}) == {"a": {"c": 2, "d": 3}, "l": [2]}


def test_json_patch_operations():
    doc = {"a": [1, 2], "b": {"c": 1}}
    result = json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3}, {"op": "replace", "path": "/b/c", "value": 2},
                              {"op": "move", "from": "/b/c", "path": "/d"}, {"op": "copy", "from": "/d", "path": "/e"},
                              {"op": "test", "path": "/e", "value": 2}, {"op": "remove", "path": "/a/0"}])
    assert result == {"a": [2, 3], "b": {}, "d": 2, "e": 2}
    assert doc == {"a": [1, 2], "b": {"c": 1}}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "remove", "path": "/missing"}])


def test_strategic_merge_keyed_lists_and_directives():
    original = {"spec": {"containers": [{"name": "a", "image": "1", "env": [{"name": "X", "value": "1"}]},
                                        {"name": "b", "image": "1"}],
                         "tolerations": [{"key": "t1"}], "taints": [{"key": "k", "effect": "NoSchedule"}]},
                "metadata": {"finalizers": ["f1"]}}
    patch = {"spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]}, {"name": "b", "$patch": "delete"},
                                     {"name": "c", "image": "3"}],
                      "tolerations": [{"key": "t2"}], "taints": [{"key": "new", "effect": "NoExecute"}]},
             "metadata": {"finalizers": ["f2"]}}
    result = strategic_merge(original, patch)
    assert [c["name"] for c in result["spec"]["containers"]] == ["a", "c"]
    assert result["spec"]["containers"][0]["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
    assert result["spec"]["containers"][0]["image"] == "1"
    assert result["spec"]["tolerations"] == [{"key": "t2"}]
    assert result["spec"]["taints"] == [{"key": "new", "effect": "NoExecute"}]
    assert result["metadata"]["finalizers"] == ["f1", "f2"]
    assert strategic_merge(original, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]}})["metadata"]["finalizers"] == []
    assert strategic_merge(original, {"spec": {"$patch": "replace", "x": 1}})["spec"] == {"x": 1}


# --- create / update / patch --------------------------------------------------------------------------

def test_create_sets_server_fields_and_defaults(store):
    created = store.create("pods", "default", {"metadata": {"generateName": "web-"}, "spec": {"containers": []}})
    meta = created["metadata"]
    assert meta["name"].startswith("web-") and len(meta["name"]) == 9
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert created["kind"] == "Pod" and created["apiVersion"] == "v1"
    assert created["status"]["phase"] == "Pending"
    assert created["spec"]["schedulerName"] == "default-scheduler"


def test_create_in_missing_namespace_is_not_found(store):
    with pytest.raises(NotFound, match='namespaces "nope" not found'):
        store.create("configmaps", "nope", {"metadata": {"name": "c"}})


def test_invalid_names_are_rejected(store):
    with pytest.raises(Exception, match="Required value"):
        store.create("nodes", None, {"metadata": {}})
    with pytest.raises(Exception, match="RFC 1123"):
        store.create("nodes", None, {"metadata": {"name": "Bad_Name"}})


def test_duplicate_create(store):
    store.create("daemonsets", "default", {"metadata": {"name": "ds"}, "spec": {}})
    with pytest.raises(AlreadyExists, match='daemonsets.apps "ds" already exists'):
        store.create("apps/v1/daemonsets", "default", {"metadata": {"name": "ds"}})


def test_status_subresource_separation(store):
    store.create("nodes", None, {"metadata": {"name": "n"}, "spec": {}, "status": {"capacity": {"cpu": "1"}}})
    patched = store.patch("nodes", None, "n", {"spec": {"unschedulable": True}, "status": {"capacity": {"cpu": "9"}}}, "merge")
    assert patched["spec"]["unschedulable"] is True and patched["status"]["capacity"] == {"cpu": "1"}
    patched = store.patch("nodes", None, "n", {"spec": {"unschedulable": False}, "status": {"capacity": {"cpu": "9"}}},
                          "merge", subresource="status")
    assert patched["spec"]["unschedulable"] is True and patched["status"]["capacity"] == {"cpu": "9"}


def test_generation_changes_with_spec_only(store):
    store.create("daemonsets", "default", {"metadata": {"name": "ds"}, "spec": {"x": 1}})
    assert store.patch("daemonsets", "default", "ds", {"metadata": {"labels": {"a": "b"}}}, "merge")["metadata"]["generation"] == 1
    assert store.patch("daemonsets", "default", "ds", {"spec": {"x": 2}}, "merge")["metadata"]["generation"] == 2


def test_update_precondition(store):
    created = store.create("configmaps", "default", {"metadata": {"name": "c"}, "data": {"a": "1"}})
    store.patch("configmaps", "default", "c", {"data": {"a": "2"}}, "merge")
    with pytest.raises(Conflict, match='Operation cannot be fulfilled on configmaps "c"'):
        store.update("configmaps", "default", "c", created)


def test_dry_run_changes_nothing(store):
    rv = store.resource_version
    would = store.create("configmaps", "default", {"metadata": {"name": "c"}, "data": {"a": "1"}}, dry_run=True)
    assert would["data"] == {"a": "1"}
    with pytest.raises(NotFound):
        store.get("configmaps", "default", "c")
    assert store.resource_version == rv


def test_list_with_limit_and_continue(store):
    for i in range(5):
        store.create("configmaps", "default", {"metadata": {"name": f"c{i}"}})
    first = store.list_stored(store.resolve("configmaps"), "default", limit=2)
    assert [o["metadata"]["name"] for o in first.items] == ["c0", "c1"] and first.continue_token and first.remaining == 3
    rest = store.list_stored(store.resolve("configmaps"), "default", limit=10, continue_token=first.continue_token)
    assert [o["metadata"]["name"] for o in rest.items] == ["c2", "c3", "c4"] and rest.continue_token is None


# --- deletion --------------------------------------------------------------------------------------

def test_finalizers_hold_deletion_until_removed(store):
    store.create("configmaps", "default", {"metadata": {"name": "c", "finalizers": ["example.com/hold"]}})
    marked = store.delete("configmaps", "default", "c")
    assert marked["metadata"]["deletionTimestamp"]
    assert store.get("configmaps", "default", "c")["metadata"]["deletionTimestamp"]
    store.patch("configmaps", "default", "c", {"metadata": {"finalizers": None}}, "merge")
    with pytest.raises(NotFound):
        store.get("configmaps", "default", "c")


def test_deleting_a_daemonset_deletes_its_pods(store):
    ds = store.create("daemonsets", "default", {"metadata": {"name": "plugin"}, "spec": {}})
    owner = [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "plugin", "uid": ds["metadata"]["uid"], "controller": True}]
    store.create("pods", "default", pod("plugin-a", ownerReferences=owner))
    store.create("pods", "default", pod("other"))
    store.delete("daemonsets", "default", "plugin")
    assert [p["metadata"]["name"] for p in store.list("pods")] == ["other"]


def test_orphan_propagation_keeps_dependents(store):
    ds = store.create("daemonsets", "default", {"metadata": {"name": "plugin"}, "spec": {}})
    owner = [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "plugin", "uid": ds["metadata"]["uid"]}]
    store.create("pods", "default", pod("plugin-a", ownerReferences=owner))
    store.delete("daemonsets", "default", "plugin", propagation_policy="Orphan")
    assert [p["metadata"]["name"] for p in store.list("pods")] == ["plugin-a"]


def test_deleting_a_namespace_deletes_its_objects(store):
    store.create("namespaces", None, {"metadata": {"name": "team"}})
    store.create("configmaps", "team", {"metadata": {"name": "c"}})
    store.create("pods", "team", pod("p"))
    store.create("configmaps", "default", {"metadata": {"name": "kept"}})
    store.delete("namespaces", None, "team")
    assert store.list("configmaps") and [c["metadata"]["name"] for c in store.list("configmaps")] == ["kept"]
    assert store.list("pods") == []
    with pytest.raises(Forbidden):
        store.delete("namespaces", None, "default")


def test_pod_termination_delay(store):
    store.termination_delay = 0.2
    store.create("pods", "default", pod("p"))
    done = threading.Event()
    store.subscribe(lambda kind, event, obj: done.set() if (kind, event) == ("pods", "DELETED") else None)
    marked = store.delete("pods", "default", "p")
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["deletionGracePeriodSeconds"] == 30
    assert store.get("pods", "default", "p")["metadata"]["deletionTimestamp"]
    assert done.wait(10)
    assert store.list("pods") == []
    store.create("pods", "default", pod("q"))
    store.delete("pods", "default", "q", grace_period_seconds=0)
    assert store.list("pods") == []


# --- PodDisruptionBudgets ------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, healthy, total, desired, allowed", [
    ({"minAvailable": 2}, 3, 3, 2, 1),
    ({"minAvailable": "50%"}, 3, 3, 2, 1),      # ceil(1.5)
    ({"minAvailable": "100%"}, 3, 3, 3, 0),
    ({"maxUnavailable": 1}, 3, 3, 2, 1),
    ({"maxUnavailable": "34%"}, 3, 3, 1, 2),    # 3 - ceil(1.02)
    ({"maxUnavailable": 0}, 2, 2, 2, 0),
    ({"maxUnavailable": 1}, 2, 3, 2, 0),        # one already unhealthy
    ({"minAvailable": 0}, 0, 2, 0, 0),
])
def test_pdb_maths(spec, healthy, total, desired, allowed):
    pods = [{"metadata": {}, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if i < healthy else "False"}]}}
            for i in range(total)]
    status = pdb_status(spec, pods, 1)
    assert (status["desiredHealthy"], status["disruptionsAllowed"], status["currentHealthy"], status["expectedPods"]) == (
        desired, allowed, healthy, total)


def test_scaled_value():
    assert scaled_value("10%", 5, True) == 1 and scaled_value("10%", 5, False) == 0 and scaled_value(3, 5, True) == 3


def _pdb(store: Store, **spec: Any) -> None:
    store.create("poddisruptionbudgets", "default", {"metadata": {"name": "pdb"},
                                                     "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec}})


def test_pdb_status_follows_pods(store):
    _pdb(store, minAvailable=1)
    store.create("pods", "default", pod("w1", labels={"app": "web"}))
    store.create("pods", "default", pod("w2", labels={"app": "web"}))
    store.create("pods", "default", pod("x", labels={"app": "other"}))
    status = store.get("poddisruptionbudgets", "default", "pdb")["status"]
    assert (status["currentHealthy"], status["expectedPods"], status["disruptionsAllowed"]) == (2, 2, 1)


def _replicaset(store: Store, replicas: int) -> list[dict[str, Any]]:
    rs = store.create("replicasets", "default", {"metadata": {"name": "web"}, "spec": {"replicas": replicas}})
    return [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": rs["metadata"]["uid"], "controller": True}]


def test_max_unavailable_counts_against_the_controller_scale(store):
    _pdb(store, maxUnavailable=1)
    owner = _replicaset(store, 3)
    for name in ("w1", "w2", "w3"):
        store.create("pods", "default", pod(name, labels={"app": "web"}, ownerReferences=owner))
    assert store.get("poddisruptionbudgets", "default", "pdb")["status"]["disruptionsAllowed"] == 1
    store.evict("default", "w1")
    status = store.get("poddisruptionbudgets", "default", "pdb")["status"]
    assert (status["expectedPods"], status["desiredHealthy"], status["currentHealthy"], status["disruptionsAllowed"]) == (3, 2, 2, 0)
    with pytest.raises(TooManyRequests) as raised:
        store.evict("default", "w2")
    assert raised.value.body()["details"]["causes"] == [
        {"reason": "DisruptionBudget", "message": "The disruption budget pdb needs 2 healthy pods and has 2 currently"}]
    # the replacement becomes ready: one more disruption is allowed
    store.create("pods", "default", pod("w4", labels={"app": "web"}, ownerReferences=owner))
    store.evict("default", "w2")
    assert [p["metadata"]["name"] for p in store.list("pods")] == ["w3", "w4"]


def test_changing_the_budget_recomputes_its_status(store):
    _pdb(store, maxUnavailable=1)
    store.create("pods", "default", pod("w1", labels={"app": "web"}))
    store.create("pods", "default", pod("w2", labels={"app": "web"}))
    assert store.get("poddisruptionbudgets", "default", "pdb")["status"]["disruptionsAllowed"] == 1
    patched = store.patch("poddisruptionbudgets", "default", "pdb", {"spec": {"maxUnavailable": 0}}, "merge")
    assert patched["status"]["disruptionsAllowed"] == 0
    with pytest.raises(TooManyRequests):
        store.evict("default", "w1")


def test_eviction_ignores_budget_for_pending_and_allows_unhealthy_when_budget_is_met(store):
    _pdb(store, minAvailable=1)
    store.create("pods", "default", pod("pending", labels={"app": "web"}, phase="Pending", ready=False))
    store.evict("default", "pending")
    store.create("pods", "default", pod("healthy", labels={"app": "web"}))
    store.create("pods", "default", pod("sick", labels={"app": "web"}, ready=False))
    store.evict("default", "sick")  # 1 healthy >= 1 desired
    with pytest.raises(TooManyRequests):
        store.evict("default", "healthy")


def test_eviction_with_two_budgets_is_an_error(store):
    _pdb(store, minAvailable=0)
    store.create("poddisruptionbudgets", "default", {"metadata": {"name": "second"},
                                                     "spec": {"minAvailable": 0, "selector": {"matchLabels": {"app": "web"}}}})
    store.create("pods", "default", pod("w", labels={"app": "web"}))
    with pytest.raises(Exception, match="more than one PodDisruptionBudget"):
        store.evict("default", "w")


def test_evicting_a_missing_pod(store):
    with pytest.raises(NotFound):
        store.evict("default", "nope")


# --- subscriptions and watches -------------------------------------------------------------------------

def test_subscribers_see_every_change_in_order(store):
    seen: list[tuple[str, str, str]] = []
    unsubscribe = store.subscribe(lambda kind, event, obj: seen.append((kind, event, obj["metadata"]["name"])))
    store.create("nodes", None, {"metadata": {"name": "n"}})
    store.patch("nodes", None, "n", {"metadata": {"labels": {"a": "b"}}})
    store.delete("nodes", None, "n")
    unsubscribe()
    store.create("nodes", None, {"metadata": {"name": "m"}})
    assert seen == [("nodes", "ADDED", "n"), ("nodes", "MODIFIED", "n"), ("nodes", "DELETED", "n")]


def test_subscriber_copies_are_private(store):
    store.subscribe(lambda kind, event, obj: obj["metadata"].update(name="mutated"))
    store.create("nodes", None, {"metadata": {"name": "n"}})
    assert store.get("nodes", None, "n")["metadata"]["name"] == "n"


def test_watch_replays_from_resource_version_and_expires(store):
    store.history_limit = 5
    start = store.resource_version
    store.create("configmaps", "default", {"metadata": {"name": "a"}})
    watcher = store.watch("configmaps", "default", start)
    event = watcher.next(1)
    assert event is not None and (event.type, event.object["metadata"]["name"]) == ("ADDED", "a")
    watcher.close()
    for i in range(10):
        store.create("configmaps", "default", {"metadata": {"name": f"c{i}"}})
    with pytest.raises(Gone, match="too old resource version"):
        store.watch("configmaps", "default", start)


def test_watch_without_version_lists_first(store):
    store.create("nodes", None, {"metadata": {"name": "n1", "labels": {"gpu": "true"}}})
    store.create("nodes", None, {"metadata": {"name": "n2"}})
    watcher = store.watch("nodes", label_selector="gpu=true")
    first = watcher.next(1)
    assert first is not None and first.object["metadata"]["name"] == "n1"
    store.patch("nodes", None, "n2", {"metadata": {"labels": {"gpu": "true"}}})
    second = watcher.next(1)
    assert second is not None and (second.type, second.object["metadata"]["name"]) == ("ADDED", "n2")
    assert watcher.next(0.05) is None
    watcher.close()


def test_pods_by_node_index(store):
    store.create("pods", "default", pod("a", node="n1"))
    store.create("pods", "default", pod("b", node=None))
    store.patch("pods", "default", "b", {"spec": {"nodeName": "n1"}}, "merge")
    assert [p["metadata"]["name"] for p in store.pods_on_node("n1")] == ["a", "b"]
    store.delete("pods", "default", "a")
    assert [p["metadata"]["name"] for p in store.list("pods", field_selector="spec.nodeName=n1")] == ["b"]


def test_crd_registers_its_resource(store):
    crd = {"metadata": {"name": "servicemonitors.monitoring.coreos.com"},
           "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                    "names": {"plural": "servicemonitors", "kind": "ServiceMonitor", "singular": "servicemonitor"},
                    "versions": [{"name": "v1", "served": True, "storage": True}]}}
    created = store.create("customresourcedefinitions", None, crd)
    assert {c["type"] for c in created["status"]["conditions"]} == {"Established", "NamesAccepted"}
    store.create("servicemonitors", "default", {"metadata": {"name": "sm"}, "spec": {}})
    assert store.get("monitoring.coreos.com/v1/servicemonitors", "default", "sm")["kind"] == "ServiceMonitor"
    store.delete("customresourcedefinitions", None, "servicemonitors.monitoring.coreos.com")
    with pytest.raises(NotFound):
        store.list("servicemonitors")


def test_concurrent_writers_get_unique_versions(store):
    def writer(prefix: str) -> None:
        for i in range(50):
            store.create("configmaps", "default", {"metadata": {"name": f"{prefix}-{i}"}})

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    versions = [int(c["metadata"]["resourceVersion"]) for c in store.list("configmaps")]
    assert len(versions) == len(set(versions)) == 200


# --- validation as the apiserver does it -------------------------------------------------------------

@pytest.mark.parametrize("change", [
    {"metadata": {"labels": {"a\n": "b"}}},
    {"metadata": {"labels": {"a": "b\n"}}},
    {"metadata": {"labels": {"a": "x" * 64}}},
    {"metadata": {"annotations": {"example.com/\n": "v"}}},
    {"spec": {"taints": [{"key": "k\n", "effect": "NoSchedule"}]}},
    {"spec": {"taints": [{"key": "k", "value": "v\n", "effect": "NoSchedule"}]}},
    {"spec": {"taints": [{"key": "k", "effect": "NoSchedule\n"}]}},
])
def test_keys_values_and_taints_the_apiserver_refuses_are_refused(store, change):
    from gpuops_sim.k8s.store import Invalid

    store.create("nodes", None, {"metadata": {"name": "node-1", "labels": {"a": "1"}}})
    with pytest.raises(Invalid):
        store.patch("nodes", None, "node-1", change, patch_type="merge")
    with pytest.raises(Invalid):
        store.create("nodes", None, {"metadata": {"name": "node-2", **change.get("metadata", {})}, "spec": change.get("spec", {})})
    assert store.get("nodes", None, "node-1")["metadata"]["labels"] == {"a": "1"}
    with pytest.raises(Invalid):
        store.create("nodes", None, {"metadata": {"name": "node-3\n"}})
