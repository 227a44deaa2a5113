# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The digest of each GPU node's settings, worked out on the controller from the inventory, which a
node's record of a converged reading (gpuops.nvidia.k8s_node_converged) is compared with."""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Mapping, Optional

from ansible.errors import AnsibleFilterError

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.converged import (
    digest,
    found_converged,
    is_setting,
    node_settings,
    settings_digest,
)

#: The collection's root: its version and default configs are part of every node's desired state.
COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTION_FILES = ("MANIFEST.json", "galaxy.yml", os.path.join("files", "mig-configs", "default.yaml"))


def _file_digest(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            return digest(handle.read().decode("utf-8", "replace"))
    except OSError:
        return None


def _settings_of(variables: Mapping[str, Any]) -> Dict[str, Any]:
    """The host's settings, each worked out (templated) on its own: only those are templated."""
    values = {}
    for name in list(variables.keys()):
        if not is_setting(name):
            continue
        try:
            values[name] = variables[name]
        except Exception as exc:  # an undefined reference in one setting: its text stands for it
            values[name] = "undefined: %s" % exc
    return node_settings(values)


def node_settings_digests(hostvars: Mapping[str, Any], hosts: Iterable[str], api_host: Optional[str] = None) -> Dict[str, Dict[str, str]]:
    """For each host of ``hosts``: its node's name in Kubernetes and the digest of its settings.

    The digest covers the host's settings (see module_utils/k8s/converged.py), the content of its
    mig_config_file, the collection's version and default configs, and ``api_host``'s settings (the
    device plugin's config is worked out there).
    """
    try:
        shared = {name: _file_digest(os.path.join(COLLECTION_ROOT, name)) for name in COLLECTION_FILES}
        if api_host and api_host in hostvars:
            shared["api_host"] = digest(_settings_of(hostvars[api_host]))
        shared_digest = digest(shared)
        files: Dict[str, Optional[str]] = {}
        result = {}
        for host in hosts:
            settings = _settings_of(hostvars[host])
            config_file = settings.get("mig_config_file")
            if isinstance(config_file, str) and config_file:
                if config_file not in files:
                    files[config_file] = _file_digest(os.path.expanduser(config_file))
                settings["mig_config_file content"] = files[config_file]
            result[host] = {"name": str(settings.get("k8s_node_name") or host), "settings": settings_digest(settings, shared_digest)}
        return result
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError("node_settings_digests: %s" % exc) from exc


def converged_nodes(hostvars: Mapping[str, Any], hosts: Iterable[str], digests: Mapping[str, Mapping[str, str]],
                    pending: Optional[Iterable[str]] = None) -> List[Dict[str, Any]]:
    """The nodes of ``hosts`` that this run read through NVML and found converged, each as
    gpuops.nvidia.k8s_node_converged's ``nodes`` takes it: name, settings digest (from ``digests``,
    worked out at the start of the run) and the time of the reading.

    From each host's facts of the mig_reconfigure role: its decision (``mig_reconfigure_decision``),
    for a host of ``pending`` (the rollout's) the result of its pass (``mig_reconfigure_report``),
    and when it was read (``mig_reconfigure_started``).
    """
    pending = set(pending or [])
    nodes = []
    for host in hosts:
        if host not in digests:
            continue
        facts = hostvars[host]
        decision = facts.get("mig_reconfigure_decision")
        report = facts.get("mig_reconfigure_report")
        if not found_converged(host in pending, isinstance(decision, Mapping),
                               bool((decision or {}).get("skipped")) if isinstance(decision, Mapping) else False,
                               report.get("result") if isinstance(report, Mapping) else None):
            continue
        read_at = facts.get("mig_reconfigure_started")
        nodes.append({"name": digests[host]["name"], "settings": digests[host]["settings"],
                      "read_at": float(read_at) if read_at not in (None, "") else None})
    return nodes


class FilterModule:
    def filters(self):
        return {"node_settings_digests": node_settings_digests, "converged_nodes": converged_nodes}
