"""``systemctl`` of a simulated node, for the units installed under its root and its kubelet unit
(the GPU-holding host services of gpuops_sim/nvml/host.py are answered there). Enough of systemctl
for ansible.builtin.systemd_service and for an operator: daemon-reload, show, is-enabled, enable, disable,
is-active, start, restart, stop, status."""

from __future__ import annotations

import os
import sys

from gpuops_sim.node import kubelet, systemd


def _show(path: str, name: str) -> int:
    settings = systemd.host(path)
    root = settings["root"]
    is_kubelet = name == (settings.get("kubelet_unit") or systemd.DEFAULT_KUBELET_UNIT)
    loaded = is_kubelet or os.path.exists(systemd.unit_path(root, name))
    if is_kubelet:
        active = "active" if settings.get("kubelet", "active") == "active" else "inactive"
    else:
        active = systemd.unit_state(path, name).get("active", "inactive")
    print(f"Id={name}")
    print(f"LoadState={'loaded' if loaded else 'not-found'}")
    print(f"ActiveState={active}")
    print(f"SubState={'exited' if active == 'active' else 'dead' if active == 'inactive' else 'failed'}")
    print(f"UnitFileState={'enabled' if is_kubelet or systemd.is_enabled(root, name) else 'disabled'}")
    return 0


def main(path: str, argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("-")]
    quiet = "--quiet" in argv or "-q" in argv
    if not systemd.host(path).get("root"):
        print("simulated systemctl: this node has no host settings", file=sys.stderr)
        return 1
    if args == ["daemon-reload"]:
        return 0
    if len(args) != 2:
        print(f"simulated systemctl: unsupported: {' '.join(argv)}", file=sys.stderr)
        return 1
    verb, name = args[0], systemd.unit_name(args[1])
    root = systemd.host(path)["root"]
    kubelet_unit = systemd.host(path).get("kubelet_unit") or systemd.DEFAULT_KUBELET_UNIT
    try:
        if verb == "show":
            return _show(path, name)
        if verb == "is-enabled":
            enabled = name == kubelet_unit or systemd.is_enabled(root, name)
            print("enabled" if enabled else "disabled")
            return 0 if enabled else 1
        if verb == "disable":
            for link in systemd.disable(root, name):
                print(f"Removed \"{link}\".")
            return 0
        if verb == "enable":
            for link in systemd.enable(root, name):
                print(f"Created symlink {link} -> {systemd.unit_path(root, name)}.")
            return 0
        if verb in ("is-active", "status"):
            text, code = systemd.status_text(path, name)
            if name == kubelet_unit:
                code = 0 if systemd.host(path).get("kubelet", "active") == "active" else 3
            if not quiet:
                print(text if verb == "status" else ("active" if code == 0 else "inactive"))
            return code
        if verb in ("start", "restart"):
            if verb == "restart" and name != kubelet_unit:
                systemd.run_unit(path, name)
            else:
                systemd.start(path, name, kubelet.bring_up)
            return 0
        if verb == "stop":
            if name == kubelet_unit:
                kubelet.shut_down(path)
            elif not os.path.exists(systemd.unit_path(root, name)):
                print(f"Failed to stop {name}: Unit {name} not loaded.", file=sys.stderr)
                return 5
            else:
                systemd.set_unit_state(path, name, active="inactive")
            return 0
    except systemd.UnitError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    print(f"simulated systemctl: unsupported verb {verb}", file=sys.stderr)
    return 1
