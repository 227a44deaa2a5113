# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The reset-blocker logic with a fake command runner: what is run, in which order, and when."""

from __future__ import annotations

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.reset_blockers import (
    ResetBlockers, loaded_blocking_modules, parse_loaded_modules,
)

LSMOD = """Module                  Size  Used by
nvidia_drm             90112  2
nvidia_modeset       1306624  1 nvidia_drm
nvidia              56455168  3 nvidia_uvm,nvidia_modeset
"""


class FakeHost:
    def __init__(self, active=(), failing=()):
        self.active = set(active)
        self.failing = set(failing)
        self.commands = []

    def run(self, argv):
        self.commands.append(" ".join(argv))
        verb, name = argv[1], argv[-1]
        if verb == "is-active":
            return (0 if name in self.active else 3), "", ""
        if name in self.failing:
            return 1, "", "Job failed"
        (self.active.discard if verb == "stop" else self.active.add)(name)
        return 0, "", ""


def blockers(host, modules=()):
    return ResetBlockers(host.run, ["nvidia-persistenced", "nvidia-dcgm", "nvsm"], ["nvidia_drm"], lambda: list(modules))


def test_lsmod_and_proc_modules_parse_to_names():
    assert parse_loaded_modules(LSMOD) == ["nvidia_drm", "nvidia_modeset", "nvidia"]
    assert parse_loaded_modules("nvidia_drm 90112 2 - Live 0x0\n") == ["nvidia_drm"]
    assert loaded_blocking_modules(["nvidia", "nvidia_drm"], ["nvidia_drm", "i915"]) == ["nvidia_drm"]


def test_only_active_services_are_stopped_once_and_started_in_reverse():
    host = FakeHost(active={"nvidia-persistenced", "nvidia-dcgm"})
    gate = blockers(host)
    resets = []
    reset = gate.gate(lambda gpu: (resets.append(gpu) or True, "ok"))
    assert reset("gpu0") == (True, "ok") and reset("gpu1") == (True, "ok")
    gate.restore()
    gate.restore()
    stops = [c for c in host.commands if " stop " in c]
    starts = [c for c in host.commands if " start " in c]
    assert stops == ["systemctl stop nvidia-persistenced", "systemctl stop nvidia-dcgm"]
    assert starts == ["systemctl start nvidia-dcgm", "systemctl start nvidia-persistenced"]
    assert gate.report()["services_restarted"] == ["nvidia-dcgm", "nvidia-persistenced"]
    assert resets == ["gpu0", "gpu1"]


def test_a_loaded_blocking_module_refuses_the_reset_and_stops_nothing():
    host = FakeHost(active={"nvidia-persistenced"})
    gate = blockers(host, modules=["nvidia", "nvidia_drm"])
    succeeded, output = gate.gate(lambda gpu: (True, "reset"))("gpu0")
    assert not succeeded and "nvidia_drm" in output and "mig_allow_reboot" in output
    assert not any(" stop " in c for c in host.commands)
    assert gate.report()["kernel_modules_loaded"] == ["nvidia_drm"]


def test_a_service_that_will_not_stop_is_reported_with_the_failed_reset():
    host = FakeHost(active={"nvidia-persistenced"}, failing={"nvidia-persistenced"})
    gate = blockers(host)
    succeeded, output = gate.gate(lambda gpu: (False, "rc=255: In use by another client"))("gpu0")
    assert not succeeded and "systemctl stop nvidia-persistenced" in output
    gate.restore()
    assert gate.report()["services_stopped"] == [] and gate.report()["services_restarted"] == []
