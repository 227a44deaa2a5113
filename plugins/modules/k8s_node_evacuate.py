#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_node_evacuate
short_description: Evict pods from a Kubernetes node through the Eviction API, honouring PodDisruptionBudgets
version_added: 0.1.0
author: gpuops maintainers (@gpuops)
description:
  - Evicts the pods of a node selected by O(scope) with one C(policy/v1) Eviction per pod, each carrying the pod's uid
    as a precondition, then waits until every evicted pod is gone from the node (watching the node's pods, with a
    polling fallback). A pod re-created under the same name is another pod and is not waited for.
  - DaemonSet pods and mirror (static) pods are never evicted. Pods that already ended (C(Succeeded), C(Failed)) are
    evicted like the others, as C(kubectl drain) does.
  - An eviction refused by a PodDisruptionBudget (HTTP 429) is retried with backoff until O(timeout). Then the module
    fails, naming each blocked pod and the budgets that blocked it, and leaves the node as it is. Only with O(force)
    (and a O(force_reason)) are the still-blocked pods deleted after O(timeout).
  - Like C(kubectl drain), it refuses by default to evict a pod that no controller re-creates (a bare pod) and a pod
    with an C(emptyDir) volume, whose data goes with it; O(delete_bare_pods) and O(delete_emptydir_data) allow them.
    Pods that already ended are no loss and are never refused. Before the first eviction, the PodDisruptionBudgets of
    the selected pods are read, and while a budget with healthy pods among them allows no disruption at all
    (C(status.disruptionsAllowed) 0), the budgets are read again until it allows one or O(timeout) passes; then the
    module fails having evicted nothing, rather than leave the node half drained. A budget that allows one disruption
    lets the evictions start; its further pods go as their replacements become ready, as with C(kubectl drain). A
    refusal lists every pod and budget at fault in one message.
  - This module never cordons or taints the node. Fence the node first with M(gpuops.nvidia.k8s_node_taint)
    (O(gpuops.nvidia.k8s_node_taint#module:cordon=true) and a C(NoSchedule) taint), or evicted pods may be scheduled
    back onto it; the module warns when the node is not fenced.
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
      - Nodes are evacuated in parallel; O(timeout) and O(wait_timeout) apply to each node.
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
      scope:
        description:
          - As O(scope), for this node.
        type: str
        choices: [all, gpu, devices]
      device_uuids:
        description:
          - As O(device_uuids), for this node.
        type: list
        elements: str
      device_parents:
        description:
          - As O(device_parents), for this node.
        type: dict
      pod_devices:
        description:
          - As O(pod_devices), for this node.
        type: raw
  scope:
    description:
      - Which pods to evict.
      - V(all) every pod of the node (except DaemonSet and mirror pods).
      - V(gpu) pods whose containers or init containers request or limit any C(nvidia.com/*) resource.
      - V(devices) pods bound to one of O(device_uuids), as the node's kubelet says in O(pod_devices). A pod that
        requests C(nvidia.com/*) resources but that O(pod_devices) does not list (it started after the map was read) is
        evicted too, as it may hold those devices; so is every such pod when the map is unavailable or not given (the
        result's RV(device_map) and each pod's reason say so).
    type: str
    choices: [all, gpu, devices]
    default: gpu
  device_uuids:
    description:
      - GPU or MIG device UUIDs whose pods to evict, with O(scope=devices).
    type: list
    elements: str
    default: []
  device_parents:
    description:
      - Map of MIG device UUID to its parent GPU UUID. With it, a GPU UUID in O(device_uuids) also selects the pods bound to
        MIG devices of that GPU.
    type: dict
    default: {}
  pod_devices:
    description:
      - Which GPU and MIG devices each pod of the node holds, with O(scope=devices), as the kubelet's PodResources API
        tells M(gpuops.nvidia.gpu_pod_devices) on the node. Give that module's registered result as it is, or its
        C(pods) list (each entry a C(namespace), a C(name), the C(devices) and C(gpus) UUIDs it holds, and optionally
        C(parents), its MIG devices' GPUs).
      - A result with C(available=false) is taken at its word. The pods' devices are unknown then, so every pod that
        requests C(nvidia.com/*) resources is evicted, each with that reason; so it is when O(pod_devices) is not given.
      - Only with O(scope=devices).
    type: raw
  pod_selectors:
    description:
      - Label selectors (joined with commas) that further restrict the pods considered, for example V(app!=critical).
    type: list
    elements: str
    default: []
    aliases: [label_selectors]
  grace_period:
    description:
      - Termination grace period in seconds for the evicted pods. Not given uses each pod's own.
    type: int
  timeout:
    description:
      - Seconds to keep retrying evictions refused by a PodDisruptionBudget or failing transiently.
    type: int
    default: 300
  wait_timeout:
    description:
      - Seconds to wait, once every eviction was accepted, until the evicted pods are gone from the node.
    type: int
    default: 300
  poll_interval:
    description:
      - Seconds between two reads of the node's pods when no watch can be kept open.
    type: float
    default: 2.0
  force:
    description:
      - Delete the pods that could not be evicted within O(timeout). This bypasses their PodDisruptionBudgets.
      - Needs O(force_reason).
    type: bool
    default: false
  force_reason:
    description:
      - Why forcing is acceptable. Required with O(force=true); shown in the warning the module emits.
    type: str
  delete_bare_pods:
    description:
      - Evict pods that no controller manages (no C(ownerReferences) entry with C(controller=true)). Such a pod is gone
        for good once evicted. C(kubectl drain) asks for C(--force) for them.
      - By default the module fails, evicting nothing, when a selected pod is one.
    type: bool
    default: false
  delete_emptydir_data:
    description:
      - Evict pods with C(emptyDir) volumes, whose data is deleted with the pod (C(kubectl drain --delete-emptydir-data)).
      - By default the module fails, evicting nothing, when a selected pod has one.
    type: bool
    default: false
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
- name: Fence the node first
  gpuops.nvidia.k8s_node_taint:
    name: gpu-node-1
    taints:
      - key: gpuops.io/mig-reconfigure
        value: all-1g.5gb
        effect: NoSchedule
    cordon: true

- name: Evict every pod that uses a GPU, honouring PodDisruptionBudgets for up to 10 minutes
  gpuops.nvidia.k8s_node_evacuate:
    name: gpu-node-1
    scope: gpu
    timeout: 600

- name: Read on the node which pods hold which devices
  gpuops.nvidia.gpu_pod_devices:
  become: true
  delegate_to: gpu-node-1
  register: node_pod_devices

- name: Evict only the pods bound to two MIG devices
  gpuops.nvidia.k8s_node_evacuate:
    name: gpu-node-1
    scope: devices
    device_uuids:
      - MIG-8f6e1b5a-0c1d-5e2f-9a3b-4c5d6e7f8a9b
      - MIG-1a2b3c4d-5e6f-5a7b-8c9d-0e1f2a3b4c5d
    pod_devices: "{{ node_pod_devices }}"

- name: Drain-like evacuation of everything but the database pods
  gpuops.nvidia.k8s_node_evacuate:
    name: gpu-node-1
    scope: all
    pod_selectors:
      - app!=db
    grace_period: 30
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
evicted:
  description:
    - Pods whose eviction was accepted (or that left the node meanwhile), with why they were selected.
    - In check mode, the pods that would be evicted.
  returned: always
  type: list
  elements: dict
  sample: [{"namespace": "ml", "name": "train-0", "uid": "0b5c2d9e-1f3a-4b6c-8d7e-9f0a1b2c3d4e", "reason": "requests nvidia.com/gpu"}]
forced:
  description: Pods deleted with O(force) after O(timeout).
  returned: always
  type: list
  elements: dict
  sample: []
skipped:
  description: Pods left alone, with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{"namespace": "gpu-operator", "name": "nvidia-device-plugin-x7k2p", "uid": "5d1e7a2b-3c4d-4e5f-a6b7-c8d9e0f1a2b3", "reason": "DaemonSet pod"}]
blocked:
  description: Pods whose eviction a PodDisruptionBudget still refused at the end, with the budgets' names and the API's message.
  returned: always
  type: list
  elements: dict
  sample:
    - namespace: ml
      name: serve-0
      uid: 77aa1b2c-3d4e-4f5a-b6c7-d8e9f0a1b2c3
      pdbs: [serve]
      message: Cannot evict pod as it would violate the pod's disruption budget.
refused:
  description:
    - Selected pods refused by the drain safety rules, each with its C(problems); nothing was evicted.
  returned: always
  type: list
  elements: dict
  sample:
    - namespace: ml
      name: scratch
      uid: 1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f
      problems: ["bare pod: no controller re-creates it (delete_bare_pods allows it)"]
pdb_shortfalls:
  description:
    - PodDisruptionBudgets that could not cover the node's selected pods before the first eviction; nothing was evicted.
  returned: always
  type: list
  elements: dict
  sample: [{"namespace": "ml", "name": "serve", "disruptions_allowed": 0, "pods": ["ml/serve-0"]}]
remaining:
  description: Selected pods still on the node at the end (empty on success).
  returned: always
  type: list
  elements: dict
  sample: []
device_map:
  description:
    - With O(scope=devices), whether the pod -> device map was available, and if not, why. When it was not, every pod
      that requests C(nvidia.com/*) resources was selected.
  returned: when O(scope=devices)
  type: dict
  sample: {"available": false, "reason": "the kubelet's PodResources socket /var/lib/kubelet/pod-resources/kubelet.sock does not exist"}
node:
  description: The node's name.
  returned: always
  type: str
  sample: gpu-node-1
scope:
  description: The scope used.
  returned: always
  type: str
  sample: gpu
"""

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.evict import (
    SCOPES,
    EvacuationRequest,
    evacuate,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.module import K8sModule, NODE_CHOICE, argument_spec, run


def main() -> None:
    module = K8sModule(
        argument_spec=argument_spec(
            per_node={
                "scope": {"type": "str", "choices": list(SCOPES), "default": "gpu"},
                "device_uuids": {"type": "list", "elements": "str", "default": []},
                "device_parents": {"type": "dict", "default": {}},
                "pod_devices": {"type": "raw"},
            },
            pod_selectors={"type": "list", "elements": "str", "default": [], "aliases": ["label_selectors"]},
            grace_period={"type": "int"},
            timeout={"type": "int", "default": 300},
            wait_timeout={"type": "int", "default": 300},
            poll_interval={"type": "float", "default": 2.0},
            force={"type": "bool", "default": False},
            force_reason={"type": "str"},
            delete_bare_pods={"type": "bool", "default": False},
            delete_emptydir_data={"type": "bool", "default": False},
        ),
        required_if=[("force", True, ["force_reason"])],
        supports_check_mode=True,
        **NODE_CHOICE,
    )

    def action(client, params):
        request = EvacuationRequest(
            node=params["name"],
            scope=params["scope"],
            device_uuids=params["device_uuids"],
            pod_devices=params["pod_devices"],
            device_parents=params["device_parents"],
            pod_selectors=params["pod_selectors"],
            grace_period=params["grace_period"],
            timeout=params["timeout"],
            wait_timeout=params["wait_timeout"],
            poll_interval=params["poll_interval"],
            force=params["force"],
            force_reason=params["force_reason"],
            delete_bare_pods=params["delete_bare_pods"],
            delete_emptydir_data=params["delete_emptydir_data"],
        )
        return evacuate(client, request, module.check_mode)

    run(module, action)


if __name__ == "__main__":
    main()
