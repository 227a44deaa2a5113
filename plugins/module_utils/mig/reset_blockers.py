# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection: no compatibility promise outside gpuops.nvidia.
"""Known GPU reset blockers: found by observation, cleared around the resets, restored afterwards.

A GPU reset fails with "In use by another client" while anything on the host holds the GPU open.
Host services (nvidia-persistenced, DCGM, nvsm, a host dcgm-exporter) can be stopped for the
reset and started again; a loaded ``nvidia_drm`` cannot be cleared safely on a live node, so the
reset is not tried and the caller takes the reboot path or fails, naming the module.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.facts import Gpu

DEFAULT_BLOCKING_SERVICES = ["nvidia-persistenced", "nvidia-dcgm", "dcgm", "nvsm", "dcgm-exporter"]
DEFAULT_BLOCKING_KERNEL_MODULES = ["nvidia_drm"]

# AnsibleModule.run_command: argv -> (rc, stdout, stderr).
RunCommand = Callable[..., Tuple[int, str, str]]
ResetRunner = Callable[[Gpu], Tuple[bool, str]]


def parse_loaded_modules(text: str) -> List[str]:
    """Module names from ``lsmod`` output or /proc/modules (first column; lsmod's header skipped)."""
    names = []
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] != "Module":
            names.append(fields[0])
    return names


def loaded_blocking_modules(loaded: Sequence[str], blocking: Sequence[str]) -> List[str]:
    """The blocking kernel modules that are loaded, in the order they were asked for."""
    present = set(loaded)
    return [name for name in blocking if name in present]


class ResetBlockers:
    """Reads the blockers on first use, stops the blocking services before the first reset, and
    starts exactly those again in :meth:`restore`, which the caller runs on every exit path."""

    def __init__(self, run_command: RunCommand, services: Sequence[str], kernel_modules: Sequence[str],
                 read_loaded_modules: Callable[[], List[str]]) -> None:
        self._run = run_command
        self.services = list(services)
        self.kernel_modules = list(kernel_modules)
        self._read_loaded_modules = read_loaded_modules
        self.modules_loaded: Optional[List[str]] = None
        self.services_active: Optional[List[str]] = None
        self.services_stopped: List[str] = []
        self.services_restarted: List[str] = []
        self.problems: List[str] = []

    def observe(self) -> None:
        """Which blocking modules are loaded and which blocking services run (read-only)."""
        if self.modules_loaded is None:
            self.modules_loaded = loaded_blocking_modules(self._read_loaded_modules(), self.kernel_modules)
        if self.services_active is None:
            self.services_active = [name for name in self.services
                                    if self._run(["systemctl", "is-active", "--quiet", name])[0] == 0]

    def clear(self) -> Optional[str]:
        """Stop the active blocking services (once); the reason a reset must not be tried, or None."""
        self.observe()
        if self.modules_loaded:
            return ("not reset: kernel module %s is loaded and holds the GPUs; unload it (modprobe -r) "
                    "or allow a reboot (mig_allow_reboot) and run again" % ", ".join(self.modules_loaded))
        self._systemctl_each("stop", self.services_active or [], self.services_stopped)
        return None

    def _systemctl_each(self, verb: str, names: Sequence[str], done: List[str]) -> None:
        """``systemctl <verb>`` each name not yet in ``done``; successes are added to ``done``."""
        for name in names:
            if name in done:
                continue
            rc, out, err = self._run(["systemctl", verb, name])
            if rc == 0:
                done.append(name)
            else:
                self.problems.append("systemctl %s %s: rc=%d %s" % (verb, name, rc, (err or out).strip()))

    def gate(self, reset: ResetRunner) -> ResetRunner:
        """``reset`` with the blockers cleared before it runs."""
        def run(gpu: Gpu) -> Tuple[bool, str]:
            refused = self.clear()
            if refused:
                return False, refused
            succeeded, output = reset(gpu)
            if not succeeded and self.problems:
                output = "%s (%s)" % (output, "; ".join(self.problems))
            return succeeded, output
        return run

    def restore(self) -> None:
        """Start the services this object stopped, in the reverse order."""
        self._systemctl_each("start", list(reversed(self.services_stopped)), self.services_restarted)

    def report(self) -> Dict[str, object]:
        return {
            "kernel_modules_loaded": list(self.modules_loaded or []),
            "services_active": list(self.services_active or []),
            "services_stopped": list(self.services_stopped),
            "services_restarted": list(self.services_restarted),
            "problems": list(self.problems),
        }


def module_reader(run_command: RunCommand, lsmod: Optional[str]) -> Callable[[], List[str]]:
    """Loaded kernel modules through ``lsmod`` when it exists, else /proc/modules."""
    def read() -> List[str]:
        if lsmod:
            rc, out, _err = run_command([lsmod])
            if rc == 0:
                return parse_loaded_modules(out)
        try:
            with open("/proc/modules", encoding="utf-8") as handle:
                return parse_loaded_modules(handle.read())
        except OSError:
            return []
    return read
