# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One module run for a batch of nodes: the ``nodes`` option and how its outcomes are reported."""

from __future__ import annotations

import threading

import pytest

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.module import argument_spec, node_params, run_batch

PER_NODE = {
    "labels": {"type": "dict", "default": {}},
    "taints": {"type": "list", "elements": "dict", "default": [], "options": {"key": {"type": "str", "required": True}}},
}


def test_per_node_options_are_suboptions_without_defaults():
    spec = argument_spec(per_node=PER_NODE, timeout={"type": "int", "default": 60})
    assert spec["labels"] == {"type": "dict", "default": {}}
    assert spec["nodes"]["options"]["labels"] == {"type": "dict"}
    assert spec["nodes"]["options"]["taints"]["options"] == {"key": {"type": "str", "required": True}}
    assert spec["nodes"]["options"]["name"] == {"type": "str", "required": True}
    assert "timeout" not in spec["nodes"]["options"] and spec["timeout"]["default"] == 60
    assert "kubeconfig" in spec and spec["name"] == {"type": "str"}


def test_a_node_takes_the_tasks_options_it_does_not_set():
    params = {"name": None, "labels": {"a": "1"}, "timeout": 60, "nodes": [{}]}
    assert node_params(params, {"name": "n1", "labels": None}) == {"name": "n1", "labels": {"a": "1"}, "timeout": 60}
    assert node_params(params, {"name": "n2", "labels": {}}) == {"name": "n2", "labels": {}, "timeout": 60}


def test_each_node_runs_with_its_own_params_and_a_failure_stops_no_other():
    seen = []
    lock = threading.Lock()

    def action(client, params):
        with lock:
            seen.append((params["name"], params["labels"]))
        if params["name"] == "n2":
            raise K8sError("node n2 not found", status=404, diff={"x": 1}, details_kept=True)
        return {"changed": params["name"] == "n1", "diff": {"before": {"n": 0}, "after": {"n": 1}}, "warnings": ["not fenced"]}

    params = {"name": None, "labels": {"a": "1"}, "nodes": [{"name": "n1", "labels": None}, {"name": "n2", "labels": {"b": "2"}},
                                                            {"name": "n3", "labels": None}]}
    with pytest.raises(K8sError) as raised:
        run_batch(object(), params, action)
    error = raised.value
    assert sorted(seen) == [("n1", {"a": "1"}), ("n2", {"b": "2"}), ("n3", {"a": "1"})]
    assert error.msg == "1 of 3 nodes failed: n2: node n2 not found"
    details = error.details
    assert details["failed_nodes"] == ["n2"]
    assert details["changed"] is True
    assert details["nodes"]["n2"] == {"failed": True, "changed": False, "msg": "node n2 not found", "details_kept": True}
    assert details["nodes"]["n1"] == {"changed": True}
    assert details["diff"]["before"] == {"n1": {"n": 0}, "n3": {"n": 0}}
    assert details["warnings"] == ["n1: not fenced", "n3: not fenced"]


def test_a_batch_that_all_succeeds_returns_each_nodes_result():
    result = run_batch(object(), {"nodes": [{"name": "n1"}, {"name": "n2"}]}, lambda client, params: {"changed": False, "seen": params["name"]})
    assert result["changed"] is False and result["failed_nodes"] == []
    assert result["nodes"] == {"n1": {"changed": False, "seen": "n1"}, "n2": {"changed": False, "seen": "n2"}}


def test_an_empty_batch_changes_nothing():
    assert run_batch(object(), {"nodes": []}, lambda client, params: pytest.fail("no node to run for"))["nodes"] == {}


def test_a_node_named_twice_is_refused_before_anything_runs():
    with pytest.raises(K8sError, match="nodes: each node may be named once, n1 named more than once"):
        run_batch(object(), {"nodes": [{"name": "n1"}, {"name": "n1"}]}, lambda client, params: pytest.fail("must not run"))


def test_a_batch_action_serves_all_nodes_at_once():
    calls = []

    def batch_action(client, requests):
        calls.append([request["name"] for request in requests])
        return {"n1": {"changed": False}, "n2": K8sError("node n2 did not meet the conditions")}

    with pytest.raises(K8sError) as raised:
        run_batch(object(), {"nodes": [{"name": "n1"}, {"name": "n2"}]}, lambda client, params: pytest.fail("per node"), batch_action)
    assert calls == [["n1", "n2"]]
    assert raised.value.details["failed_nodes"] == ["n2"]
