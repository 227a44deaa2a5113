# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The driver upgrade's decision (module_utils/driver_upgrade.py and the mig_node_decision filter):
which node runs another driver than the wanted one, which is held back, and what is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.gpuops.nvidia.plugins.filter import mig as f
from ansible_collections.gpuops.nvidia.plugins.module_utils import driver_upgrade as d

TAINT = "gpuops.io/mig-reconfigure"
TARGET = {"gpu_stack": "standalone", "install": True, "branch": "570", "version": "570.86.15", "package_state": "present"}
PLAN = {"changed": False, "driver_version": "550.54.15", "expected": {"allocatable": {"nvidia.com/gpu": 2}, "labels": {}}}


def node(unschedulable=False, ready=True, taints=(), annotations=None, labels=None):
    return {"metadata": {"name": "n1", "labels": dict({"nvidia.com/gpu.deploy.device-plugin": "true"}, **(labels or {})),
                         "annotations": annotations or {}},
            "spec": {"taints": list(taints), "unschedulable": unschedulable},
            "status": {"allocatable": {"nvidia.com/gpu": "2"},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


@pytest.mark.parametrize("loaded, target, upgrade", [
    ("550.54.15", TARGET, {"from": "550.54.15", "to": "570.86.15"}),
    ("570.86.15", TARGET, None),
    ("570.10.01", dict(TARGET, version=""), None),
    # latest within the branch: the driver play asks the package manager; only another branch is planned.
    ("570.10.01", dict(TARGET, version="", package_state="latest"), None),
    ("550.54.15", dict(TARGET, version="", package_state="latest"), {"from": "550.54.15", "to": "branch 570"}),
    ("550.54.15", dict(TARGET, version=""), {"from": "550.54.15", "to": "branch 570"}),
    # No driver loaded: a first install, which the driver play does.
    ("", TARGET, None),
    ("550.54.15", dict(TARGET, install=False), None),
    ("550.54.15", dict(TARGET, gpu_stack="operator"), None),
    ("550.54.15", dict(TARGET, package_state="absent"), None),
    ("550.54.15", None, None),
])
def test_an_upgrade_is_planned_only_where_the_collection_installs_another_driver_than_the_loaded_one(loaded, target, upgrade):
    assert d.driver_upgrade(loaded, target) == upgrade


@given(major=st.integers(400, 700), minor=st.integers(0, 200), patch=st.integers(0, 99))
def test_the_wanted_version_loaded_is_never_an_upgrade_and_any_other_is(major, minor, patch):
    version = "%d.%d.%02d" % (major, minor, patch)
    target = dict(TARGET, branch=str(major), version=version)
    assert d.driver_upgrade(version, target) is None
    other = "%d.%d.%02d" % (major, minor + 1, patch)
    assert d.driver_upgrade(other, target) == {"from": other, "to": version}


def test_the_decision_of_a_node_with_another_driver_is_a_drained_reboot():
    decision = f.mig_node_decision(node(), PLAN, driver_target=TARGET, reboot_allowed=True)
    assert decision["driver_upgrade"] == {"from": "550.54.15", "to": "570.86.15"}
    assert decision["disruptive"] and decision["reboot"] and decision["driver_by_rollout"] and decision["refusal"] == ""
    converged = f.mig_node_decision(node(), dict(PLAN, driver_version="570.86.15"), driver_target=TARGET, reboot_allowed=True)
    assert converged["driver_upgrade"] is None and not converged["disruptive"] and not converged["driver_by_rollout"]


def test_an_upgrade_without_reboots_allowed_is_refused_naming_both_versions_and_the_setting():
    refusal = f.mig_node_decision(node(), PLAN, node_name="n1", driver_target=TARGET)["refusal"]
    assert "driver 550.54.15 is loaded and 570.86.15 is wanted" in refusal and "mig_allow_reboot=true" in refusal


@pytest.mark.parametrize("state, why", [
    ({"unschedulable": True}, "cordoned by someone else"),
    ({"ready": False}, "is NotReady"),
])
def test_a_node_out_of_service_beforehand_is_skipped_not_upgraded_unless_the_setting_says_so(state, why):
    decision = f.mig_node_decision(node(**state), PLAN, driver_target=TARGET, reboot_allowed=True)
    assert decision["skipped"] and not decision["disruptive"] and decision["driver_by_rollout"]
    assert why in decision["message"] and "mig_driver_upgrade_unavailable_nodes" in decision["message"]
    included = f.mig_node_decision(node(**state), PLAN, driver_target=TARGET, reboot_allowed=True, include_unavailable=True)
    assert not included["skipped"] and included["driver_upgrade"]


@pytest.mark.parametrize("state", [
    # The rollout's own taint: fenced by an earlier run, which a re-run finishes.
    {"unschedulable": True, "taints": [{"key": TAINT, "effect": "NoSchedule"}]},
    {"ready": False, "taints": [{"key": TAINT, "effect": "NoSchedule"}]},
])
def test_a_node_the_rollout_fenced_before_is_not_held_back(state):
    decision = f.mig_node_decision(node(**state), PLAN, driver_target=TARGET, reboot_allowed=True)
    assert not decision["skipped"] and decision["driver_upgrade"]


def test_a_node_labelled_skip_keeps_its_driver_and_the_driver_play_leaves_it_too():
    decision = f.mig_node_decision(node(labels={f.SKIP_LABEL: "true"}), PLAN, driver_target=TARGET, reboot_allowed=True)
    assert decision["skipped"] and decision["driver_upgrade"] is None and decision["driver_by_rollout"]


def test_only_an_upgrade_under_way_turns_failed():
    for state in d.IN_PROGRESS:
        assert d.failed_state({d.DRIVER_STATE_LABEL: state}) == {d.DRIVER_STATE_LABEL: d.UPGRADE_FAILED}
    assert d.failed_state({d.DRIVER_STATE_LABEL: d.UPGRADE_DONE}) == {}
    assert d.failed_state({}) == {}
