"""Stand-ins for the host commands the collection runs around a GPU reset: ``systemctl``
(is-active / stop / start of the simulated GPU-holding services) and ``lsmod``. They act on the
node-state file named by ``GPUOPS_NVML_SIMULATOR``; see docs/simulator-nvml.md.

Exit codes follow systemd: ``is-active`` 0 active, 3 inactive; ``stop``/``start`` 5 for a unit
the node does not have.
"""

from __future__ import annotations

import os
import sys

from gpuops_sim.node import user
from gpuops_sim.nvml import state

ENV = "GPUOPS_NVML_SIMULATOR"
# What only root may do (gpuops_sim/node/user.py).
CHANGING_VERBS = ("daemon-reload", "enable", "disable", "start", "stop", "restart")


def _unit(name: str) -> str:
    return name[:-len(".service")] if name.endswith(".service") else name


def systemctl(argv: list[str]) -> int:
    path = os.environ.get(ENV)
    args = [a for a in argv if not a.startswith("-")]
    quiet = "--quiet" in argv or "-q" in argv
    if not path:
        print("simulated systemctl: GPUOPS_NVML_SIMULATOR is not set", file=sys.stderr)
        return 1
    if args[:1] and args[0] in CHANGING_VERBS and not user.is_root():
        # As systemd refuses a user whom polkit does not allow it.
        print(f"Failed to {args[0]}: Access denied", file=sys.stderr)
        return 1
    if len(args) != 2 or args[0] not in ("is-active", "stop", "start") or state.service_active(path, _unit(args[1])) is None:
        # Not a GPU-holding host service: a unit installed on the node, or its kubelet.
        from gpuops_sim.node import systemctl as units  # pylint: disable=import-outside-toplevel
        if state.read_state(path).get("host"):
            return units.main(path, argv)
        if len(args) != 2 or args[0] not in ("is-active", "stop", "start"):
            print("simulated systemctl: only is-active|stop|start UNIT on a simulated node", file=sys.stderr)
            return 1
    verb, unit = args[0], _unit(args[1])
    active = state.service_active(path, unit)
    if verb == "is-active":
        if not quiet:
            print("active" if active else "inactive")
        return 0 if active else 3
    if active is None:
        print(f"Failed to {verb} {unit}.service: Unit {unit}.service not loaded.", file=sys.stderr)
        return 5
    state.set_service(path, unit, verb == "start")
    return 0


def lsmod(_argv: list[str]) -> int:
    path = os.environ.get(ENV)
    if not path:
        print("simulated lsmod: GPUOPS_NVML_SIMULATOR is not set", file=sys.stderr)
        return 1
    print("Module                  Size  Used by")
    for name in state.kernel_modules(path):
        print(f"{name:<24}{65536:>6}  0")
    return 0
