# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection: no compatibility promise outside gpuops.nvidia.
"""Execute a plan: the only code that mutates NVML (with the mig_mode module's mode changes).

Per GPU, in plan order: the MIG mode (destroy instances first when disabling; set; reset only this
GPU, only when its mode is still pending; re-read), then the instances (destroy compute instances
then GPU instances; create GPU instances at their planned placements; then one full-width compute
instance in each new GPU instance). Every outcome is re-read from NVML, never assumed. On an NVML
error the apply stops and reports the GPU, the step, and the state NVML reports afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.facts import Gpu
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.plan import GpuPlan, Plan, PlanError, plan_gpu
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import ConfigEntry
from ansible_collections.gpuops.nvidia.plugins.module_utils.nvml import NvmlCallError

DEFAULT_RESET_COMMAND = ["nvidia-smi", "--gpu-reset", "-i", "{index}"]

# nvml.h return codes that SetMigMode reports as its activation status.
ACTIVATION_SUCCESS = 0
ACTIVATION_TEXT = {0: "success", 3: "not supported", 16: "reset required", 19: "in use by another client"}

# Runs the reset command for one GPU: (succeeded, output).
ResetRunner = Callable[[Gpu], Tuple[bool, str]]


class ApplyError(Exception):
    """Applying stopped; says where, why, and what NVML reports for that GPU now."""

    def __init__(self, message: str, index: Optional[int] = None, step: str = "", state: Optional[Dict[str, Any]] = None,
                 result: Optional["ApplyResult"] = None):
        super().__init__(message)
        self.index = index
        self.step = step
        self.state = state
        self.result = result


@dataclass
class ModeOutcome:
    """What a mode change did on one GPU, as re-read from NVML."""

    index: int
    current: bool
    pending: bool
    wanted: bool
    set_called: bool = False
    activation_status: Optional[int] = None
    reset_attempted: bool = False
    reset_succeeded: Optional[bool] = None
    reset_output: str = ""

    @property
    def still_pending(self) -> bool:
        return self.current != self.wanted

    @property
    def reboot_required(self) -> bool:
        """A reset was tried and the mode is still pending: only a reboot (or freeing the GPU) applies it."""
        return self.still_pending and self.reset_attempted

    @property
    def reset_required(self) -> bool:
        return self.still_pending

    def to_dict(self) -> Dict[str, Any]:
        return {
            "index": self.index,
            "current": self.current,
            "pending": self.pending,
            "set_called": self.set_called,
            "activation_status": self.activation_status,
            "activation": None if self.activation_status is None else ACTIVATION_TEXT.get(self.activation_status, "NVML code %d" % self.activation_status),
            "reset_attempted": self.reset_attempted,
            "reset_succeeded": self.reset_succeeded,
            "reset_output": self.reset_output,
            "reset_required": self.reset_required,
            "reboot_required": self.reboot_required,
        }


@dataclass
class ApplyResult:
    changed_gpus: List[Dict[str, Any]] = field(default_factory=list)
    modes: List[ModeOutcome] = field(default_factory=list)
    messages: List[str] = field(default_factory=list)

    @property
    def reset_required(self) -> bool:
        return any(m.reset_required for m in self.modes)

    @property
    def reboot_required(self) -> bool:
        return any(m.reboot_required for m in self.modes)

    @property
    def changed(self) -> bool:
        return bool(self.changed_gpus)

    def mark_changed(self, index: int, uuid: str) -> None:
        if not any(g["index"] == index for g in self.changed_gpus):
            self.changed_gpus.append({"index": index, "uuid": uuid})
            self.changed_gpus.sort(key=lambda g: g["index"])

    def sync(self, nvml: Any, plan: Plan) -> None:
        """Mark changed every GPU that a mutating NVML call succeeded on (``nvml.mutated``), so that
        a failure after the first change still reports it."""
        uuids = {g.index: g.uuid for g in plan.gpus}
        for index in sorted(getattr(nvml, "mutated", None) or ()):
            self.mark_changed(index, uuids.get(index, ""))


def format_reset_command(template: List[str], gpu: Gpu) -> List[str]:
    """The reset command for one GPU: ``{index}``, ``{uuid}`` and ``{pci_bus_id}`` are filled in."""
    values = {"index": str(gpu.index), "uuid": gpu.uuid, "pci_bus_id": gpu.pci_bus_id}
    try:
        return [str(part).format(**values) for part in template]
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError("reset_command: invalid placeholder in %r (use {index}, {uuid} or {pci_bus_id}): %s" % (template, exc))


def command_reset_runner(run_command: Callable[..., Tuple[int, str, str]], template: List[str]) -> ResetRunner:
    """A ResetRunner that runs ``template`` (argv list, no shell) through AnsibleModule.run_command."""
    def run(gpu: Gpu) -> Tuple[bool, str]:
        rc, out, err = run_command(format_reset_command(template, gpu))
        text = "\n".join(t.strip() for t in (out, err) if t and t.strip())
        return rc == 0, "rc=%d%s" % (rc, (": " + text) if text else "")
    return run


def change_mode(nvml: Any, index: int, wanted: bool, reset: Optional[ResetRunner], mode: Tuple[bool, bool]) -> ModeOutcome:
    """Set the MIG mode of one GPU and, when it stays pending, reset that GPU; re-read each time.

    ``mode`` is the (current, pending) read just before. The activation status that
    nvmlDeviceSetMigMode returns is recorded, never trusted: GetMigMode decides.
    """
    current, pending = mode
    outcome = ModeOutcome(index=index, current=current, pending=pending, wanted=wanted)
    if pending != wanted:
        outcome.activation_status = nvml.set_mig_mode(index, wanted)
        outcome.set_called = True
        outcome.current, outcome.pending = nvml.mig_mode(index)
    if outcome.current != wanted and reset is not None:
        outcome.reset_attempted = True
        outcome.reset_succeeded, outcome.reset_output = reset(nvml.read_gpu(index))
        if outcome.reset_succeeded and isinstance(getattr(nvml, "mutated", None), set):
            nvml.mutated.add(index)
        outcome.current, outcome.pending = nvml.mig_mode(index)
    return outcome


def _safe_state(nvml: Any, index: int) -> Optional[Dict[str, Any]]:
    try:
        return nvml.read_gpu(index).to_dict()
    except Exception:  # pylint: disable=broad-except
        # Best effort: this reports on a GPU that is already in trouble.
        return None


def _apply_instances(nvml: Any, gpu_plan: GpuPlan) -> None:
    index = gpu_plan.index
    for gi in gpu_plan.destroy:
        nvml.destroy_gpu_instance(index, gi.gi_id)
    created: List[Tuple[int, int]] = []
    for new in gpu_plan.create:
        created.append((nvml.create_gpu_instance(index, new.profile.id, new.placement), new.profile.slices))
    for gi in gpu_plan.add_compute:
        profile_slices = next((c.profile.slices for c in gpu_plan.create if c.profile.id == gi.profile_id), None)
        created.append((gi.gi_id, profile_slices if profile_slices is not None else _slices_of(nvml, index, gi.profile_id)))
    for gi_id, slices in created:
        nvml.create_full_compute_instance(index, gi_id, slices)


def _slices_of(nvml: Any, index: int, profile_id: int) -> int:
    profile = nvml.read_gpu(index).profile_by_id(profile_id)
    if profile is None:
        raise ApplyError("GPU %d no longer offers GPU instance profile %d" % (index, profile_id), index, "compute instance")
    return profile.slices


def _verify(gpu: Gpu, gpu_plan: GpuPlan) -> Optional[str]:
    wanted = {name: slot["count"] for name, slot in gpu_plan.after()["layout"].items()}
    if gpu.layout() != wanted:
        return "GPU %d: NVML reports %s after the apply, expected %s" % (gpu.index, gpu.layout() or "{}", wanted or "{}")
    return None


def apply_plan(
    nvml: Any,
    plan: Plan,
    entries: Dict[int, ConfigEntry],
    reset: Optional[ResetRunner] = None,
    allow_pending: bool = False,
) -> ApplyResult:
    """Apply ``plan`` GPU by GPU. ``entries`` maps each targeted GPU to its config entry (for deferred plans)."""
    result = ApplyResult()
    try:
        _apply_gpus(nvml, plan, entries, reset, allow_pending, result)
    finally:
        # On every exit, success or failure: a GPU is changed from its first mutating call.
        result.sync(nvml, plan)
    return result


def _apply_gpus(nvml: Any, plan: Plan, entries: Dict[int, ConfigEntry], reset: Optional[ResetRunner], allow_pending: bool,
                result: ApplyResult) -> None:
    nvml_errors: Tuple[type, ...] = (NvmlCallError,)
    library_error = getattr(getattr(nvml, "lib", None), "NVMLError", None)
    if isinstance(library_error, type):
        nvml_errors += (library_error,)
    for gpu_plan in plan.gpus:
        if not gpu_plan.changed:
            continue
        index = gpu_plan.index
        step = "start"
        try:
            if gpu_plan.set_mode is not None or gpu_plan.mode_change:
                if gpu_plan.desired_enabled is False:
                    step = "destroy instances before disabling MIG"
                    for gi in gpu_plan.destroy:
                        nvml.destroy_gpu_instance(index, gi.gi_id)
                step = "set MIG mode %s" % ("enabled" if gpu_plan.desired_enabled else "disabled")
                outcome = change_mode(nvml, index, bool(gpu_plan.desired_enabled), reset, (gpu_plan.mig_current, gpu_plan.mig_pending))
                result.modes.append(outcome)
                if outcome.set_called or outcome.reset_succeeded:
                    result.mark_changed(index, gpu_plan.uuid)
                if outcome.still_pending:
                    detail = "GPU %d: MIG mode is %s but %s is pending (activation status: %s%s)" % (
                        index, "enabled" if outcome.current else "disabled", "enabled" if outcome.wanted else "disabled",
                        ACTIVATION_TEXT.get(outcome.activation_status, outcome.activation_status) if outcome.set_called else "not set now",
                        "; reset: %s" % (outcome.reset_output.strip() or ("ok" if outcome.reset_succeeded else "failed"))
                        if outcome.reset_attempted else "; no reset attempted",
                    )
                    if not allow_pending:
                        raise ApplyError(
                            detail + ". %s, then run again (or set allow_pending to accept a pending mode)."
                            % ("Reboot the node" if outcome.reboot_required else "Reset the GPU"),
                            index, step, _safe_state(nvml, index), result)
                    result.messages.append(detail + "; the instances follow once the new mode is active")
                    continue
            if not gpu_plan.desired_enabled:
                continue
            if gpu_plan.deferred:
                step = "validate the instances now that MIG is enabled"
                fresh, problems = plan_gpu(nvml.read_gpu(index), entries[index], plan.config)
                if problems:
                    raise PlanError(problems)
                gpu_plan.keep, gpu_plan.destroy, gpu_plan.create = fresh.keep, fresh.destroy, fresh.create
                gpu_plan.add_compute, gpu_plan.deferred = fresh.add_compute, False
            elif gpu_plan.mode_change:
                # Instances never survive a mode change: the plan was made for an empty GPU.
                gpu_plan.destroy = []
            step = "change GPU instances"
            if gpu_plan.destroy or gpu_plan.create or gpu_plan.add_compute:
                _apply_instances(nvml, gpu_plan)
                result.mark_changed(index, gpu_plan.uuid)
            step = "verify"
            problem = _verify(nvml.read_gpu(index), gpu_plan)
            if problem:
                raise ApplyError(problem, index, step, _safe_state(nvml, index), result)
        except ApplyError:
            raise
        except PlanError as exc:
            raise ApplyError("GPU %d: %s (the MIG mode was changed; no instances were created)" % (index, exc),
                             index, step, _safe_state(nvml, index), result)
        except nvml_errors as exc:
            raise ApplyError("GPU %d: %s failed: %s" % (index, step, exc), index, step, _safe_state(nvml, index), result)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            # The reset command could not run, or NVML answered something unexpected: reported as a
            # failure of this GPU's step, with what was changed so far, never as a traceback.
            raise ApplyError("GPU %d: %s failed: %s: %s" % (index, step, type(exc).__name__, exc), index, step,
                             _safe_state(nvml, index), result)
