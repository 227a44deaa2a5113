# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Whether GPU Feature Discovery's labels can reach the nodes: GFD publishes them through Node Feature
Discovery (a feature file its worker reads, or NodeFeature objects its master turns into labels), so
a cluster without NFD never gets them, and a rollout waiting for them would wait in vain.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional

from ansible.errors import AnsibleFilterError

# What an installed NFD leaves in the API: its CRDs (0.14 and later) and its labels on the nodes.
NFD_CRDS = ("nodefeatures.nfd.k8s-sigs.io", "nodefeaturerules.nfd.k8s-sigs.io")
NFD_LABEL_PREFIX = "feature.node.kubernetes.io/"
SETTINGS = ("none", "auto", "deploy", "rule")
INSTALLS = ("manifests", "helm")


def nfd_signals(crds: Optional[Iterable[Any]], nodes: Optional[Iterable[Mapping[str, Any]]] = None) -> List[str]:
    """What shows that the cluster runs NFD: the NFD CRDs found (names, or CustomResourceDefinition
    objects) and the nodes carrying a feature.node.kubernetes.io/ label."""
    names = set()
    for crd in crds or []:
        names.add(((crd.get("metadata") or {}).get("name") if isinstance(crd, Mapping) else str(crd)) or "")
    signals = ["CustomResourceDefinition %s" % name for name in NFD_CRDS if name in names]
    labelled = sorted(((node.get("metadata") or {}).get("name") or "") for node in nodes or []
                      if any(key.startswith(NFD_LABEL_PREFIX) for key in ((node.get("metadata") or {}).get("labels") or {})))
    if labelled:
        signals.append("%s* labels on node %s" % (NFD_LABEL_PREFIX, ", ".join(labelled[:3]) + (", ..." if len(labelled) > 3 else "")))
    return signals


def nfd_decision(setting: str, signals: Iterable[str], helm: bool = True, gfd_enabled: Any = True,
                 gpu_stack: str = "standalone", api_host: str = "the API host", install: str = "manifests") -> Dict[str, Any]:
    """What a run does about NFD for nvidia_device_plugin_nfd=``setting`` given what shows that the
    cluster has NFD (``signals``, see nfd_signals), how the run installs it (``install``: manifests,
    applied through the API, or helm) and whether ``helm`` runs on the API host.

    ``deploy``: whether NFD is installed; ``refusal``: why the run must stop before anything changes
    ('' when nothing stands in the way): a rollout that would wait for GFD labels that cannot arrive.
    """
    if setting not in SETTINGS:
        raise AnsibleFilterError("nvidia_device_plugin_nfd=%s: expected one of %s" % (setting, ", ".join(SETTINGS)))
    if install not in INSTALLS:
        raise AnsibleFilterError("nvidia_device_plugin_nfd_install=%s: expected one of %s" % (install, ", ".join(INSTALLS)))
    signals = list(signals or [])
    found = bool(signals)
    result = {"found": found, "signals": signals, "deploy": False, "refusal": ""}
    gfd = str(gfd_enabled).strip().lower() not in ("false", "no", "off", "0", "n", "f", "")
    if gpu_stack != "standalone" or not gfd:
        # The GPU Operator brings its own NFD (nfd.enabled); without GFD no label is waited for.
        return result
    absent = ("the cluster has no Node Feature Discovery (no CustomResourceDefinition %s, no node with a %s* label)"
              % (NFD_CRDS[0], NFD_LABEL_PREFIX))
    result["deploy"] = setting == "deploy" or (setting == "auto" and not found)
    if result["deploy"] and install == "helm" and not helm:
        why = ("nvidia_device_plugin_nfd=deploy installs the NFD chart with helm" if setting == "deploy"
               else "nvidia_device_plugin_nfd=auto: %s, so the run would install the NFD chart with helm" % absent)
        result["refusal"] = (
            "%s (nvidia_device_plugin_nfd_install=helm), and %s has no helm binary: GPU Feature Discovery's labels would "
            "never reach the nodes and the rollout would wait for them. Set nvidia_device_plugin_nfd_install=manifests "
            "(no helm needed), install helm on %s, or install NFD yourself." % (why, api_host, api_host))
    elif setting == "rule" and "CustomResourceDefinition %s" % NFD_CRDS[1] not in signals:
        result["refusal"] = (
            "nvidia_device_plugin_nfd=rule needs Node Feature Discovery's CustomResourceDefinition %s, which the cluster "
            "does not have: install NFD first, or set nvidia_device_plugin_nfd=auto to deploy it." % NFD_CRDS[1])
    elif setting == "none" and not found:
        result["refusal"] = (
            "nvidia_device_plugin_nfd=none: %s. GPU Feature Discovery publishes its labels through NFD, so they would "
            "never reach the nodes and the rollout would wait for them in vain, leaving each node failed. Set "
            "nvidia_device_plugin_nfd=auto (the default) to deploy NFD, install NFD yourself, or set "
            "nvidia_device_plugin_gfd_enabled=false." % absent)
    return result


class FilterModule:
    """Filters about Node Feature Discovery."""

    def filters(self):
        return {"nfd_signals": nfd_signals, "nfd_decision": nfd_decision}
