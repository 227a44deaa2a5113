#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_node_wait
short_description: Wait until a Kubernetes node matches conditions on its resources, labels and status
version_added: 0.1.0
author: gpuops maintainers (@gpuops)
description:
  - Waits until the node meets every given condition, or fails at O(timeout) listing, for each unmet condition, what was
    expected and what was observed.
  - Follows the node with a watch and falls back to reading it every O(poll_interval) seconds when no watch can be kept
    open.
  - Conditions are evaluated on the node object as the API returns it (camelCase field names, as C(kubectl get node -o json)
    prints them).
options:
  name:
    description:
      - Name of the node.
      - Exactly one of O(name) and O(nodes) is required.
    type: str
  nodes:
    description:
      - The nodes of a batch, worked on in one run instead of one run per node, each with the options it sets for
        itself; an option a node does not set is the task's.
      - One list and watch of the nodes serves the whole batch. A node is done once it has met its conditions; the
        batch waits until every node is done or O(timeout) has passed.
      - A node's failure does not stop the others. The run fails at the end naming the nodes that failed, and returns
        each node's result under RV(nodes), so that a playbook can fail exactly the hosts of those nodes (the task's
        C(failed_when) set to V(false), then a check per host on RV(nodes)).
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - Name of the node.
        type: str
        required: true
      allocatable:
        description:
          - As O(allocatable), for this node.
        type: dict
      capacity:
        description:
          - As O(capacity), for this node.
        type: dict
      labels:
        description:
          - As O(labels), for this node.
        type: dict
      ready:
        description:
          - As O(ready), for this node.
        type: bool
      unschedulable:
        description:
          - As O(unschedulable), for this node.
        type: bool
  allocatable:
    description:
      - "Resources the node's C(status.allocatable) must show, as a dictionary of resource name and quantity, for example
        C(nvidia.com/mig-1g.5gb: 7). A resource the node does not list counts as V(0)."
      - Only the named resources are compared; name a resource with V(0) to require that it is gone.
    type: dict
    default: {}
  capacity:
    description:
      - Like O(allocatable), for C(status.capacity).
    type: dict
    default: {}
  resource_match:
    description:
      - V(exact) requires each named quantity exactly; V(at_least) requires at least it.
    type: str
    choices: [exact, at_least]
    default: exact
  labels:
    description:
      - Labels the node must carry with these values. A V(null) value requires the label to be absent.
    type: dict
    default: {}
  ready:
    description:
      - Whether the node's C(Ready) condition must be C(True) (V(true)) or not (V(false)).
    type: bool
  unschedulable:
    description:
      - Whether the node must be cordoned (V(true)) or schedulable (V(false)).
    type: bool
  jmespath:
    description:
      - JMESPath expressions over the node object, each with the value it must equal or whether it must be truthy.
      - Needs the Python library C(jmespath).
    type: list
    elements: dict
    default: []
    suboptions:
      expression:
        description:
          - The JMESPath expression, for example V(status.nodeInfo.kubeletVersion).
        type: str
        required: true
      equals:
        description:
          - The value the expression must return. Not given means O(jmespath[].truthy).
        type: raw
      truthy:
        description:
          - V(true) requires a truthy result, V(false) a falsy one. The default when O(jmespath[].equals) is not given is
            V(true).
        type: bool
  timeout:
    description:
      - Seconds to wait before failing.
    type: int
    default: 300
  poll_interval:
    description:
      - Seconds between two reads of the node when no watch can be kept open.
    type: float
    default: 1.0
extends_documentation_fragment:
  - gpuops.nvidia.k8s_auth_options
  - gpuops.nvidia.k8s_auth_options.ACTION_GROUP
  - gpuops.nvidia.attributes.INFO_MODULE
seealso:
  - module: gpuops.nvidia.k8s_node_label
"""

EXAMPLES = r"""
---
- name: Wait until the device plugin advertises the new MIG layout
  gpuops.nvidia.k8s_node_wait:
    name: gpu-node-1
    allocatable:
      nvidia.com/mig-1g.5gb: 7
      nvidia.com/mig-3g.20gb: 0
    labels:
      nvidia.com/mig.config.state: success
    ready: true
    timeout: 600

- name: Wait for at least 4 GPUs and a recent kubelet
  gpuops.nvidia.k8s_node_wait:
    name: gpu-node-1
    allocatable:
      nvidia.com/gpu: 4
    resource_match: at_least
    jmespath:
      - expression: "status.nodeInfo.kubeletVersion"
        equals: v1.30.2
      - expression: "spec.taints[?key=='gpuops.io/mig-reconfigure']"
        truthy: false
"""

RETURN = r"""
nodes:
  description:
    - With O(nodes), each node's result by name, with the keys a run for that node alone returns.
    - A node that failed has C(failed=true) and C(msg) saying why.
  returned: when O(nodes) is given
  type: dict
  sample: {"gpu-node-1": {"changed": true, "failed": false}, "gpu-node-2": {"changed": false, "failed": true, "msg": "..."}}
failed_nodes:
  description: With O(nodes), the names of the nodes that failed, in the order given.
  returned: when O(nodes) is given
  type: list
  elements: str
  sample: ["gpu-node-2"]
node:
  description: What the module last observed of the node.
  returned: always
  type: dict
  contains:
    name:
      description: Node name.
      type: str
      returned: when the node exists
    labels:
      description: Node labels.
      type: dict
      returned: when the node exists
    allocatable:
      description: C(status.allocatable).
      type: dict
      returned: when the node exists
    capacity:
      description: C(status.capacity).
      type: dict
      returned: when the node exists
    conditions:
      description: C(status.conditions) (type, status, reason, message).
      type: list
      elements: dict
      returned: when the node exists
    taints:
      description: C(spec.taints).
      type: list
      elements: dict
      returned: when the node exists
    unschedulable:
      description: Whether the node is cordoned.
      type: bool
      returned: when the node exists
  sample: {"name": "gpu-node-1", "allocatable": {"nvidia.com/mig-1g.5gb": "7"}, "labels": {}, "capacity": {}, "conditions": [],
           "taints": [], "unschedulable": false}
conditions:
  description: Every condition with whether it was met, what was expected and what was observed.
  returned: always
  type: list
  elements: dict
  sample: [{"condition": "allocatable[nvidia.com/mig-1g.5gb]", "met": true, "expected": "7", "observed": "7"}]
matched:
  description: The names of the conditions that were met.
  returned: always
  type: list
  elements: str
  sample: ["allocatable[nvidia.com/mig-1g.5gb]", "ready"]
"""

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.conditions import (
    RESOURCE_MATCHES,
    NodeConditions,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.module import K8sModule, NODE_CHOICE, argument_spec, run
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.wait import wait_for_node, wait_for_nodes


def conditions_of(params):
    return NodeConditions(
        allocatable=params["allocatable"],
        capacity=params["capacity"],
        resource_match=params["resource_match"],
        labels=params["labels"],
        ready=params["ready"],
        unschedulable=params["unschedulable"],
        jmespath_conditions=params["jmespath"],
    )


def main() -> None:
    module = K8sModule(
        argument_spec=argument_spec(
            per_node={
                "allocatable": {"type": "dict", "default": {}},
                "capacity": {"type": "dict", "default": {}},
                "labels": {"type": "dict", "default": {}},
                "ready": {"type": "bool"},
                "unschedulable": {"type": "bool"},
            },
            resource_match={"type": "str", "choices": list(RESOURCE_MATCHES), "default": "exact"},
            jmespath={
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "expression": {"type": "str", "required": True},
                    "equals": {"type": "raw"},
                    "truthy": {"type": "bool"},
                },
            },
            timeout={"type": "int", "default": 300},
            poll_interval={"type": "float", "default": 1.0},
        ),
        supports_check_mode=True,
        **NODE_CHOICE,
    )

    def action(client, params):
        return wait_for_node(client, params["name"], conditions_of(params), params["timeout"], params["poll_interval"])

    def batch_action(client, requests):
        return wait_for_nodes(client, requests, conditions_of)

    run(module, action, batch_action)


if __name__ == "__main__":
    main()
