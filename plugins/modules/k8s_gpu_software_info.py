#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_gpu_software_info
short_description: Find the NVIDIA software that already runs on a Kubernetes cluster
version_added: 0.1.0
author: gpuops maintainers (@gpuops)
description:
  - Lists the DaemonSets and Deployments of every namespace, the GPU Operator's ClusterPolicies and the nodes, and
    reports the NVIDIA components they run, whatever their release or object name.
  - A workload is recognised by its container images (the device plugin, GPU Feature Discovery, the MIG manager, the
    DCGM exporter and DCGM, the driver and container toolkit DaemonSets, Node Feature Discovery, the GPU Operator),
    else by the C(app) and C(app.kubernetes.io/name) labels of NVIDIA's charts.
  - Each is reported with the tool that manages it - the GPU Operator (a ClusterPolicy owns it), a helm release (its
    C(meta.helm.sh/release-name) annotation or C(app.kubernetes.io/managed-by=Helm) labels) - and, for a DaemonSet, the
    nodes its pods run on.
  - Objects this collection deploys (label C(app.kubernetes.io/managed-by) starting with C(gpuops.nvidia.)) are left out.
  - A cluster without the ClusterPolicy resource (no GPU Operator CRD) has no ClusterPolicies; an object of an
    unexpected shape is read as far as it goes, never failing the module.
options: {}
extends_documentation_fragment:
  - gpuops.nvidia.k8s_auth_options
  - gpuops.nvidia.k8s_auth_options.ACTION_GROUP
  - gpuops.nvidia.attributes.INFO_MODULE
seealso:
  - module: gpuops.nvidia.gpu_node_software_info
"""

EXAMPLES = r"""
---
- name: Find the NVIDIA software on the cluster
  gpuops.nvidia.k8s_gpu_software_info:
    kubeconfig: ~/.kube/config
  register: found

- name: Show the device plugins that are not the collection's
  ansible.builtin.debug:
    msg: "{{ found.workloads | selectattr('component', 'equalto', 'device-plugin') | list }}"
"""

RETURN = r"""
workloads:
  description:
    - One entry per NVIDIA component a DaemonSet or Deployment runs.
  returned: success
  type: list
  elements: dict
  contains:
    kind:
      description: C(DaemonSet) or C(Deployment).
      type: str
    namespace:
      description: Namespace of the workload.
      type: str
    name:
      description: Name of the workload.
      type: str
    component:
      description:
        - C(device-plugin), C(gpu-feature-discovery), C(mig-manager), C(dcgm-exporter), C(dcgm), C(driver),
          C(container-toolkit), C(node-feature-discovery) or C(gpu-operator).
      type: str
    version:
      description: The image tag (empty when the image has none).
      type: str
    manager:
      description:
        - C(type) (C(gpu-operator), C(helm), the C(app.kubernetes.io/managed-by) value, or C(unknown)) and C(name)
          (ClusterPolicy or release name); C(namespace) for a helm release.
      type: dict
    node_selector:
      description: The pod template's node selector.
      type: dict
    nodes:
      description: For a DaemonSet, the nodes its pods run on.
      type: list
      elements: str
    settings:
      description:
        - For a device plugin DaemonSet, what it advertises with, where its config file (the ConfigMap of its pods'
          volumes, the key C(DEFAULT_CONFIG) names) or its C(MIG_STRATEGY) environment says it.
        - C(mig_strategy), and C(time_slicing_replicas) (V(1) without sharing) when read from a config file.
      type: dict
      returned: for a device plugin DaemonSet
  sample:
    - kind: DaemonSet
      namespace: kube-system
      name: nvdp-nvidia-device-plugin
      component: device-plugin
      version: v0.17.0
      manager: {type: helm, name: nvdp, namespace: kube-system}
      node_selector: {}
      nodes: [gpu-node-1]
      settings: {mig_strategy: single, time_slicing_replicas: 1}
cluster_policies:
  description:
    - One entry per ClusterPolicy, with the components the GPU Operator manages through it (C(manages)), its MIG
      strategy and state, and the operator's version (its Deployment's image tag).
  returned: success
  type: list
  elements: dict
  sample:
    - kind: ClusterPolicy
      namespace: ""
      name: cluster-policy
      component: gpu-operator
      version: v25.3.0
      manager: {type: helm, name: gpu-operator, namespace: gpu-operator}
      manages: [driver, container-toolkit, device-plugin, gpu-feature-discovery, mig-manager, dcgm-exporter]
      mig_strategy: single
      state: ready
nodes:
  description:
    - The nodes whose C(nvidia.com/mig.config) label the GPU Operator or its MIG manager writes (a field manager of the
      label, or the node labelled C(nvidia.com/gpu.deploy.mig-manager=true)).
  returned: success
  type: list
  elements: dict
  sample:
    - node: gpu-node-1
      mig_config: all-1g.5gb
      managers: [gpu-operator]
"""

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import (
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    K8sError,
    create_client,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.gpu_software import read_cluster
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.module import K8sModule, argument_spec


def main() -> None:
    spec = argument_spec()
    del spec["name"], spec["nodes"]
    module = K8sModule(argument_spec=spec, supports_check_mode=True)
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=str(KUBERNETES_IMPORT_ERROR))
    try:
        found = read_cluster(create_client(module.params))
    except K8sError as error:
        module.fail_json(msg=error.msg)
    module.exit_json(changed=False, **found)


if __name__ == "__main__":
    main()
