"""A reboot of a simulated node, as a real node goes through one.

1. Shutdown: the kubelet stops with the node; its pods die (deleted by the kubelet) and the node
   turns NotReady.
2. The hardware reboots: NVML applies its reboot semantics (gpuops_sim/nvml/state.py ``reboot``:
   processes die, instances vanish, pending modes apply; Hopper comes back with MIG off); the
   node gets a new boot id, which its ``boot_time_command`` reads.
3. Boot: every enabled unit installed under the node's root starts, in unit order, its
   ``ExecStart`` run as written; the kubelet unit starts last, and only when the units it requires
   succeeded. Then the node is Ready again, or stays NotReady saying which unit failed.

``python -m gpuops_sim node reboot --state FILE`` is the node's reboot command: it returns once the
node has booted, as ``ansible.builtin.reboot`` expects of a ``reboot_command`` that outlives the
connection.
"""

from __future__ import annotations

from typing import Any

from gpuops_sim.node import kubelet, systemd
from gpuops_sim.nvml import state as nvml_state


def boot(path: str) -> dict[str, Any]:
    """Start the node's enabled units in order, then its kubelet. Returns what started and failed."""
    settings = systemd.host(path)
    root, kubelet_unit = settings["root"], settings.get("kubelet_unit") or systemd.DEFAULT_KUBELET_UNIT
    started, failed = [], []
    for name in systemd.enabled_units(root):
        if name == kubelet_unit or systemd.unit_state(path, name).get("active") in ("active", "failed"):
            continue
        try:
            systemd.run_unit(path, name)
            started.append(name)
        except systemd.UnitError:
            failed.append(name)
    if (nvml_state.read_state(path).get("driver_faults") or {}).get("kubelet_down"):
        # The kubelet fault (nvml_state.set_driver_faults): the node stays NotReady.
        return {"started": started, "failed": failed + [kubelet_unit], "kubelet": False}
    try:
        systemd.start(path, kubelet_unit, kubelet.bring_up, retry_failed=False)
        kubelet_up = True
    except systemd.UnitError:
        kubelet_up = False
    return {"started": started, "failed": failed, "kubelet": kubelet_up}


def reboot(path: str) -> dict[str, Any]:
    """Shut the node down, reboot its GPUs, boot it again (see the module's docstring)."""
    killed = kubelet.shut_down(path)
    nvml_state.reboot(path)
    with nvml_state.transaction(path) as current:
        current["units"] = {}
        boot_id = systemd.write_boot_id(current["host"]["root"], current["boot_count"])
    result = boot(path)
    result.update(killed=killed, boot_id=boot_id)
    return result
