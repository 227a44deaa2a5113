# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection: no compatibility promise outside gpuops.nvidia.
"""One reconcile of a node's MIG layout: read → plan → reset blockers → apply.

Both entry points run it: the ``mig_config`` module (during a play) and the boot-time applier
that the ``mig`` role installs (``gpuops-mig-apply``, before the kubelet starts). Each phase is a
function of its own, so the module can return the reading and the plan (check mode, diff) between
them; the reset blockers are cleared around the resets and restored on every exit path, whichever
entry point runs.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.apply import (
    ApplyError, ApplyResult, apply_plan, command_reset_runner,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.plan import Plan, build_plan, select_entries
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.reset_blockers import ResetBlockers, module_reader

RunCommand = Callable[..., Tuple[int, str, str]]


class Reading:
    """The node as NVML reported it, and the plan made from that reading."""

    def __init__(self, node: Any, plan: Plan) -> None:
        self.node = node
        self.plan = plan

    @property
    def gpus(self) -> List[Any]:
        return self.node.gpus


class Outcome:
    """What an apply did: the result (None when it failed), the failure (None when it succeeded)
    and the reset blockers' report (None when no GPU's mode changed)."""

    def __init__(self, applied: Optional[ApplyResult], failure: Optional[ApplyError],
                 blockers: Optional[Dict[str, object]]) -> None:
        self.applied = applied
        self.failure = failure
        self.blockers = blockers

    @property
    def pending(self) -> bool:
        """A MIG mode change is still pending: a reset or a reboot is owed."""
        return bool(self.applied and (self.applied.reset_required or self.applied.reboot_required))


def read_and_plan(nvml: Any, name: str, entries: Sequence[Any], devices: Optional[Sequence[int]] = None,
                  unmatched_gpus: str = "leave", in_use: str = "fail") -> Reading:
    """Read the node through NVML and plan ``entries`` of config ``name`` against it (PlanError
    when any targeted GPU cannot take it; nothing is changed)."""
    node = nvml.read_node()
    plan = build_plan(name, list(entries), node.gpus, devices=devices, unmatched_gpus=unmatched_gpus, in_use=in_use)
    return Reading(node, plan)


def mode_changes(plan: Plan) -> bool:
    """Whether the plan changes a GPU's MIG mode, which may need a reset."""
    return any(g.set_mode is not None or g.mode_change for g in plan.gpus if g.changed)


def reset_blockers(run_command: RunCommand, plan: Plan, services: Sequence[str], kernel_modules: Sequence[str],
                   lsmod: Optional[str]) -> Optional[ResetBlockers]:
    """The reset blockers to handle for ``plan``, or None when it changes no GPU's mode."""
    if not mode_changes(plan):
        return None
    return ResetBlockers(run_command, services, kernel_modules, module_reader(run_command, lsmod))


def apply_reading(nvml: Any, reading: Reading, entries: Sequence[Any], run_command: RunCommand,
                  reset_command: Optional[List[str]], blockers: Optional[ResetBlockers], allow_pending: bool,
                  devices: Optional[Sequence[int]] = None) -> Outcome:
    """Apply the plan of ``reading``: resets (when ``reset_command`` is given) run with the blockers
    cleared, and the services stopped for them are started again whatever happens."""
    reset = command_reset_runner(run_command, reset_command) if reset_command is not None else None
    if reset is not None and blockers is not None:
        reset = blockers.gate(reset)
    scope = [g for g in reading.gpus if devices is None or g.index in devices]
    applied, failure = None, None
    try:
        applied = apply_plan(nvml, reading.plan, select_entries(list(entries), scope), reset=reset,
                             allow_pending=allow_pending)
    except ApplyError as exc:
        failure = exc
    finally:
        # Whatever happened, the host's GPU services that were stopped for a reset run again.
        if blockers is not None:
            blockers.restore()
    return Outcome(applied, failure, blockers.report() if blockers is not None else None)
