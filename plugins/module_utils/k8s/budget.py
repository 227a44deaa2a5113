# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""The fleet's unavailability budget of a rolling change (``max_unavailable``), as the GPU Operator's
upgrade controller keeps it: nodes already out (NotReady, cordoned, tainted by anyone) count, and a
batch takes only as many more nodes out as the budget has left."""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.conditions import node_ready

_PERCENT = re.compile(r"\s*(\d+)\s*%\s*\Z")
_COUNT = re.compile(r"\s*(\d+)\s*\Z")


def max_unavailable_count(value: Any, total: int) -> int:
    """``value`` (a count, or a percentage of the ``total`` GPU nodes, rounded up as the GPU
    Operator does) as a number of nodes, at least 1. A bad value is refused naming it."""
    if isinstance(value, bool):
        raise K8sError("max_unavailable: expected a count or a percentage such as 25%, got {0!r}".format(value))
    text = str(value)
    percent = _PERCENT.match(text)
    count = _COUNT.match(text)
    if percent:
        share = int(percent.group(1))
        if not 0 < share <= 100:
            raise K8sError("max_unavailable: a percentage must be from 1% to 100%, got {0!r}".format(value))
        return max(1, int(math.ceil(total * share / 100.0)))
    if count:
        number = int(count.group(1))
        if number < 1:
            raise K8sError("max_unavailable: must be 1 or more nodes, got {0!r}".format(value))
        return number
    raise K8sError("max_unavailable: expected a count or a percentage such as 25%, got {0!r}".format(value))


def unavailable_reason(node: Mapping[str, Any]) -> str | None:
    """Why a node is out of service already (NotReady, cordoned, or a NoSchedule/NoExecute taint,
    whoever set it: a node fenced by this or an earlier rollout counts too), None when it is not."""
    if node_ready(node) is not True:
        return "NotReady"
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return "cordoned"
    for taint in spec.get("taints") or []:
        if (taint or {}).get("effect") in ("NoSchedule", "NoExecute"):
            return "tainted {0}".format(taint.get("key"))
    return None


class Admission:
    """Which nodes of a batch may be taken out now, and why the others wait."""

    def __init__(self, admitted: list[str], deferred: list[str], unavailable: dict[str, str], limit: int) -> None:
        self.admitted = admitted
        self.deferred = deferred
        self.unavailable = unavailable
        self.limit = limit

    def message(self) -> str:
        out = ", ".join("{0} ({1})".format(name, reason) for name, reason in sorted(self.unavailable.items())) or "none"
        return "max_unavailable allows {0} GPU node(s) out of service and {1} are already: {2}".format(
            self.limit, len(self.unavailable), out)


def admit(batch: Iterable[str], fleet: Iterable[Mapping[str, Any]], limit: int) -> Admission:
    """The nodes of ``batch`` (in order) that may be fenced without more than ``limit`` nodes of
    ``fleet`` (the GPU nodes' objects) out of service at once.

    A node of the batch that is out already (cordoned by someone, fenced by an interrupted run)
    takes nothing more from the budget and is always admitted; the others are admitted while the
    budget lasts, and the rest deferred. A node of the batch missing from ``fleet`` counts as one
    that is not out yet.
    """
    unavailable = {}
    for node in fleet:
        name = (node.get("metadata") or {}).get("name")
        reason = unavailable_reason(node)
        if name and reason:
            unavailable[name] = reason
    out = len(unavailable)
    admitted: list[str] = []
    deferred: list[str] = []
    for name in batch:
        if name in unavailable:
            admitted.append(name)
        elif out < limit:
            admitted.append(name)
            out += 1
        else:
            deferred.append(name)
    return Admission(admitted, deferred, unavailable, limit)
