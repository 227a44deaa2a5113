#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_node_taint
short_description: Add or remove taints on a Kubernetes node, cordon or uncordon it, and label it in the same write
version_added: 0.1.0
author: gpuops maintainers (@gpuops)
description:
  - Adds or removes the named taints of a node. Taints not named in O(taints) are never changed.
  - Cordons or uncordons the node with O(cordon). This is the one way the collection cordons a node.
  - The node is read, the new taint list computed, and the whole list written with the node's
    C(metadata.resourceVersion) as a precondition (C(spec.taints) is an atomic list). If another writer changed the
    node in between, the API answers 409; the node is then read again and the change recomputed, until O(timeout).
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
      - Nodes are changed in parallel, each with its own conflict retries.
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
      taints:
        description:
          - As O(taints), for this node.
        type: list
        elements: dict
        suboptions:
          key:
            description:
              - Taint key.
            type: str
            required: true
          value:
            description:
              - Taint value.
            type: str
          effect:
            description:
              - Taint effect.
            type: str
            choices: [NoSchedule, PreferNoSchedule, NoExecute]
      state:
        description:
          - As O(state), for this node.
        type: str
        choices: [present, absent]
      cordon:
        description:
          - As O(cordon), for this node.
        type: bool
      labels:
        description:
          - As O(labels), for this node.
        type: dict
      annotations:
        description:
          - As O(annotations), for this node.
        type: dict
      cordon_record:
        description:
          - As O(cordon_record), for this node.
        type: str
  taints:
    description:
      - The taints to add (O(state=present)) or remove (O(state=absent)).
      - A node holds at most one taint per O(taints[].key) and O(taints[].effect). With O(state=present), a taint with the
        same key and effect but another value gets the new value; with O(state=absent), every taint matching the given key
        (and effect and value, when given) is removed.
    type: list
    elements: dict
    default: []
    suboptions:
      key:
        description:
          - Taint key, for example V(gpuops.io/mig-reconfigure).
        type: str
        required: true
      value:
        description:
          - Taint value. Empty when not given.
        type: str
      effect:
        description:
          - Taint effect. Required with O(state=present).
        type: str
        choices: [NoSchedule, PreferNoSchedule, NoExecute]
  state:
    description:
      - Whether the taints in O(taints) should be on the node or not.
    type: str
    choices: [present, absent]
    default: present
  cordon:
    description:
      - V(true) marks the node unschedulable (cordon), V(false) schedulable again (uncordon).
      - Not given leaves C(spec.unschedulable) as it is.
      - Cordoning does not move running pods; use M(gpuops.nvidia.k8s_node_evacuate) for that.
    type: bool
  labels:
    description:
      - Labels to set in the same write as the taints, as with M(gpuops.nvidia.k8s_node_label); a V(null) value removes
        the label.
      - One write keeps a marker label and the taint it goes with together, for example a node in a change is never
        seen labelled C(pending) without its taint, even when the controller stops between two tasks.
    type: dict
    default: {}
  annotations:
    description:
      - Annotations to set in the same write, like O(labels).
    type: dict
    default: {}
  cordon_record:
    description:
      - The key of an annotation that keeps the node's own cordon across a cordon and the uncordon that ends it, for
        example V(gpuops.io/mig-reconfigure.cordoned-before). Not given, O(cordon) is written as it is.
      - With O(cordon=true), the same write records whether the node was already cordoned (V("true")) or not
        (V("false")). A node that already holds the record keeps it, so a run resumed after an interruption goes by
        what the node was before the first run, not by the cordon that run made.
      - With O(cordon=false), the node is uncordoned only when its record says it was not cordoned before; the record
        is removed in the same write. A node cordoned by someone else before, or one without a record, stays cordoned.
    type: str
  timeout:
    description:
      - Seconds to keep retrying conflicts (409) and transient API errors before failing.
    type: int
    default: 60
extends_documentation_fragment:
  - gpuops.nvidia.k8s_auth_options
  - gpuops.nvidia.k8s_auth_options.ACTION_GROUP
  - gpuops.nvidia.attributes
seealso:
  - module: gpuops.nvidia.k8s_node_evacuate
  - module: gpuops.nvidia.k8s_node_label
"""

EXAMPLES = r"""
---
- name: Fence a node for a MIG change (taint and cordon)
  gpuops.nvidia.k8s_node_taint:
    name: gpu-node-1
    taints:
      - key: gpuops.io/mig-reconfigure
        value: all-1g.5gb
        effect: NoSchedule
    cordon: true

- name: Remove our taint, whatever its value, and uncordon
  gpuops.nvidia.k8s_node_taint:
    name: gpu-node-1
    state: absent
    taints:
      - key: gpuops.io/mig-reconfigure
    cordon: false

- name: Mark a node as changing and taint it, in one write
  gpuops.nvidia.k8s_node_taint:
    name: gpu-node-1
    taints:
      - key: gpuops.io/mig-reconfigure
        value: all-1g.5gb
        effect: NoSchedule
    labels:
      nvidia.com/mig.config.state: pending

- name: Fence a node, recording whether someone else had cordoned it already
  gpuops.nvidia.k8s_node_taint:
    name: gpu-node-1
    taints:
      - key: gpuops.io/mig-reconfigure
        effect: NoSchedule
    cordon: true
    cordon_record: gpuops.io/mig-reconfigure.cordoned-before

- name: Release it, uncordoning only when the fencing above made the cordon
  gpuops.nvidia.k8s_node_taint:
    name: gpu-node-1
    state: absent
    taints:
      - key: gpuops.io/mig-reconfigure
    cordon: false
    cordon_record: gpuops.io/mig-reconfigure.cordoned-before

- name: Only uncordon
  gpuops.nvidia.k8s_node_taint:
    name: gpu-node-1
    cordon: false
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
taints:
  description: The node's taints afterwards (predicted in check mode).
  returned: success
  type: list
  elements: dict
  sample: [{"key": "gpuops.io/mig-reconfigure", "value": "all-1g.5gb", "effect": "NoSchedule"}]
unschedulable:
  description: Whether the node is cordoned afterwards (predicted in check mode).
  returned: success
  type: bool
  sample: true
previous:
  description:
    - The node's taints and cordon before the module ran.
    - With O(labels) or O(annotations), also the values the named labels and annotations had.
  returned: success
  type: dict
  contains:
    labels:
      description: The values before of the labels named in O(labels).
      type: dict
      returned: when O(labels) or O(annotations) is given
    annotations:
      description: The values before of the annotations named in O(annotations) and of O(cordon_record).
      type: dict
      returned: when O(labels), O(annotations) or O(cordon_record) is given
    taints:
      description: The taints before.
      type: list
      elements: dict
      returned: success
    unschedulable:
      description: Whether the node was cordoned before.
      type: bool
      returned: success
  sample: {"taints": [], "unschedulable": false}
labels:
  description: The values afterwards of the labels named in O(labels) (V(null) for an absent one).
  returned: success
  type: dict
  sample: {"nvidia.com/mig.config.state": "pending"}
annotations:
  description: The values afterwards of the annotations named in O(annotations).
  returned: success
  type: dict
  sample: {}
conflicts_retried:
  description: How many times the write met a concurrent change (409) and was recomputed.
  returned: success
  type: int
  sample: 0
"""

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.module import K8sModule, NODE_CHOICE, argument_spec, run
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.node import (
    TAINT_EFFECTS,
    K8sError,
    change_node,
    combine_patches,
    cordon_with_record,
    excerpt,
    key_problem,
    label_patch,
    normalize_metadata_changes,
    normalize_taints,
    previous_values,
    taint_patch,
    taint_view,
)


def main() -> None:
    module = K8sModule(
        argument_spec=argument_spec(
            per_node={
                "taints": {
                    "type": "list",
                    "elements": "dict",
                    "default": [],
                    "options": {
                        "key": {"type": "str", "required": True, "no_log": False},
                        "value": {"type": "str"},
                        "effect": {"type": "str", "choices": list(TAINT_EFFECTS)},
                    },
                },
                "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
                "cordon": {"type": "bool"},
                "labels": {"type": "dict", "default": {}},
                "annotations": {"type": "dict", "default": {}},
                "cordon_record": {"type": "str"},
            },
            timeout={"type": "int", "default": 60},
        ),
        supports_check_mode=True,
        **NODE_CHOICE,
    )

    def action(client, params):
        taints = normalize_taints(params["taints"], params["state"])
        labels = normalize_metadata_changes("labels", params["labels"], is_label=True)
        annotations = normalize_metadata_changes("annotations", params["annotations"], is_label=False)
        record = params["cordon_record"]
        if record is not None:
            problem = key_problem(record)
            if problem:
                raise K8sError("cordon_record: {0} {1}".format(excerpt(record), problem))
            if record in annotations:
                raise K8sError("cordon_record: {0} is also given in annotations; the record is written from the node as read".format(record))

        def compute(node):
            cordon, recorded = cordon_with_record(node, params["cordon"], record)
            return combine_patches(taint_patch(node, taints, params["state"], cordon),
                                   label_patch(node, labels, {**annotations, **recorded}))

        outcome = change_node(client, params["name"], compute, client.retry.deadline(params["timeout"]), module.check_mode)
        if record is not None:
            annotations = {**annotations, record: None}
        before, after = taint_view(outcome.before), taint_view(outcome.after)
        if labels or annotations:
            before.update(previous_values(outcome.before, labels, annotations))
            after.update(previous_values(outcome.after, labels, annotations))
        return {
            "changed": before != after,
            "taints": after["taints"],
            "unschedulable": after["unschedulable"],
            "labels": after.get("labels", {}),
            "annotations": after.get("annotations", {}),
            "previous": before,
            "conflicts_retried": outcome.conflicts,
            "diff": {"before": before, "after": after},
        }

    run(module, action)


if __name__ == "__main__":
    main()
