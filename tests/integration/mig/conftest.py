# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Harness for the MIG modules on the NVML simulator.

Most tests run a module's ``main()`` in-process (fast), with its arguments patched in and its
exit captured; the simulator's library is wrapped so the test can count mutating NVML calls. A few
tests run real ``ansible`` / ``ansible-playbook`` processes (test_mig_playbooks.py).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[3]

import gpuops_sim.nvml  # noqa: E402  (after the path set-up above)
from ansible.module_utils import basic  # noqa: E402
from ansible.module_utils.testing import patch_module_args  # noqa: E402

MUTATING = (
    "nvmlDeviceSetMigMode", "nvmlDeviceCreateGpuInstance", "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlGpuInstanceCreateComputeInstance", "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
    "nvmlGpuInstanceDestroy", "nvmlComputeInstanceDestroy",
)


class ModuleExit(Exception):
    def __init__(self, result: Dict[str, Any]):
        super().__init__(result.get("msg", ""))
        self.result = result


class _Counted:
    """A symbol of the simulated library that records each call (an object, so pynvml can set .restype)."""

    def __init__(self, name: str, target: Any, calls: List[str]):
        self._name, self._target, self._calls = name, target, calls

    def __call__(self, *args: Any) -> Any:
        self._calls.append(self._name)
        return self._target(*args)


class CountingLibrary:
    def __init__(self, inner: Any, calls: List[str]):
        self._inner, self._calls = inner, calls

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        return _Counted(name, target, self._calls) if name in MUTATING else target


class Node:
    """One simulated node: a state file, the environment pointing at it, and the mutating calls made."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch):
        self.path = path
        self.calls: List[str] = []
        monkeypatch.setenv("GPUOPS_NVML_SIMULATOR", str(path))
        real = gpuops_sim.nvml.load_library
        monkeypatch.setattr(gpuops_sim.nvml, "load_library", lambda p: CountingLibrary(real(p), self.calls))

    def init(self, model: str, count: int = 1, mig_enabled: bool = False, **kwargs: Any) -> "Node":
        gpuops_sim.nvml.init_node(self.path, model, count, mig_enabled=mig_enabled, **kwargs)
        return self

    def show(self) -> Dict[str, Any]:
        return gpuops_sim.nvml.show(self.path)

    def layout(self, index: int = 0) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for gi in self.show()["gpus"][index]["gpu_instances"]:
            for ci in gi["compute_instances"]:
                counts[ci["profile"]] = counts.get(ci["profile"], 0) + 1
        return dict(sorted(counts.items()))

    @property
    def reset_command(self) -> List[str]:
        return [sys.executable, "-m", "gpuops_sim", "nvml", "reset", "--state", str(self.path), "--gpu", "{index}"]

    def run(self, module: str, args: Dict[str, Any], check: bool = False, diff: bool = False) -> Dict[str, Any]:
        """Run gpuops.nvidia.<module>'s main() in-process; the result dict (``failed`` set on failure)."""
        target = importlib.import_module("ansible_collections.gpuops.nvidia.plugins.modules.%s" % module)
        full = dict(args, _ansible_check_mode=check, _ansible_diff=diff)

        def exit_json(_self: Any, **result: Any) -> None:
            raise ModuleExit(result)

        def fail_json(_self: Any, msg: str = "", **result: Any) -> None:
            result.update(failed=True, msg=msg)
            raise ModuleExit(result)

        warnings: List[str] = []
        with patch_module_args(full), pytest.MonkeyPatch.context() as patch:
            patch.setattr(basic.AnsibleModule, "exit_json", exit_json)
            patch.setattr(basic.AnsibleModule, "fail_json", fail_json)
            patch.setattr(basic.AnsibleModule, "warn", lambda _self, text: warnings.append(text))
            try:
                target.main()
            except ModuleExit as done:
                done.result.setdefault("warnings", []).extend(warnings)
                return done.result
        raise AssertionError("module %s returned without exit_json/fail_json" % module)


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    return Node(tmp_path / "node.json", monkeypatch)
