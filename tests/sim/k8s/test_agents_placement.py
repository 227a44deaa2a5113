"""Node selection rules of the simulated DaemonSet controller and scheduler."""

from __future__ import annotations

import pytest

from gpuops_sim.k8s.agents import pdb_status, selector_matches
from gpuops_sim.k8s.agents_placement import (daemon_pod_fits, matches_node, pod_requests, schedule_blockers,
                                             tolerates)

DEPLOY = "nvidia.com/gpu.deploy.device-plugin"


def node(labels=None, taints=None, unschedulable=False, ready=True):
    return {"metadata": {"name": "gpu-node-1", "labels": labels or {}},
            "spec": {"taints": taints or [], "unschedulable": unschedulable},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_node_selector_follows_the_pause_label():
    spec = {"nodeSelector": {DEPLOY: "true"}}
    assert matches_node(spec, node({DEPLOY: "true"}))
    assert not matches_node(spec, node({DEPLOY: "paused-for-mig-change"}))
    assert not matches_node(spec, node())


@pytest.mark.parametrize(("operator", "values", "labels", "expected"), [
    ("In", ["true"], {DEPLOY: "true"}, True),
    ("In", ["true"], {DEPLOY: "false"}, False),
    ("NotIn", ["false", "paused-for-mig-change"], {DEPLOY: "true"}, True),
    ("NotIn", ["false", "paused-for-mig-change"], {DEPLOY: "paused-for-mig-change"}, False),
    ("NotIn", ["false"], {}, True),
    ("Exists", [], {DEPLOY: "x"}, True),
    ("Exists", [], {}, False),
    ("DoesNotExist", [], {}, True),
    ("DoesNotExist", [], {DEPLOY: "x"}, False),
])
def test_node_affinity_operators(operator, values, labels, expected):
    expression = {"key": DEPLOY, "operator": operator}
    if values:
        expression["values"] = values
    spec = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [expression]}]}}}}
    assert matches_node(spec, node(labels)) is expected


def test_affinity_terms_are_ored():
    spec = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
        {"matchExpressions": [{"key": "b", "operator": "Exists"}]}]}}}}
    assert matches_node(spec, node({"b": "1"}))
    assert not matches_node(spec, node({"c": "1"}))


def test_taints_and_tolerations():
    taint = {"key": "gpuops.io/mig-reconfigure", "value": "all-1g.5gb", "effect": "NoSchedule"}
    assert tolerates({"key": "gpuops.io/mig-reconfigure", "operator": "Exists"}, taint)
    assert tolerates({"operator": "Exists"}, taint)
    assert tolerates({"key": "gpuops.io/mig-reconfigure", "value": "all-1g.5gb", "effect": "NoSchedule"}, taint)
    assert not tolerates({"key": "gpuops.io/mig-reconfigure", "value": "other"}, taint)
    assert not tolerates({"key": "gpuops.io/mig-reconfigure", "operator": "Exists", "effect": "NoExecute"}, taint)
    assert not daemon_pod_fits({}, node(taints=[taint]))
    assert daemon_pod_fits({"tolerations": [{"operator": "Exists"}]}, node(taints=[taint]))
    assert daemon_pod_fits({}, node(taints=[{"key": "k", "effect": "PreferNoSchedule"}]))


def test_cordon_keeps_daemons_but_blocks_the_scheduler():
    cordoned = node(unschedulable=True)
    assert daemon_pod_fits({}, cordoned)
    assert "node(s) were unschedulable" in schedule_blockers({}, cordoned, {}, 10)


def test_schedule_blockers_count_extended_resources():
    spec = {"containers": [{"resources": {"limits": {"nvidia.com/mig-1g.5gb": 2, "cpu": "1"}}}]}
    assert pod_requests(spec) == {"nvidia.com/mig-1g.5gb": 2}
    assert schedule_blockers(spec, node(), {"nvidia.com/mig-1g.5gb": 2}, 10) == []
    assert schedule_blockers(spec, node(), {"nvidia.com/mig-1g.5gb": 1}, 10) == ["Insufficient nvidia.com/mig-1g.5gb"]


def test_label_selectors():
    assert selector_matches({}, {"a": "1"})
    assert not selector_matches(None, {"a": "1"})
    assert selector_matches({"matchLabels": {"app": "x"}}, {"app": "x"})
    assert not selector_matches({"matchExpressions": [{"key": "app", "operator": "In", "values": ["y"]}]}, {"app": "x"})


def _pods(ready: int, not_ready: int):
    ok = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    bad = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    return [ok] * ready + [bad] * not_ready


@pytest.mark.parametrize(("spec", "ready", "not_ready", "desired", "allowed"), [
    ({"minAvailable": 2}, 3, 0, 2, 1),
    ({"minAvailable": 3}, 3, 0, 3, 0),
    ({"maxUnavailable": 1}, 3, 0, 2, 1),
    ({"maxUnavailable": 1}, 2, 1, 2, 0),
    ({"minAvailable": "50%"}, 3, 0, 2, 1),
])
def test_pdb_status(spec, ready, not_ready, desired, allowed):
    status = pdb_status(spec, _pods(ready, not_ready), 1)
    assert (status["desiredHealthy"], status["disruptionsAllowed"], status["currentHealthy"]) == (desired, allowed, ready)
