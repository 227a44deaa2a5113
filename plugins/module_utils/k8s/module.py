# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""What every Kubernetes module of the collection does the same way: its argument spec
starts from the auth options, it gets its client from one place, it fails one way, and it
works on one node (``name``) or on a batch of nodes (``nodes``) in one run."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Optional

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import (
    AUTH_ARG_SPEC,
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    K8sError,
    KubeClient,
    create_client,
    kubeconfig_secrets,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.node import validate_node_name

#: Nodes of one batch worked on at once (each a thread with its own API connection); more queue.
BATCH_WORKERS = 64

NodeAction = Callable[[KubeClient, Mapping[str, Any]], dict]
#: Works on every node of a batch at once; returns each node's result, or the K8sError it met.
BatchAction = Callable[[KubeClient, list], dict]


class K8sModule(AnsibleModule):
    """AnsibleModule that knows a kubeconfig dictionary's secrets from the start.

    They are registered as soon as the parameters are read, before the argument validation (whose
    failure prints the invocation) and before the invocation is logged to the system journal.
    """

    def _load_params(self) -> None:
        super()._load_params()
        for secret in kubeconfig_secrets((self.params or {}).get("kubeconfig")):
            self.no_log_values.add(secret)


def argument_spec(per_node: Optional[dict[str, dict[str, Any]]] = None, **options: dict[str, Any]) -> dict[str, Any]:
    """Auth options, ``options``, and ``name`` or ``nodes``.

    ``per_node`` are the options a batch may set node by node: each is an option of the module
    and a suboption of ``nodes`` without its default, so that a node that does not set it takes
    the task's value.
    """
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec["name"] = {"type": "str"}
    node_options: dict[str, Any] = {"name": {"type": "str", "required": True}}
    for key, option in (per_node or {}).items():
        spec[key] = copy.deepcopy(option)
        node_option = copy.deepcopy(option)
        node_option.pop("default", None)
        node_options[key] = node_option
    spec["nodes"] = {"type": "list", "elements": "dict", "options": node_options}
    spec.update(options)
    return spec


#: For AnsibleModule: exactly one of ``name`` and ``nodes``.
NODE_CHOICE = {"mutually_exclusive": [("name", "nodes")], "required_one_of": [("name", "nodes")]}


def node_params(params: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters for one node of ``nodes``: the task's, with what the entry sets."""
    merged = {key: value for key, value in params.items() if key != "nodes"}
    merged.update({key: value for key, value in entry.items() if value is not None})
    return merged


def validate_names(params: Mapping[str, Any]) -> None:
    """Every node name, before any request: an empty name would read the node list instead of a
    node, and select every unscheduled pod of the cluster (``spec.nodeName=``)."""
    if params.get("nodes") is None:
        validate_node_name(params.get("name"), "name")
        return
    for index, entry in enumerate(params["nodes"]):
        validate_node_name(entry.get("name"), "nodes[{0}].name".format(index))


def _failure(error: K8sError) -> dict[str, Any]:
    details = dict(error.details)
    details.pop("status", None)
    details.pop("diff", None)
    details.update({"failed": True, "changed": False, "msg": error.msg})
    return details


def run_batch(client: KubeClient, params: Mapping[str, Any], action: NodeAction, batch_action: Optional[BatchAction] = None) -> dict[str, Any]:
    """Run ``action`` for every node of ``params['nodes']`` (``batch_action`` for all at once).

    A node's failure does not stop the others: each node's result is returned under ``nodes``,
    and the run fails at the end naming the nodes that failed, so that a playbook can fail
    exactly those hosts.
    """
    entries = params["nodes"]
    names = [entry["name"] for entry in entries]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise K8sError("nodes: each node may be named once, {0} named more than once".format(", ".join(repeated)))
    per_node = [node_params(params, entry) for entry in entries]
    outcomes: dict[str, Any]
    if not per_node:
        outcomes = {}
    elif batch_action is not None:
        outcomes = batch_action(client, per_node)
    else:
        with ThreadPoolExecutor(max_workers=min(len(per_node), BATCH_WORKERS)) as pool:
            futures = {one["name"]: pool.submit(_outcome, action, client, one) for one in per_node}
            outcomes = {name: future.result() for name, future in futures.items()}

    nodes: dict[str, Any] = {}
    diff: dict[str, dict[str, Any]] = {"before": {}, "after": {}}
    warnings = []
    for name in names:
        outcome = outcomes[name]
        result = _failure(outcome) if isinstance(outcome, K8sError) else dict(outcome)
        node_diff = result.pop("diff", None)
        if node_diff:
            diff["before"][name] = node_diff.get("before")
            diff["after"][name] = node_diff.get("after")
        warnings.extend("{0}: {1}".format(name, warning) for warning in result.pop("warnings", None) or [])
        nodes[name] = result
    failed = [name for name in names if nodes[name].get("failed")]
    summary = {"changed": any(result.get("changed") for result in nodes.values()), "nodes": nodes, "failed_nodes": failed,
               "diff": diff, "warnings": warnings}
    if failed:
        raise K8sError(
            "{0} of {1} nodes failed: {2}".format(
                len(failed), len(names), "; ".join("{0}: {1}".format(name, nodes[name]["msg"]) for name in failed)),
            **summary,
        )
    return summary


def _outcome(action: NodeAction, client: KubeClient, params: Mapping[str, Any]) -> Any:
    try:
        return action(client, params)
    except K8sError as error:
        return error


def run(module: AnsibleModule, action: NodeAction, batch_action: Optional[BatchAction] = None) -> None:
    """Build the client, run ``action`` with it for ``name`` or each of ``nodes``, and exit with
    its result (or its failure)."""
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=str(KUBERNETES_IMPORT_ERROR))
    for secret in kubeconfig_secrets(module.params.get("kubeconfig")):
        module.no_log_values.add(secret)
    batch = module.params.get("nodes")
    try:
        validate_names(module.params)
        client = create_client(module.params, connections=min(len(batch), BATCH_WORKERS) if batch else None)
        if batch is None:
            result = action(client, module.params)
        else:
            result = run_batch(client, module.params, action, batch_action)
    except K8sError as error:
        details = dict(error.details)
        if details.get("missing_library"):
            module.fail_json(msg=missing_required_lib(details["missing_library"]) + " " + error.msg)
        details.pop("status", None)
        if not module._diff:
            details.pop("diff", None)
        for warning in details.pop("warnings", None) or []:
            module.warn(warning)
        module.fail_json(msg=error.msg, **details)
    if not module._diff:
        result.pop("diff", None)
    warnings = result.pop("warnings", None) or []
    for warning in warnings:
        module.warn(warning)
    module.exit_json(**result)
