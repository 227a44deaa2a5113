# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet's unavailability budget (module_utils/k8s/budget.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s import budget
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError

from k8s_unit_helpers import make_node

STATES = ["ready", "notready", "cordoned", "tainted", "ours", "soft"]


def node(name, state):
    if state == "notready":
        return make_node(name, ready=False)
    if state == "cordoned":
        return make_node(name, unschedulable=True)
    if state == "tainted":
        return make_node(name, taints=[{"key": "site/maintenance", "effect": "NoExecute"}])
    if state == "ours":
        return make_node(name, taints=[{"key": "gpuops.io/mig-reconfigure", "effect": "NoSchedule"}])
    if state == "soft":
        return make_node(name, taints=[{"key": "site/prefer-not", "effect": "PreferNoSchedule"}])
    return make_node(name)


@pytest.mark.parametrize("value, total, count", [
    (1, 20, 1), ("3", 20, 3), ("25%", 20, 5), ("25%", 21, 6), ("1%", 20, 1), ("100%", 7, 7), (" 10 % ", 10, 1)])
def test_max_unavailable_is_a_count_or_a_share_of_the_gpu_nodes_rounded_up(value, total, count):
    assert budget.max_unavailable_count(value, total) == count


@pytest.mark.parametrize("value", [0, "0", "0%", "101%", "-1", "a", "2.5", True, None, "25%%"])
def test_a_bad_max_unavailable_is_refused_naming_it(value):
    with pytest.raises(K8sError, match="max_unavailable"):
        budget.max_unavailable_count(value, 20)


def test_nodes_already_out_count_whoever_took_them_out():
    fleet = [node("n%d" % i, state) for i, state in enumerate(STATES)]
    reasons = {name: budget.unavailable_reason(n) for name, n in ((n["metadata"]["name"], n) for n in fleet)}
    assert reasons == {"n0": None, "n1": "NotReady", "n2": "cordoned", "n3": "tainted site/maintenance",
                       "n4": "tainted gpuops.io/mig-reconfigure", "n5": None}


fleets = st.lists(st.sampled_from(STATES), min_size=1, max_size=30)


@given(fleets, st.data(), st.integers(min_value=1, max_value=30))
def test_a_batch_never_takes_the_fleet_past_the_budget(states, data, limit):
    fleet = [node("n%d" % i, state) for i, state in enumerate(states)]
    names = [n["metadata"]["name"] for n in fleet]
    batch = data.draw(st.lists(st.sampled_from(names), unique=True))
    admission = budget.admit(batch, fleet, limit)
    out_before = {name for name, state in zip(names, states) if state in ("notready", "cordoned", "tainted", "ours")}
    # Every node of the batch is either admitted or deferred, in the batch's order.
    assert [name for name in batch if name in admission.admitted] == admission.admitted
    assert sorted(admission.admitted + admission.deferred) == sorted(batch)
    # A node that is out already costs nothing and is always admitted.
    assert set(batch) & out_before <= set(admission.admitted)
    # Out of service afterwards: at most the budget, or what was out already when that is more.
    after = out_before | set(admission.admitted)
    assert len(after) <= max(limit, len(out_before))
    # Nothing is deferred while the budget has room.
    if admission.deferred:
        assert len(after) >= limit
    assert str(limit) in admission.message()
