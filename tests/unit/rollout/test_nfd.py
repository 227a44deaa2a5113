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


@pytest.mark.parametrize("setting, found, helm, stack, gfd", list(itertools.product(
    ["none", "auto", "deploy", "rule"], [[], ["CustomResourceDefinition nodefeatures.nfd.k8s-sigs.io"],
                                         ["CustomResourceDefinition nodefeaturerules.nfd.k8s-sigs.io"]],
    [True, False], ["standalone", "operator"], [True, False, "false"])))
def test_decision(setting, found, helm, stack, gfd):
    decision = nfd.nfd_decision(setting, found, helm=helm, gfd_enabled=gfd, gpu_stack=stack, api_host="cp01")
    assert decision["found"] is bool(found) and decision["signals"] == found
    if stack == "operator" or gfd in (False, "false"):
        # The GPU Operator brings its own NFD; without GFD no label is waited for.
        assert decision == {"found": bool(found), "signals": found, "deploy": False, "refusal": "", "warning": ""}
        return
    assert decision["deploy"] is (setting == "deploy" or (setting == "auto" and not found))
    if decision["deploy"] and not helm:
        assert "cp01 has no helm binary" in decision["refusal"]
        assert ("the cluster has no Node Feature Discovery" in decision["refusal"]) is (setting == "auto")
    elif setting == "rule":
        assert bool(decision["refusal"]) is ("CustomResourceDefinition nodefeaturerules.nfd.k8s-sigs.io" not in found)
    else:
        assert decision["refusal"] == ""
    # Only `none` on a cluster without NFD is warned about: the rollout would wait for labels in vain.
    assert bool(decision["warning"]) is (setting == "none" and not found)


def test_an_unknown_setting_is_an_error_naming_it():
    with pytest.raises(AnsibleFilterError, match="nvidia_device_plugin_nfd=sometimes"):
        nfd.nfd_decision("sometimes", [])
