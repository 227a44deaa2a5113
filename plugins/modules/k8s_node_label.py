#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_node_label
short_description: Set or remove labels and annotations of a Kubernetes node
version_added: 0.1.0
author: gpuops maintainers (@gpuops)
description:
  - Sets the named labels and annotations of a node to the given values, or removes those given as V(null).
    Keys not named are never changed.
  - The write is a JSON merge patch carrying the node's C(metadata.resourceVersion) as a precondition. If another writer
    changed the node in between, the API answers 409; the node is then read again and the change recomputed, until
    O(timeout).
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
      labels:
        description:
          - As O(labels), for this node.
        type: dict
      annotations:
        description:
          - As O(annotations), for this node.
        type: dict
  labels:
    description:
      - Labels to set, as a dictionary of key and value. A V(null) value removes the label.
      - Values are strings; YAML booleans become V(true) or V(false), numbers their decimal text.
    type: dict
    default: {}
  annotations:
    description:
      - Annotations to set, as a dictionary of key and value. A V(null) value removes the annotation.
    type: dict
    default: {}
  timeout:
    description:
      - Seconds to keep retrying conflicts (409) and transient API errors before failing.
    type: int
    default: 60
  wait_for_unmatched_pods:
    description:
      - After the write, wait until no pod on the node has a C(spec.nodeSelector) that the node's labels no longer
        satisfy. Pods that have finished (C(Succeeded), C(Failed)) do not count.
      - A DaemonSet's controller removes its pod from a node whose labels stop matching the DaemonSet's node selector,
        so this is how to switch such a DaemonSet off on one node (for example a GPU client, before the node's GPUs
        change) and know that its pod has let go of the node. Not in check mode.
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds to wait with O(wait_for_unmatched_pods) before failing.
    type: int
    default: 300
extends_documentation_fragment:
  - gpuops.nvidia.k8s_auth_options
  - gpuops.nvidia.k8s_auth_options.ACTION_GROUP
  - gpuops.nvidia.attributes
seealso:
  - module: gpuops.nvidia.k8s_node_taint
  - module: gpuops.nvidia.k8s_node_wait
"""

EXAMPLES = r"""
---
- name: Switch the device plugin off on a batch of nodes and wait until its pods have left them
  gpuops.nvidia.k8s_node_label:
    nodes:
      - name: gpu-node-1
      - name: gpu-node-2
    labels:
      nvidia.com/gpu.deploy.device-plugin: paused-for-mig-change
    wait_for_unmatched_pods: true
  register: paused
  failed_when: false

- name: Fail the hosts whose node could not be paused
  ansible.builtin.fail:
    msg: "{{ paused.nodes[inventory_hostname].msg | default(paused.msg) }}"
  when: paused.nodes[inventory_hostname].failed | default(true)

- name: Pause the device plugin on a node for a MIG change
  gpuops.nvidia.k8s_node_label:
    name: gpu-node-1
    labels:
      nvidia.com/gpu.deploy.device-plugin: paused-for-mig-change
      nvidia.com/mig.config.state: pending

- name: Record why the change failed, and drop a stale label
  gpuops.nvidia.k8s_node_label:
    name: gpu-node-1
    labels:
      nvidia.com/mig.config.state: failed
      example.com/obsolete: null
    annotations:
      gpuops.io/mig-reconfigure.message: "allocatable did not reach the expected counts"
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
labels:
  description: All labels of the node afterwards (predicted in check mode).
  returned: success
  type: dict
  sample: {"kubernetes.io/hostname": "gpu-node-1", "nvidia.com/mig.config.state": "pending"}
annotations:
  description: The named annotations afterwards; V(null) for an absent one.
  returned: success
  type: dict
  sample: {"gpuops.io/mig-reconfigure.message": "allocatable did not reach the expected counts"}
previous:
  description: The values of the named labels and annotations before the module ran; V(null) for absent ones.
  returned: success
  type: dict
  contains:
    labels:
      description: Previous label values.
      type: dict
      returned: success
    annotations:
      description: Previous annotation values.
      type: dict
      returned: success
  sample: {"labels": {"nvidia.com/mig.config.state": "success"}, "annotations": {"gpuops.io/mig-reconfigure.message": null}}
conflicts_retried:
  description: How many times the write met a concurrent change (409) and was recomputed.
  returned: success
  type: int
  sample: 0
waited_for:
  description:
    - With O(wait_for_unmatched_pods), the pods (C(namespace/name)) that no longer matched after the write and that
      the module waited for; all of them are gone when the module succeeds.
  returned: success
  type: list
  elements: str
  sample: ["gpu-operator/nvidia-device-plugin-daemonset-x7k2p"]
"""

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.module import K8sModule, NODE_CHOICE, argument_spec, run
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.node import (
    change_node,
    label_patch,
    label_view,
    normalize_metadata_changes,
    previous_values,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.wait import wait_for_unmatched_pods


def main() -> None:
    module = K8sModule(
        argument_spec=argument_spec(
            per_node={
                "labels": {"type": "dict", "default": {}},
                "annotations": {"type": "dict", "default": {}},
            },
            timeout={"type": "int", "default": 60},
            wait_for_unmatched_pods={"type": "bool", "default": False},
            wait_timeout={"type": "int", "default": 300},
        ),
        supports_check_mode=True,
        **NODE_CHOICE,
    )

    def action(client, params):
        labels = normalize_metadata_changes("labels", params["labels"], is_label=True)
        annotations = normalize_metadata_changes("annotations", params["annotations"], is_label=False)
        outcome = change_node(
            client,
            params["name"],
            lambda node: label_patch(node, labels, annotations),
            client.retry.deadline(params["timeout"]),
            module.check_mode,
        )
        before = previous_values(outcome.before, labels, annotations)
        after = previous_values(outcome.after, labels, annotations)
        view_before, view_after = label_view(outcome.before), label_view(outcome.after)
        waited_for = []
        if params["wait_for_unmatched_pods"] and not module.check_mode:
            waited_for = wait_for_unmatched_pods(client, params["name"], view_after["labels"], params["wait_timeout"])
        return {
            "changed": before != after,
            "waited_for": waited_for,
            "labels": view_after["labels"],
            "annotations": after["annotations"],
            "previous": before,
            "conflicts_retried": outcome.conflicts,
            "diff": {
                "before": {"labels": view_before["labels"], "annotations": before["annotations"]},
                "after": {"labels": view_after["labels"], "annotations": after["annotations"]},
            },
        }

    run(module, action)


if __name__ == "__main__":
    main()
