# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Node Feature Discovery: what shows it in a cluster, and what a run does about it."""

from __future__ import annotations

import itertools

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.gpuops.nvidia.plugins.filter import nfd

CRD = {"metadata": {"name": "nodefeatures.nfd.k8s-sigs.io"}}
RULE_CRD = {"metadata": {"name": "nodefeaturerules.nfd.k8s-sigs.io"}}


def node(name, **labels):
    return {"metadata": {"name": name, "labels": labels}}


def test_signals_are_the_crds_and_the_nodes_nfd_labelled():
    assert nfd.nfd_signals([], [node("a", **{"nvidia.com/gpu.present": "true"})]) == []
    assert nfd.nfd_signals([CRD, RULE_CRD, {"metadata": {"name": "other.example.com"}}]) == [
        "CustomResourceDefinition nodefeatures.nfd.k8s-sigs.io", "CustomResourceDefinition nodefeaturerules.nfd.k8s-sigs.io"]
    labelled = [node(n, **{"feature.node.kubernetes.io/pci-10de.present": "true"}) for n in "edcba"]
    assert nfd.nfd_signals(["nodefeatures.nfd.k8s-sigs.io"], labelled) == [
        "CustomResourceDefinition nodefeatures.nfd.k8s-sigs.io", "feature.node.kubernetes.io/* labels on node a, b, c, ..."]


@pytest.mark.parametrize("setting, found, helm, stack, gfd, install", list(itertools.product(
    ["none", "auto", "deploy", "rule"], [[], ["CustomResourceDefinition nodefeatures.nfd.k8s-sigs.io"],
                                         ["CustomResourceDefinition nodefeaturerules.nfd.k8s-sigs.io"]],
    [True, False], ["standalone", "operator"], [True, False, "false"], ["manifests", "helm"])))
def test_decision(setting, found, helm, stack, gfd, install):
    decision = nfd.nfd_decision(setting, found, helm=helm, gfd_enabled=gfd, gpu_stack=stack, api_host="cp01", install=install)
    assert decision["found"] is bool(found) and decision["signals"] == found
    if stack == "operator" or gfd in (False, "false"):
        # The GPU Operator brings its own NFD; without GFD no label is waited for.
        assert decision == {"found": bool(found), "signals": found, "deploy": False, "refusal": ""}
        return
    assert decision["deploy"] is (setting == "deploy" or (setting == "auto" and not found))
    if decision["deploy"] and install == "helm" and not helm:
        # Only a Helm install needs helm; the manifests go through the API.
        assert "cp01 has no helm binary" in decision["refusal"]
        assert "nvidia_device_plugin_nfd_install=manifests" in decision["refusal"]
        assert ("the cluster has no Node Feature Discovery" in decision["refusal"]) is (setting == "auto")
    elif setting == "rule":
        assert bool(decision["refusal"]) is ("CustomResourceDefinition nodefeaturerules.nfd.k8s-sigs.io" not in found)
    elif setting == "none" and not found:
        # The rollout would wait for labels that cannot arrive: refused, naming the setting and the way out.
        assert decision["refusal"].startswith("nvidia_device_plugin_nfd=none: the cluster has no Node Feature Discovery")
        assert "nvidia_device_plugin_nfd=auto" in decision["refusal"]
    else:
        assert decision["refusal"] == ""


def test_an_unknown_setting_is_an_error_naming_it():
    with pytest.raises(AnsibleFilterError, match="nvidia_device_plugin_nfd=sometimes"):
        nfd.nfd_decision("sometimes", [])


def test_an_unknown_install_is_an_error_naming_it():
    with pytest.raises(AnsibleFilterError, match="nvidia_device_plugin_nfd_install=kubectl"):
        nfd.nfd_decision("auto", [], install="kubectl")
