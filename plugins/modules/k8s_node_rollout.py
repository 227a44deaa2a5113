#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_node_rollout
short_description: Fence, release or fail the nodes of a rolling GPU change batch, step by step
version_added: 0.3.0
author: gpuops maintainers (@gpuops)
description:
  - The Kubernetes side of the rolling change of a batch of GPU nodes (the P(gpuops.nvidia.mig_reconfigure#role) role),
    one run per batch and phase, on the host that reaches the API.
  - O(phase=fence) takes each node through begin (label C(nvidia.com/mig.config.state=pending), the taint
    O(taint_key) and, with O(cordon), a cordon recorded in the annotation C(gpuops.io/mig-reconfigure.cordoned-before),
    in one write), evacuate (through the Eviction API, honouring PodDisruptionBudgets, the pods that must move, as
    M(gpuops.nvidia.k8s_node_evacuate) does), after, with O(wait_for_jobs_selector), waiting for the jobs on the node to
    end on their own, and pause (every GPU client whose C(nvidia.com/gpu.deploy.<client>)
    label is V(true) is set to V(paused-for-mig-change), then the module waits until their pods have left).
  - O(phase=release) takes each node through resume (every paused client back to V(true), the O(gpu_clients_enable)
    clients switched on where the node has no label for them, and the device plugin's config label set, in one write),
    wait (until the node is Ready and advertises the allocatable resources and labels of its plan, one watch for the
    batch), with O(validation), validate (a pod on the node that asks for one of each C(nvidia.com/*) resource it
    advertises must succeed) and finish (state V(success), the taint removed, and the node uncordoned only when its record says the
    rollout cordoned it, in one write).
  - O(phase=fail) marks each node V(failed) with its O(nodes[].reason) in the annotation
    C(gpuops.io/mig-reconfigure.message), and resumes the clients the rollout paused, in one write. The taint and the
    cordon stay.
  - A node whose O(nodes[].decision) carries C(driver_upgrade) also gets the driver upgrade's state label
    C(gpuops.io/driver-upgrade.state) in the same writes, V(draining) at begin, V(upgrade-done) at finish, and
    V(upgrade-failed) from O(phase=fail) when an upgrade was under way (docs/rolling-reconfigure.md).
  - A node that fails a step stops there; the other nodes of the batch go on. Each node's result says at which step
    and why (RV(nodes)); the run fails at the end naming the nodes that failed, so that a playbook can fail exactly
    their hosts (the task's C(failed_when) set to V(false), then a check per host on RV(nodes)).
  - In check mode nothing is written and nothing is waited for. Each step reports what it would do assuming the steps
    before it succeeded (the writes in RV(nodes) diffs, the pods in C(would_evict), never in C(evicted)), and a node
    fails only where the real run would fail (a pod that no controller re-creates, or with an C(emptyDir), that is not
    allowed to go, or a PodDisruptionBudget that allows no disruption now).
options:
  phase:
    description:
      - Which part of the change the nodes go through.
    type: str
    required: true
    choices: [fence, release, fail]
  name:
    description:
      - A single node, with the options the task sets. Exactly one of O(name) and O(nodes) is required.
    type: str
  nodes:
    description:
      - The nodes of the batch, each with its own plan and decision; an option a node does not set is the task's.
      - The nodes are worked on in parallel.
    type: list
    elements: dict
    suboptions:
      name:
        description: The node's name in Kubernetes.
        type: str
        required: true
      plan:
        description: As O(plan), for this node.
        type: dict
      decision:
        description: As O(decision), for this node.
        type: dict
      pod_devices:
        description: As O(pod_devices), for this node.
        type: raw
      config_name:
        description: As O(config_name), for this node.
        type: str
      plugin_config:
        description: As O(plugin_config), for this node.
        type: str
      reason:
        description: As O(reason), for this node.
        type: str
  plan:
    description:
      - The node's plan, as M(gpuops.nvidia.mig_config)'s C(node_plan) option (or the filter
        P(gpuops.nvidia.mig_node_plan#filter)) returns it.
      - C(changing_devices) (the UUIDs of the GPUs whose MIG mode changes and of the MIG devices the plan destroys)
        selects the pods to evict; C(expected.allocatable) and C(expected.labels) are what the release waits for.
    type: dict
    default: {}
  decision:
    description:
      - The node's decision, as the filter P(gpuops.nvidia.mig_node_decision#filter) returns it.
      - C(reboot) (the node is rebooted for sure, so every pod moves at fencing), C(layout_changes) and
        C(advertised_current) choose the evacuation scope with O(evacuate_scope).
    type: dict
    default: {}
  pod_devices:
    description:
      - Which pod holds which GPU and MIG device on the node, M(gpuops.nvidia.gpu_pod_devices)' result, for the
        V(changed) scope. Without it every GPU pod of the node is a target, and the result says why.
    type: raw
  config_name:
    description:
      - The MIG config the node is changed to, written to the label C(nvidia.com/mig.config) and as the taint's value.
    type: str
  plugin_config:
    description:
      - The device plugin config (a key of its ConfigMap) the node must run, written to O(plugin_config_label) when
        the clients resume. Not given, the label is left alone.
    type: str
  reason:
    description:
      - Why the node failed, for O(phase=fail).
    type: str
  taint_key:
    description: Key of the taint that keeps new pods off the node during the change; its value is O(config_name).
    type: str
    default: gpuops.io/mig-reconfigure
  taint_effect:
    description: Effect of that taint.
    type: str
    choices: [NoSchedule, PreferNoSchedule, NoExecute]
    default: NoSchedule
  cordon:
    description:
      - Also cordon the node while it is fenced. Whether it was cordoned before is recorded on the node
        (C(gpuops.io/mig-reconfigure.cordoned-before)), unless a record is there already from an interrupted run,
        and the release uncordons only a node that record says the rollout cordoned.
    type: bool
    default: false
  evacuate_scope:
    description:
      - Which pods move when the node is fenced. V(changed) the pods on C(changing_devices) (every GPU pod when only
        the advertised resources change), V(gpu) every pod that requests an C(nvidia.com/*) resource, V(all) every
        pod but DaemonSet and mirror pods. A node whose decision says C(reboot) loses every pod (V(all)).
    type: str
    choices: [changed, gpu, all]
    default: changed
  reboot_allowed:
    description:
      - Whether the change may reboot the node. In check mode a node whose plan changes a GPU's MIG mode then also
        reports, as C(would_evict_before_reboot), the pods the drain before that reboot would evict, should the GPU
        not reset.
    type: bool
    default: false
  gpu_clients:
    description: The GPU clients paused through their C(nvidia.com/gpu.deploy.<client>) labels.
    type: list
    elements: str
    default: [device-plugin, gpu-feature-discovery, dcgm-exporter, dcgm, nvsm, client]
  gpu_clients_enable:
    description: Clients switched on at release where the node has no label for them yet (a first install).
    type: list
    elements: str
    default: [device-plugin, gpu-feature-discovery]
  plugin_config_label:
    description: The node label the device plugin reads its config name from.
    type: str
    default: nvidia.com/device-plugin.config
  delete_bare_pods:
    description: Allow evicting pods that no controller re-creates; otherwise such a pod fails its node, nothing evicted.
    type: bool
    default: false
  delete_emptydir_data:
    description: Allow evicting pods with C(emptyDir) volumes; otherwise such a pod fails its node, nothing evicted.
    type: bool
    default: false
  grace_period:
    description: Grace period of the evicted pods; not given, each pod's own.
    type: int
  evacuate_timeout:
    description: Seconds to wait for the evictions (PodDisruptionBudgets included) and for the evicted pods to go.
    type: int
    default: 600
  client_pod_timeout:
    description: Seconds to wait for the paused clients' pods to leave the node.
    type: int
    default: 300
  wait_timeout:
    description: Seconds to wait at release for the nodes to advertise their plan's resources and labels.
    type: int
    default: 600
  timeout:
    description: Seconds for each write, conflicts and API errors retried, before the node fails.
    type: int
    default: 60
  poll_interval:
    description: Seconds between two reads while a watch cannot be used.
    type: float
    default: 2.0
  max_unavailable:
    description:
      - For O(phase=fence), the most GPU nodes of O(fleet) that may be out of service at once, as a count or a
        percentage of O(fleet) (rounded up), as the GPU Operator's C(maxUnavailable). Nodes already out count, whoever
        took them out; NotReady, cordoned, or with a C(NoSchedule) or C(NoExecute) taint.
      - The batch shrinks to what the budget allows; the nodes left out are reported C(deferred), nothing done to
        them. When it allows none, the module waits for nodes to come back, up to O(unavailable_timeout), then fails
        every node of the batch saying which nodes are out. In check mode it does not wait.
      - Not given, the batch is not limited.
    type: raw
  fleet:
    description: The names of the GPU nodes O(max_unavailable) counts; required with it.
    type: list
    elements: str
    default: []
  unavailable_timeout:
    description: Seconds to wait for room in O(max_unavailable) before the batch fails.
    type: int
    default: 600
  wait_for_jobs_selector:
    description:
      - For O(phase=fence), a label selector of the pods (jobs) to wait for, after the node is tainted and before the
        eviction, as the GPU Operator's upgrade C(waitForCompletion.podSelector); for example V(app=training).
      - The fence waits until no pod it selects runs on the node (phase C(Succeeded) or C(Failed), or gone), one watch
        for the batch. In check mode it does not wait; the result lists the pods in C(would_wait_for_jobs).
      - Not given (or empty), nothing is waited for.
    type: str
  wait_for_jobs_timeout:
    description:
      - Seconds to wait for those jobs; V(0) waits for ever, as the operator's C(waitForCompletion.timeoutSeconds).
      - Past it the jobs still running are evicted with the other pods (through the Eviction API, PodDisruptionBudgets
        honoured), as the operator does; they are listed in C(jobs_left) and a warning.
    type: int
    default: 0
  validation:
    description:
      - For O(phase=release), run a validation pod on each node before it is released. After the node advertises
        its plan's resources and while it still carries the taint O(taint_key), one pod pinned to it (C(nodeName)),
        tolerating the taint, C(restartPolicy=Never), asks for one of each C(nvidia.com/*) resource the plan
        advertises and runs O(validation_command) in O(validation_image).
      - The node is released only when the pod C(Succeeded). C(Failed), or not done within O(validation_timeout),
        fails the node (it stays fenced), the message naming the pod, its reason, its exit code and its last output.
      - The pod is deleted afterwards either way; a pod of the same name left by an interrupted run is replaced.
      - In check mode no pod is created; C(would_validate) says which would run with which resources.
    type: bool
    default: false
  validation_image:
    description: The image of the validation pod; a CUDA base image, whose C(nvidia-smi) the NVIDIA container runtime provides.
    type: str
    default: nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04
  validation_command:
    description: The validation pod's command; it must exit 0 when every device it was given works.
    type: list
    elements: str
    default: [nvidia-smi, -L]
  validation_namespace:
    description: The namespace of the validation pods; the API identity needs to create and delete pods in it.
    type: str
    default: default
  validation_timeout:
    description: Seconds a validation pod may take, from its creation to its end (also its C(activeDeadlineSeconds)).
    type: int
    default: 300
extends_documentation_fragment:
  - gpuops.nvidia.k8s_auth_options
  - gpuops.nvidia.k8s_auth_options.ACTION_GROUP
  - gpuops.nvidia.attributes
seealso:
  - module: gpuops.nvidia.k8s_node_evacuate
  - module: gpuops.nvidia.k8s_node_taint
  - module: gpuops.nvidia.k8s_node_wait
  - module: gpuops.nvidia.gpu_pod_devices
"""

EXAMPLES = r"""
- name: Fence the batch's nodes, move the pods off the changing GPUs and pause the GPU clients
  gpuops.nvidia.k8s_node_rollout:
    phase: fence
    config_name: all-3g.20gb
    nodes:
      - name: gpu-node-1
        plan: "{{ hostvars['gpu-node-1'].mig_reconfigure_plan }}"
        decision: "{{ hostvars['gpu-node-1'].mig_reconfigure_decision }}"
        pod_devices: "{{ hostvars['gpu-node-1'].held }}"
  delegate_to: localhost
  run_once: true
  register: fenced
  failed_when: false

- name: Stop the host whose node fencing failed
  ansible.builtin.fail:
    msg: "{{ fenced.nodes[inventory_hostname].msg }}"
  when: fenced.nodes[inventory_hostname].failed

- name: Release the nodes once their layout is in place
  gpuops.nvidia.k8s_node_rollout:
    phase: release
    config_name: all-3g.20gb
    nodes: "{{ ansible_play_batch | map('extract', hostvars, 'rollout_entry') | list }}"
  delegate_to: localhost
  run_once: true
  register: released
  failed_when: false

- name: Mark a node failed, with its GPU clients resumed
  gpuops.nvidia.k8s_node_rollout:
    phase: fail
    name: gpu-node-1
    reason: "apply: NVML refused the GPU instance"
  delegate_to: localhost
"""

RETURN = r"""
nodes:
  description:
    - Each node's result, by name. With O(name) the node's result keys are returned at the top level instead.
  returned: with O(nodes)
  type: dict
  contains:
    changed:
      description: Whether anything was (or, in check mode, would be) written or evicted for the node.
      type: bool
    failed:
      description: Whether a step failed for the node; it then went no further.
      type: bool
    step:
      description: The step that failed, null when none did.
      type: str
    msg:
      description: The failed step and why (the step's name, a colon, the reason); empty when none failed.
      type: str
    evicted:
      description: The pods evicted, each with C(namespace), C(name), C(uid) and C(reason). Empty in check mode.
      type: list
      elements: dict
    would_evict:
      description: In check mode, the pods the fence step would evict, with why each is a target.
      type: list
      elements: dict
    would_evict_before_reboot:
      description:
        - In check mode, for a node whose plan changes a MIG mode with O(reboot_allowed), the other pods the drain
          before a reboot would evict (DaemonSet and mirror pods excepted), should the GPU not reset.
      type: list
      elements: dict
      returned: in check mode, when the node may be rebooted
    deferred:
      description: The node was left for a later run by O(max_unavailable), nothing done to it; C(msg) says why.
      type: bool
      returned: when O(max_unavailable) deferred the node
    device_map:
      description: Whether the eviction knew which pod holds which device (C(available)), and why not (C(reason)).
      type: dict
      returned: when the pods were selected by device
    paused:
      description: The GPU clients' deploy labels the fence step paused.
      type: list
      elements: str
      returned: phase fence, when the node got that far
    resumed:
      description: The GPU clients' deploy labels the release set to V(true).
      type: list
      elements: str
      returned: phase release
    blocked:
      description: The pods whose eviction a PodDisruptionBudget refused, with the budgets' names.
      type: list
      elements: dict
      returned: when the eviction failed
    refused:
      description: The pods not allowed to go (bare pods, C(emptyDir) data), each with its problems.
      type: list
      elements: dict
      returned: when the eviction failed
    pdb_shortfalls:
      description:
        - The PodDisruptionBudgets that block the eviction, allowing no disruption while covering pods to evict, each
          with C(namespace), C(name), C(disruptions_allowed) and C(pods). In check mode they are read once and reported
          (the fleet preview of the P(gpuops.nvidia.mig_rollout#callback) callback shows them as blocking); a real run
          waits for them up to O(evacuate_timeout) first.
      type: list
      elements: dict
      returned: when the eviction failed
    remaining:
      description: The pods the eviction was to move and did not, each with C(namespace), C(name) and C(reason).
      type: list
      elements: dict
      returned: when the eviction failed
    waited_for_jobs:
      description: The job pods (C(namespace/name)) the fence saw running on the node while it waited.
      type: list
      elements: str
      returned: phase fence, with O(wait_for_jobs_selector)
    would_wait_for_jobs:
      description: In check mode, the job pods the fence would wait for.
      type: list
      elements: str
      returned: phase fence in check mode, with O(wait_for_jobs_selector)
    jobs_left:
      description: The job pods still running at O(wait_for_jobs_timeout), evicted with the others.
      type: list
      elements: str
      returned: when the wait for jobs timed out
    validation:
      description:
        - The validation pod's outcome, C(pod) (C(namespace/name)), C(resources) (what it asked for), C(phase),
          C(passed) and C(msg) (why it did not pass).
      type: dict
      returned: phase release, with O(validation), when the node got that far
    would_validate:
      description: In check mode, the validation pod that would run (C(pod), C(resources)).
      type: dict
      returned: phase release in check mode, with O(validation)
  sample:
    gpu-node-1: {"changed": true, "failed": false, "step": null, "msg": "", "would_evict": [],
                 "evicted": [{"namespace": "default", "name": "train-0", "uid": "1b9e…", "reason": "uses MIG-5c0e…"}]}
    gpu-node-2: {"changed": true, "failed": true, "step": "Evict the pods that use the changing GPUs",
                 "msg": "Evict the pods that use the changing GPUs: nothing was evicted from node gpu-node-2: …",
                 "evicted": [], "would_evict": []}
failed_nodes:
  description: The names of the nodes that failed, in the order given.
  returned: with O(nodes)
  type: list
  elements: str
  sample: ["gpu-node-2"]
"""

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.module import K8sModule, NODE_CHOICE, argument_spec, run
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.node import TAINT_EFFECTS, K8sError
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.rollout import (
    PHASES,
    SCOPE_SETTINGS,
    RolloutSettings,
    run_phase,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.validation import DEFAULT_COMMAND, DEFAULT_IMAGE

DEFAULT_CLIENTS = ["device-plugin", "gpu-feature-discovery", "dcgm-exporter", "dcgm", "nvsm", "client"]


def main() -> None:
    module = K8sModule(
        argument_spec=argument_spec(
            per_node={
                "plan": {"type": "dict", "default": {}},
                "decision": {"type": "dict", "default": {}},
                "pod_devices": {"type": "raw"},
                "config_name": {"type": "str"},
                "plugin_config": {"type": "str"},
                "reason": {"type": "str"},
            },
            phase={"type": "str", "required": True, "choices": list(PHASES)},
            taint_key={"type": "str", "default": "gpuops.io/mig-reconfigure", "no_log": False},
            taint_effect={"type": "str", "choices": list(TAINT_EFFECTS), "default": "NoSchedule"},
            cordon={"type": "bool", "default": False},
            evacuate_scope={"type": "str", "choices": list(SCOPE_SETTINGS), "default": "changed"},
            reboot_allowed={"type": "bool", "default": False},
            gpu_clients={"type": "list", "elements": "str", "default": DEFAULT_CLIENTS},
            gpu_clients_enable={"type": "list", "elements": "str", "default": ["device-plugin", "gpu-feature-discovery"]},
            plugin_config_label={"type": "str", "default": "nvidia.com/device-plugin.config"},
            delete_bare_pods={"type": "bool", "default": False},
            delete_emptydir_data={"type": "bool", "default": False},
            grace_period={"type": "int"},
            evacuate_timeout={"type": "int", "default": 600},
            client_pod_timeout={"type": "int", "default": 300},
            wait_timeout={"type": "int", "default": 600},
            timeout={"type": "int", "default": 60},
            poll_interval={"type": "float", "default": 2.0},
            max_unavailable={"type": "raw"},
            fleet={"type": "list", "elements": "str", "default": []},
            unavailable_timeout={"type": "int", "default": 600},
            wait_for_jobs_selector={"type": "str"},
            wait_for_jobs_timeout={"type": "int", "default": 0},
            validation={"type": "bool", "default": False},
            validation_image={"type": "str", "default": DEFAULT_IMAGE},
            validation_command={"type": "list", "elements": "str", "default": list(DEFAULT_COMMAND)},
            validation_namespace={"type": "str", "default": "default"},
            validation_timeout={"type": "int", "default": 300},
        ),
        supports_check_mode=True,
        **NODE_CHOICE,
    )
    params = module.params

    def settings() -> RolloutSettings:
        return RolloutSettings(**{key: params[key] for key in (
            "taint_key", "taint_effect", "cordon", "evacuate_scope", "gpu_clients", "gpu_clients_enable", "plugin_config_label",
            "reboot_allowed", "delete_bare_pods", "delete_emptydir_data", "grace_period", "evacuate_timeout",
            "client_pod_timeout", "wait_timeout", "timeout", "poll_interval", "max_unavailable", "fleet", "unavailable_timeout",
            "wait_for_jobs_selector", "wait_for_jobs_timeout", "validation", "validation_image", "validation_command",
            "validation_namespace", "validation_timeout")})

    def batch_action(client, entries):
        return run_phase(client, params["phase"], entries, settings(), module.check_mode)

    def action(client, entry):
        result = batch_action(client, [entry])[entry["name"]]
        if result.get("failed"):
            raise K8sError(result["msg"], **{key: value for key, value in result.items() if key not in ("failed", "msg")})
        return result

    run(module, action, batch_action)


if __name__ == "__main__":
    main()
