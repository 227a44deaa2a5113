#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_node_converged
short_description: Confirm converged GPU nodes from the Kubernetes API, or record a node found converged
version_added: 0.2.0
author: gpuops maintainers (@gpuops)
description:
  - A node read through NVML and found converged (its MIG layout, advertised resources and labels, boot-time record
    and driver as wanted) is recorded with O(record=true) in the annotation C(gpuops.io/converged), which holds
    the digest of the node's settings (O(nodes[].settings)), a digest of what the node's real publishers say about
    its GPUs (GPU Feature Discovery's labels, every C(nvidia.com/) label but C(nvidia.com/gfd.timestamp), such as
    C(nvidia.com/mig.*), C(nvidia.com/mig-<profile>.*), C(nvidia.com/gpu.*) and C(nvidia.com/cuda.driver.*); and
    the node's C(nvidia.com/*) allocatable) and the time of the reading.
  - The record is written only where it differs or is older than half of O(recheck_interval), so that a run that
    finds nothing new writes nothing. A node being changed (the rollout's taint O(taint_key), a
    C(nvidia.com/mig.config.state) other than C(success)) or labelled C(gpuops.io/mig-reconfigure.skip=true) is
    not recorded.
  - With O(record=false) (the default) nothing is written, and one Node list tells, for each node of O(nodes), whether
    the API confirms it converged. It is when its record holds the settings digest given now, its GFD labels and
    allocatable are those recorded, the reading is younger than O(recheck_interval), and nothing marks it as being
    changed; RV(nodes) gives the reason for every other node.
  - A layout changed by hand shows in GFD's labels within GFD's relabel interval, so it is detected by the next run
    after that. What the API does not show (files on the node, a service installed on it by hand) is detected once
    the record is older than O(recheck_interval) and the node is read again.
options:
  name:
    description:
      - Name of the node.
      - Exactly one of O(name) and O(nodes) is required.
    type: str
  nodes:
    description:
      - The nodes, each with its settings digest, worked on in one run.
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - Name of the node.
        type: str
        required: true
      settings:
        description:
          - As O(settings), for this node.
        type: str
      read_at:
        description:
          - As O(read_at), for this node.
        type: float
  settings:
    description:
      - The digest of everything the node's desired state depends on, as the
        P(gpuops.nvidia.node_settings_digests#filter) filter works it out from the inventory.
      - Required for every node, here or in O(nodes).
    type: str
  read_at:
    description:
      - With O(record=true), when the node's GPUs were read through NVML (seconds since the epoch); now when not
        given.
    type: float
  record:
    description:
      - V(true) records the nodes as found converged; V(false) only tells which nodes the API confirms converged.
    type: bool
    default: false
  recheck_interval:
    description:
      - Seconds after which a node's GPUs are read through NVML again, whatever the API says. V(0) confirms no node.
    type: int
    default: 86400
  taint_key:
    description:
      - The taint of the rollout; a node carrying it is being changed and is neither confirmed nor recorded.
    type: str
    default: gpuops.io/mig-reconfigure
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
  - module: gpuops.nvidia.k8s_node_label
  - module: gpuops.nvidia.mig_config
"""

EXAMPLES = r"""
---
- name: Tell which GPU nodes the API confirms converged
  gpuops.nvidia.k8s_node_converged:
    nodes: "{{ digests.values() | list }}"
    recheck_interval: 86400
  vars:
    digests: "{{ hostvars | gpuops.nvidia.node_settings_digests(groups['gpu_nodes']) }}"
  register: converged

- name: Record a node read through NVML and found converged
  gpuops.nvidia.k8s_node_converged:
    name: gpu-node-1
    settings: "{{ (hostvars | gpuops.nvidia.node_settings_digests(['gpu-node-1']))['gpu-node-1'].settings }}"
    record: true
"""

RETURN = r"""
nodes:
  description: Each node's result, by node name.
  returned: success
  type: dict
  contains:
    confirmed:
      description: Whether the API confirms the node converged (always V(false) with O(record=true)).
      type: bool
    reason:
      description: Why the node must be read through NVML, or why it was not recorded; empty otherwise.
      type: str
    record:
      description: With O(record=true), the record the node carries now (C(null) where it carries none).
      type: str
    changed:
      description: Whether the node's record was written.
      type: bool
  sample: {"gpu-node-1": {"changed": false, "confirmed": true, "reason": ""}}
failed_nodes:
  description: The nodes whose record could not be read or written.
  returned: success
  type: list
  elements: str
  sample: []
"""

import time

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.converged import (
    ANNOTATION,
    in_change,
    record_update,
    unconfirmed_reason,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.module import K8sModule, NODE_CHOICE, argument_spec, run
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.node import change_node, label_patch


def _settings(params):
    if not params.get("settings"):
        raise K8sError("settings: required for node {0!r} (the digest of its settings)".format(params["name"]))
    return params["settings"]


def _confirm_all(client, batch):
    """One Node list for the whole batch."""
    now = time.time()
    found = {(node.get("metadata") or {}).get("name"): node for node in client.list_nodes().get("items") or []}
    results = {}
    for params in batch:
        reason = unconfirmed_reason(found.get(params["name"]), _settings(params), now,
                                    params["recheck_interval"], params["taint_key"])
        results[params["name"]] = {"changed": False, "confirmed": not reason, "reason": reason}
    return results


def main() -> None:
    module = K8sModule(
        argument_spec=argument_spec(
            per_node={"settings": {"type": "str"}, "read_at": {"type": "float"}},
            record={"type": "bool", "default": False},
            recheck_interval={"type": "int", "default": 86400},
            taint_key={"type": "str", "default": "gpuops.io/mig-reconfigure", "no_log": False},
            timeout={"type": "int", "default": 60},
        ),
        supports_check_mode=True,
        **NODE_CHOICE,
    )
    if module.params["recheck_interval"] < 0:
        module.fail_json(msg="recheck_interval: must be 0 or more, got {0}".format(module.params["recheck_interval"]))

    def confirm_one(client, params):
        return _confirm_all(client, [params])[params["name"]]

    def record_one(client, params):
        settings = _settings(params)
        now = time.time()
        read_at = params.get("read_at") or now
        why_not = []

        def compute(node):
            why_not[:] = [in_change(node, params["taint_key"])]
            if why_not[0]:
                return None
            wanted = record_update(node, settings, read_at, now, params["recheck_interval"])
            return None if wanted is None else label_patch(node, {}, {ANNOTATION: wanted})

        outcome = change_node(client, params["name"], compute, client.retry.deadline(params["timeout"]), module.check_mode)
        before = ((outcome.before.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
        after = ((outcome.after.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
        return {
            "changed": before != after,
            "confirmed": False,
            "reason": "not recorded: {0}".format(why_not[0]) if why_not and why_not[0] else "",
            "record": after,
            "diff": {"before": {ANNOTATION: before}, "after": {ANNOTATION: after}},
        }

    if module.params["record"]:
        run(module, record_one)
    else:
        run(module, confirm_one, _confirm_all)


if __name__ == "__main__":
    main()
