# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fail every NVML call of an apply in turn, with the simulator's fault injection.

For each call the module makes in a reference run, the same run is repeated with that one call
failing (the simulator's ``add_fault`` armed just before it). Each time: no traceback; ``changed``
and ``changed_gpus`` say exactly which GPUs the simulator's state shows changed; a failure during
the apply names ``failed_gpu``; and a run without faults then converges to the wanted layout.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import gpuops_sim.nvml
import pytest

# The mutating NVML calls (as the harness of conftest.py counts them).
MUTATING = (
    "nvmlDeviceSetMigMode", "nvmlDeviceCreateGpuInstance", "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlGpuInstanceCreateComputeInstance", "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
    "nvmlGpuInstanceDestroy", "nvmlComputeInstanceDestroy",
)
# Every call of the module's run, not only those of the apply, with the release profile.
RELEASE = os.environ.get("GPUOPS_HYPOTHESIS_PROFILE") == "release"
A100 = "NVIDIA A100-SXM4-40GB"
H100 = "NVIDIA H100 80GB HBM3"


class _Call:
    """A symbol of the simulated library that counts its calls and arms a fault before the chosen one."""

    def __init__(self, name: str, target: Any, owner: "FaultingLibrary"):
        self._name, self._target, self._owner = name, target, owner

    def __call__(self, *args: Any) -> Any:
        owner = self._owner
        owner.calls.append(self._name)
        if owner.fail_at is not None and len(owner.calls) - 1 == owner.fail_at:
            gpuops_sim.nvml.add_fault(owner.path, self._name, "UNKNOWN", count=1)
            owner.failed = self._name
        return self._target(*args)


class FaultingLibrary:
    def __init__(self, inner: Any, owner: "Faults"):
        self._inner, self._owner = inner, owner

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        return _Call(name, target, self._owner) if name.startswith("nvml") and callable(target) else target


class Faults:
    def __init__(self, path: Any, monkeypatch: pytest.MonkeyPatch):
        self.path = path
        self.calls: List[str] = []
        self.fail_at: Optional[int] = None
        self.failed: Optional[str] = None
        real = gpuops_sim.nvml.load_library
        monkeypatch.setattr(gpuops_sim.nvml, "load_library", lambda p: FaultingLibrary(real(p), self))

    def arm(self, index: Optional[int]) -> None:
        self.calls, self.fail_at, self.failed = [], index, None


def gpu_states(node) -> Dict[int, Any]:
    """What a change can alter, per GPU: MIG mode (current, pending) and the instances."""
    states = {}
    for gpu in node.show()["gpus"]:
        instances = sorted((gi["profile"], gi["placement"]["start"], len(gi["compute_instances"])) for gi in gpu["gpu_instances"])
        states[gpu["index"]] = (gpu["mig"]["current"], gpu["mig"]["pending"], instances)
    return states


def doc(mig_devices: Dict[str, int], enabled: bool = True) -> Dict[str, Any]:
    entry: Dict[str, Any] = {"devices": "all", "mig-enabled": enabled}
    if enabled:
        entry["mig-devices"] = mig_devices
    return {"version": "v1", "mig-configs": {"c": [entry]}}


SCENARIOS = {
    # Instances change on two GPUs: destroy, create GPU instances, create compute instances, verify.
    "relayout": (A100, True, {"1g.5gb": 2, "2g.10gb": 1}, {"3g.20gb": 1, "1g.5gb": 2}),
    # The MIG mode changes (Hopper: no reset), then the instances are created.
    "enable": (H100, False, None, {"3g.40gb": 2}),
    # Instances are destroyed before MIG is disabled.
    "disable": (H100, True, {"2g.20gb": 1, "1g.10gb": 2}, None),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_nvml_call_of_an_apply_failing_in_turn(node, monkeypatch, scenario):
    model, mig_on, start, wanted = SCENARIOS[scenario]
    faults = Faults(node.path, monkeypatch)
    config = doc(wanted or {}, enabled=wanted is not None)

    def fresh() -> None:
        node.init(model, count=2, mig_enabled=mig_on)
        if start:
            faults.arm(None)
            first = node.run("mig_config", {"config": doc(start), "config_name": "c", "reset_command": node.reset_command})
            assert not first.get("failed"), first["msg"]

    def apply() -> Dict[str, Any]:
        return node.run("mig_config", {"config": config, "config_name": "c", "reset_command": node.reset_command})

    fresh()
    wanted_states = None
    faults.arm(None)
    reference = apply()
    assert not reference.get("failed") and reference["changed"], reference.get("msg")
    total = len(faults.calls)
    wanted_states = gpu_states(node)
    # The apply: from the first mutating call to the end (the re-reads after it included). The
    # release profile fails the reads that plan it too.
    first = next(i for i, name in enumerate(faults.calls) if name in MUTATING)
    start_at = 0 if RELEASE else first
    assert total - first > 10

    outcomes = {"failed": 0, "ok": 0}
    for index in range(start_at, total):
        fresh()
        before = gpu_states(node)
        faults.arm(index)
        result = apply()  # a traceback would escape node.run as an exception and fail the test here
        faults.arm(None)
        after = gpu_states(node)
        changed = sorted(i for i in before if before[i] != after[i])
        where = "call %d (%s)" % (index, faults.failed)
        assert "Traceback" not in str(result.get("msg", "")) and "Module failed" not in str(result.get("msg", "")), where
        # changed is truthful, and changed_gpus names exactly the GPUs whose state changed.
        assert bool(result.get("changed")) == bool(changed), (where, result.get("msg"), changed)
        assert sorted(g["index"] for g in result.get("changed_gpus") or []) == changed, (where, result.get("msg"))
        if result.get("failed"):
            outcomes["failed"] += 1
            assert result["msg"], where
            if result.get("failed_gpu"):
                assert result["failed_gpu"]["index"] in before, where
            elif changed:
                # A failure after a change without failed_gpu: only the read-back after a complete apply.
                assert "the change was applied" in result["msg"], (where, result["msg"])
        else:
            outcomes["ok"] += 1
            assert after == wanted_states, where
        # The state left is recoverable: a run without faults converges.
        again = apply()
        assert not again.get("failed"), (where, again.get("msg"))
        assert gpu_states(node) == wanted_states, where
    assert outcomes["failed"] > 0


def test_create_failing_after_destroys_reports_the_gpu_changed(node):
    """The reported case: instances destroyed, then a create fails: changed, and GPU 0 named."""
    node.init(A100, count=1, mig_enabled=True)
    assert not node.run("mig_config", {"config": doc({"1g.5gb": 7}), "config_name": "c"}).get("failed")
    gpuops_sim.nvml.add_fault(node.path, "nvmlDeviceCreateGpuInstanceWithPlacement", "UNKNOWN", count=1)
    result = node.run("mig_config", {"config": doc({"3g.20gb": 2}), "config_name": "c"})
    assert result["failed"] and result["changed"] is True
    assert [g["index"] for g in result["changed_gpus"]] == [0]
    assert result["failed_gpu"]["index"] == 0 and result["failed_gpu"]["step"] == "change GPU instances"
    assert node.layout() == {}


def test_reading_back_after_a_complete_apply_failing_reports_the_change(node, monkeypatch):
    node.init(A100, count=1, mig_enabled=True)
    # mig_config applies through the reconcile shared with the boot-time applier.
    from ansible_collections.gpuops.nvidia.plugins.module_utils.mig import reconcile

    real = reconcile.apply_plan

    def apply_then_fail_reads(*args, **kwargs):
        applied = real(*args, **kwargs)
        gpuops_sim.nvml.add_fault(node.path, "nvmlSystemGetDriverVersion", "UNKNOWN", count=1)
        return applied

    monkeypatch.setattr(reconcile, "apply_plan", apply_then_fail_reads)
    result = node.run("mig_config", {"config": doc({"1g.5gb": 7}), "config_name": "c"})
    assert result["failed"] and result["changed"] is True and [g["index"] for g in result["changed_gpus"]] == [0]
    assert "the change was applied" in result["msg"]
    assert node.layout() == {"1g.5gb": 7}


def test_the_nvml_version_call_failing_is_a_clear_error(node):
    node.init(A100, count=1, mig_enabled=True)
    gpuops_sim.nvml.add_fault(node.path, "nvmlSystemGetNVMLVersion", "UNKNOWN", count=0)
    for module, args in (("mig_config", {"config": doc({"1g.5gb": 7}), "config_name": "c"}), ("gpu_info", {})):
        result = node.run(module, args)
        assert result.get("failed"), module
        assert "NVML" in result["msg"] and not result.get("changed")
    assert node.layout() == {} and node.calls == []
