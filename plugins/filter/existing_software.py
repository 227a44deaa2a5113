# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What a run does about the NVIDIA software it finds: the conflicts that refuse it and the
take-overs its settings allow (see module_utils/software_conflicts.py)."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.gpuops.nvidia.plugins.module_utils import software_conflicts as sc


def existing_software_plan(cluster: Mapping[str, Any], nodes: Iterable[Mapping[str, Any]], settings: Mapping[str, Any]) -> Dict[str, Any]:
    """``cluster``: k8s_gpu_software_info's result; ``nodes``: per GPU node ``host``, ``software``
    (gpu_node_software_info's result) and ``nvidia_driver_install``."""
    if not isinstance(cluster, Mapping) or not isinstance(settings, Mapping):
        raise AnsibleFilterError("existing_software_plan: the cluster findings and the settings must be dictionaries")
    conflicts = sc.cluster_conflicts(cluster, settings)
    mig_services = {}
    nodes = list(nodes or [])
    for node in nodes:
        host, software = node.get("host"), node.get("software") or {}
        node_settings = dict(settings, nvidia_driver_install=node.get("nvidia_driver_install", False))
        conflicts.extend(sc.node_conflicts(host, software, node_settings))
        mig_services[host] = sc.mig_services_to_take_over(software, node_settings)
    found = sc.found_lines(cluster, {node.get("host"): node.get("software") or {} for node in nodes})
    return {"conflicts": conflicts, "found": found, "mig_services": mig_services,
            "operator_mig_managers": sc.operator_mig_managers_to_disable(cluster, settings),
            "device_plugins": sc.device_plugins_to_take_over(cluster, settings)}


def existing_software_fenced_affinity(daemonset: Mapping[str, Any], deploy_label: str) -> Dict[str, Any]:
    """The affinity that keeps a DaemonSet being taken over off the nodes labelled ``deploy_label``."""
    if not isinstance(daemonset, Mapping) or not deploy_label:
        raise AnsibleFilterError("existing_software_fenced_affinity: a DaemonSet and a label key are required")
    return sc.fenced_affinity(daemonset, deploy_label)


class FilterModule:
    """Filters about the NVIDIA software already on a cluster."""

    def filters(self):
        return {"existing_software_plan": existing_software_plan,
                "existing_software_fenced_affinity": existing_software_fenced_affinity}
