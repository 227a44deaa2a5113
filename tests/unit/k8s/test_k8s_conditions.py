# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Node wait conditions: quantities, resources, labels, readiness, cordon, JMESPath."""

from __future__ import annotations

from decimal import Decimal

import pytest
from k8s_unit_helpers import make_node

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.conditions import (
    NodeConditions,
    all_met,
    evaluate,
    node_summary,
    parse_quantity,
    unmet_summary,
)


@pytest.mark.parametrize(
    "text, value",
    [("4", 4), (7, 7), ("500m", Decimal("0.5")), ("40Gi", 40 * 2 ** 30), ("2k", 2000), ("1e3", 1000), ("0", 0), ("1.5G", 1500000000)],
)
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["four", "4 Gi", "", "1Zi", True])
def test_parse_quantity_rejects_garbage(text):
    with pytest.raises(ValueError):
        parse_quantity(text)


def by_name(results):
    return {result["condition"]: result for result in results}


def test_exact_resources_count_absent_as_zero():
    node = make_node(allocatable={"nvidia.com/mig-1g.5gb": "7", "cpu": "64"})
    conditions = NodeConditions(allocatable={"nvidia.com/mig-1g.5gb": 7, "nvidia.com/mig-3g.20gb": 0, "cpu": "64000m"})
    results = by_name(evaluate(node, conditions))
    assert all(result["met"] for result in results.values())
    assert results["allocatable[nvidia.com/mig-3g.20gb]"]["observed"] is None


def test_exact_mismatch_reports_expected_and_observed():
    node = make_node(allocatable={"nvidia.com/gpu": "0"})
    results = evaluate(node, NodeConditions(allocatable={"nvidia.com/gpu": 4}))
    assert results == [{"condition": "allocatable[nvidia.com/gpu]", "met": False, "expected": "4", "observed": "0"}]
    assert unmet_summary(results) == "allocatable[nvidia.com/gpu]: expected '4', observed '0'"


def test_at_least_mode():
    node = make_node(allocatable={"nvidia.com/gpu": "8"})
    assert all_met(evaluate(node, NodeConditions(allocatable={"nvidia.com/gpu": 4}, resource_match="at_least")))
    assert not all_met(evaluate(node, NodeConditions(allocatable={"nvidia.com/gpu": 4})))
    assert evaluate(node, NodeConditions(capacity={"nvidia.com/gpu": 9}, resource_match="at_least"))[0]["expected"] == ">= 9"


def test_labels_value_or_absent():
    node = make_node(labels={"nvidia.com/mig.config.state": "success"})
    conditions = NodeConditions(labels={"nvidia.com/mig.config.state": "success", "gpuops.io/gone": None})
    assert all_met(evaluate(node, conditions))
    results = by_name(evaluate(node, NodeConditions(labels={"nvidia.com/mig.config.state": None})))
    assert results["labels[nvidia.com/mig.config.state]"] == {
        "condition": "labels[nvidia.com/mig.config.state]", "met": False, "expected": "(absent)", "observed": "success"}


def test_ready_and_unschedulable():
    assert all_met(evaluate(make_node(ready=True, unschedulable=True), NodeConditions(ready=True, unschedulable=True)))
    results = by_name(evaluate(make_node(ready=False), NodeConditions(ready=True, unschedulable=False)))
    assert results["ready"]["met"] is False and results["ready"]["observed"] is False
    assert results["unschedulable"]["met"] is True


def test_jmespath_equals_truthy_and_falsy():
    node = make_node(taints=[{"key": "gpuops.io/mig-reconfigure", "effect": "NoSchedule"}])
    conditions = NodeConditions(jmespath_conditions=[
        {"expression": "metadata.name", "equals": "gpu-node-1"},
        {"expression": "spec.taints[?key=='gpuops.io/mig-reconfigure']"},
        {"expression": "spec.unschedulable", "truthy": False},
        {"expression": "status.conditions[?type=='Ready'].status | [0]", "equals": "True"},
    ])
    results = evaluate(node, conditions)
    assert all_met(results), results
    unmet = evaluate(node, NodeConditions(jmespath_conditions=[{"expression": "metadata.name", "equals": "other"}]))
    assert unmet[0] == {"condition": "jmespath[metadata.name]", "met": False, "expected": "other", "observed": "gpu-node-1"}


def test_jmespath_errors_name_the_entry():
    with pytest.raises(K8sError, match=r"jmespath\[0\].expression: 'metadata\.\[' is not valid JMESPath"):
        NodeConditions(jmespath_conditions=[{"expression": "metadata.["}])
    with pytest.raises(K8sError, match=r"jmespath\[0\]: give either equals or truthy"):
        NodeConditions(jmespath_conditions=[{"expression": "a", "equals": 1, "truthy": True}])


def test_bad_inputs_name_the_field():
    with pytest.raises(K8sError, match=r"allocatable.nvidia.com/gpu: 'lots' is not a Kubernetes quantity"):
        NodeConditions(allocatable={"nvidia.com/gpu": "lots"})
    with pytest.raises(K8sError, match="resource_match: 'roughly'"):
        NodeConditions(resource_match="roughly")


def test_missing_node_meets_nothing():
    results = evaluate(None, NodeConditions(ready=True, labels={"a": None}))
    assert [r["met"] for r in results] == [False, False]
    assert {r["observed"] for r in results} == {"node not found"}


def test_node_summary():
    node = make_node(labels={"a": "1"}, allocatable={"nvidia.com/gpu": "1"}, taints=[{"key": "k", "effect": "NoSchedule"}])
    summary = node_summary(node)
    assert summary["labels"] == {"a": "1"}
    assert summary["allocatable"] == {"nvidia.com/gpu": "1"}
    assert summary["conditions"][0]["type"] == "Ready"
    assert summary["taints"] == [{"key": "k", "effect": "NoSchedule"}]
    assert summary["unschedulable"] is False
    assert node_summary(None) == {}


def test_jmespath_runtime_type_error_is_an_unmet_condition():
    node = make_node()
    results = evaluate(node, NodeConditions(jmespath_conditions=[{"expression": "length(spec.taints)", "equals": 0}]))
    assert results[0]["met"] is False
    assert results[0]["observed"].startswith("JMESPath error:")
