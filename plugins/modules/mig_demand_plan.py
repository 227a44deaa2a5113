#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mig_demand_plan
short_description: Plan MIG geometries for opted-in nodes from the MIG devices that unschedulable pods request
version_added: 0.3.0
author: gpuops maintainers (@gpuops)
description:
  - Runs on the host that reaches the Kubernetes API. Reads the pods that cannot be scheduled (phase C(Pending), no
    node, condition C(PodScheduled) V(False) with reason C(Unschedulable), not owned by a DaemonSet) and request
    C(nvidia.com/mig-<profile>) or C(nvidia.com/gpu) resources, and the nodes opted in to demand partitioning.
  - A node is opted in by the label C(gpuops.io/mig-demand=true), or by nos's C(nos.nebuly.ai/gpu-partitioning=mig)
    (also spelled C(nos.nebuly.com/gpu-partitioning=mig)) for clusters moving from nos. Nodes without such a label are
    never planned.
  - Plans, for each opted-in node whose GPUs are given in O(node_facts), a new MIG geometry for GPUs whose devices are
    free, so that the pending pods fit. A device that a pod holds is never destroyed, and the MIG mode never changes.
    See the collection's docs/demand-partitioning.md for the rules.
  - Returns a C(mig_configs) map in the mig-parted format with one named config per node that changes, and the name
    each such node must run (RV(assignments)), ready for the rolling reconfigure (C(mig_configs) and
    C(mig_config_name)). The playbook C(gpuops.nvidia.mig_demand) does all of this.
  - Read-only (C(changed) is always V(false)); RV(needs_change) says whether any node would change.
options:
  node_facts:
    description:
      - Per opted-in node (by its Kubernetes name), what it reported about its GPUs.
      - C(gpus) is the result of M(gpuops.nvidia.gpu_info) (or its C(gpus) list); C(pod_devices) the result of
        M(gpuops.nvidia.gpu_pod_devices), which says which MIG devices pods hold.
      - An opted-in node without an entry is reported in RV(skipped_nodes) and not planned. A node whose pod to
        device map is unavailable counts every MIG device as held while any pod with C(nvidia.com/*) resources is bound
        to it.
    type: dict
    default: {}
  allowed_geometries:
    description:
      - Optional allow-lists of whole-GPU geometries, in the spirit of nos's C(knownMigGeometries), as a mig-parted v1
        document (C(version), C(mig-configs)). Every enabled entry of every named config is one allowed geometry for
        the GPUs its C(device-filter) matches (entries without a filter match every GPU).
      - A changed GPU whose model an entry matches takes the first allowed geometry, named configs in name order and
        entries in file order, that holds what must stay and what the pods need. A GPU no entry matches is bound by
        its NVML profiles and placements only.
    type: dict
  fill:
    description:
      - What the rest of a changed GPU becomes once the pods' devices are placed. V(smallest) keeps the free instances
        that still fit and adds as many instances of the GPU's smallest plain profile as fit (for example V(1g.5gb)
        on an A100 40GB); V(none) leaves the rest empty.
      - Ignored for GPUs bound by O(allowed_geometries), which take a whole allowed geometry.
    type: str
    choices: [smallest, none]
    default: smallest
extends_documentation_fragment:
  - gpuops.nvidia.k8s_auth_options
  - gpuops.nvidia.k8s_auth_options.ACTION_GROUP
  - gpuops.nvidia.attributes.INFO_MODULE
seealso:
  - module: gpuops.nvidia.gpu_info
  - module: gpuops.nvidia.gpu_pod_devices
  - module: gpuops.nvidia.mig_config
"""

EXAMPLES = r"""
---
- name: Plan from demand on the API host, from what the opted-in nodes reported
  gpuops.nvidia.mig_demand_plan:
    node_facts: >-
      {{ dict(groups['mig_demand_nodes'] | map('extract', hostvars, 'k8s_node_name')
              | zip(groups['mig_demand_nodes'] | map('extract', hostvars, 'mig_demand_facts'))) }}
  register: demand

- name: Only the geometries nos allows on an A100 40GB
  gpuops.nvidia.mig_demand_plan:
    node_facts: "{{ facts }}"
    allowed_geometries:
      version: v1
      mig-configs:
        a100-40gb:
          - {device-filter: "0x20B010DE", devices: all, mig-enabled: true, mig-devices: {"1g.5gb": 7}}
          - {device-filter: "0x20B010DE", devices: all, mig-enabled: true, mig-devices: {"2g.10gb": 2, "3g.20gb": 1}}
          - {device-filter: "0x20B010DE", devices: all, mig-enabled: true, mig-devices: {"3g.20gb": 2}}
"""

RETURN = r"""
needs_change:
  description: Whether any node would change.
  returned: always
  type: bool
  sample: true
mig_configs:
  description: The named configs (the C(mig-configs) map of a mig-parted v1 file), one per node that changes, named
    C(demand-<digest of its content>). Each names every GPU of its node; unchanged GPUs keep their layout.
  returned: always
  type: dict
  sample: {"demand-3f2a9c1b7d0e": [{"devices": [0], "mig-enabled": true, "mig-devices": {"1g.5gb": 7}},
                                   {"devices": [1], "mig-enabled": true, "mig-devices": {"1g.5gb": 4, "3g.20gb": 1}}]}
document:
  description: RV(mig_configs) as a whole mig-parted v1 document.
  returned: always
  type: dict
assignments:
  description: The named config each node that changes must run.
  returned: always
  type: dict
  sample: {"gpu-node-1": "demand-3f2a9c1b7d0e"}
nodes:
  description: Per node that changes, its config and per changed GPU the layout C(before) and C(after), what is
    created and destroyed (free devices only), the devices C(kept_in_use), and the C(pods) the change is for.
  returned: always
  type: dict
served:
  description: The pending pods the plan finds devices for, with the node and the devices per GPU index;
    C(new_devices) is false for a pod that fits on free devices that exist already.
  returned: always
  type: list
  elements: dict
  sample: [{"pod": "ml/train-0", "node": "gpu-node-1", "new_devices": true, "devices": {"1": {"3g.20gb": 1}}}]
unsatisfied:
  description: The pending pods the plan cannot serve, each with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{"pod": "ml/big", "requests": {"nvidia.com/mig-7g.80gb": 2}, "reason": "not enough free room: ..."}]
skipped_nodes:
  description: Opted-in nodes that are not planned, each with the reason.
  returned: always
  type: list
  elements: dict
pending_pods:
  description: The unschedulable pods read, as C(namespace/name), sorted.
  returned: always
  type: list
  elements: str
opted_in_nodes:
  description: The opted-in nodes, sorted.
  returned: always
  type: list
  elements: str
"""

from typing import Any, Dict, List, Mapping

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import AUTH_ARG_SPEC, K8sError, create_client
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.evict import gpu_resources
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.module import K8sModule
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.demand import DemandError, opted_in, plan_demand
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import SpecError, parse_spec


def _requests(pod: Mapping[str, Any]) -> Dict[str, int]:
    """The pod's nvidia.com/* requests (limits, else requests), summed over its containers."""
    total: Dict[str, int] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        asked = dict(resources.get("requests") or {})
        asked.update(resources.get("limits") or {})
        for name, quantity in asked.items():
            if name.startswith("nvidia.com/"):
                try:
                    total[name] = total.get(name, 0) + int(str(quantity))
                except ValueError:
                    continue
    return total


def unschedulable(pod: Mapping[str, Any]) -> bool:
    """Pending, unbound, marked Unschedulable by the scheduler, and not a DaemonSet's pod (as nos reads them)."""
    status = pod.get("status") or {}
    if status.get("phase") != "Pending" or (pod.get("spec") or {}).get("nodeName"):
        return False
    if any(owner.get("kind") == "DaemonSet" for owner in (pod.get("metadata") or {}).get("ownerReferences") or []):
        return False
    return any(c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
               for c in status.get("conditions") or [])


def pending_pods(items: List[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    pods = []
    for pod in items:
        requests = _requests(pod)
        if not requests or not unschedulable(pod):
            continue
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        pods.append({"namespace": meta.get("namespace") or "default", "name": meta.get("name"), "requests": requests,
                     "priority": int(spec.get("priority") or 0), "node_selector": spec.get("nodeSelector") or {}})
    return sorted(pods, key=lambda p: (p["namespace"], p["name"]))


def _gpus(value: Any) -> Any:
    return value.get("gpus") if isinstance(value, Mapping) else value


def node_inputs(client: Any, nodes: List[Mapping[str, Any]], facts: Mapping[str, Any]) -> tuple:
    """The planner's nodes from the opted-in nodes and what they reported, and those left out."""
    inputs, skipped = [], []
    for node in nodes:
        name = node["metadata"]["name"]
        reported = facts.get(name)
        if not isinstance(reported, Mapping) or _gpus(reported.get("gpus")) is None:
            skipped.append({"node": name, "reason": "no GPU facts were given for it (node_facts)"})
            continue
        pod_devices = reported.get("pod_devices") or {}
        if pod_devices.get("available"):
            allocated: Any = sorted({device for pod in pod_devices.get("pods") or [] for device in pod.get("devices") or []})
        else:
            bound = client.list_pods(field_selector="spec.nodeName=" + name).get("items") or []
            holding = [p for p in bound if gpu_resources(p) and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
            allocated = None if holding else []
        inputs.append({"name": name, "labels": (node.get("metadata") or {}).get("labels") or {},
                       "gpus": _gpus(reported["gpus"]), "allocated": allocated})
    return inputs, skipped


def main() -> None:
    argument_spec = dict(AUTH_ARG_SPEC)
    argument_spec.update(
        node_facts={"type": "dict", "default": {}},
        allowed_geometries={"type": "dict"},
        fill={"type": "str", "default": "smallest", "choices": ["smallest", "none"]},
    )
    module = K8sModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    try:
        allowed = parse_spec(params["allowed_geometries"], "allowed_geometries") if params["allowed_geometries"] else None
    except SpecError as exc:
        module.fail_json(msg="allowed_geometries: %s" % exc)
    try:
        client = create_client(params)
        nodes = [n for n in client.list_nodes().get("items") or [] if opted_in((n.get("metadata") or {}).get("labels"))]
        nodes.sort(key=lambda n: n["metadata"]["name"])
        pods = pending_pods(client.list_pods(field_selector="status.phase=Pending").get("items") or [])
        inputs, skipped = node_inputs(client, nodes, params["node_facts"])
    except K8sError as exc:
        module.fail_json(msg=exc.msg)
    try:
        result = plan_demand(pods, inputs, allowed=allowed, fill=params["fill"])
    except DemandError as exc:
        module.fail_json(msg=str(exc))
    result["needs_change"] = result["changed"]
    result["changed"] = False
    result["skipped_nodes"] = sorted(skipped + result["skipped_nodes"], key=lambda s: s["node"])
    result["pending_pods"] = ["%s/%s" % (p["namespace"], p["name"]) for p in pods]
    result["opted_in_nodes"] = [n["metadata"]["name"] for n in nodes]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
