"""A simulated node's systemd: the units installed under the node's root, enabled as systemd
enables them, started in unit order at boot by running their ``ExecStart`` as written.

What a simulated node is lives in its node-state file (``GPUOPS_NVML_SIMULATOR``): its ``host``
section names the node's root directory (where roles install files, as under ``/`` on a real node),
its kubeconfig and its kubelet unit; ``units`` holds each unit's state since the last boot. A unit
file's paths are the node's real paths, so a unit installed under the root runs as written.

The kubelet unit is built in: starting it first starts the units it requires
(``<kubelet>.requires/``, which ``RequiredBy=`` fills when a unit is enabled), and the kubelet
comes up (the node turns Ready) only when they all succeeded, as systemd's ``Requires=`` with
``After=`` orders it. Output of each run goes to the node's journal,
``<root>/var/log/journal/<unit>.log``, which ``systemctl status`` prints the end of.
"""

from __future__ import annotations

import datetime
import os
import re
import shlex
import subprocess
from typing import Any, Callable

from gpuops_sim.nvml import state as nvml_state

ENV = "GPUOPS_NVML_SIMULATOR"
UNIT_DIR = "etc/systemd/system"
DEFAULT_KUBELET_UNIT = "kubelet.service"
BOOT_ID = "proc/sys/kernel/random/boot_id"


class UnitError(Exception):
    """A unit that cannot be started: the message and systemctl's exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def host(path: str) -> dict[str, Any]:
    """The node's host settings (root, kubeconfig, kubelet unit); {} for a node without them."""
    return dict(nvml_state.read_state(path).get("host") or {})


def set_host(path: str, root: str, kubeconfig: str | None = None, node: str | None = None,
             kubelet_unit: str = DEFAULT_KUBELET_UNIT) -> None:
    """Describe the node's host: create its root and its first boot id."""
    os.makedirs(os.path.join(root, UNIT_DIR), exist_ok=True)
    with nvml_state.transaction(path) as current:
        current["host"] = {"root": os.path.abspath(root), "kubeconfig": kubeconfig, "node": node or current["node"],
                           "kubelet_unit": kubelet_unit, "kubelet": "active"}
        current.setdefault("units", {})
        write_boot_id(root, current["boot_count"])


def write_boot_id(root: str, boot_count: int) -> str:
    boot_id = nvml_state.mig.derived_uuid(os.path.abspath(root), "boot", boot_count)
    target = os.path.join(root, BOOT_ID)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(boot_id + "\n")
    return boot_id


def unit_name(name: str) -> str:
    return name if "." in name else name + ".service"


# --- unit files ---------------------------------------------------------------------------------

def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → values (systemd's repeated keys kept in order); comments and blank lines
    skipped, a line ending in a backslash continued on the next one."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in re.sub(r"\\\n", " ", text).splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is not None and "=" in line:
            key, _eq, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_path(root: str, name: str) -> str:
    return os.path.join(root, UNIT_DIR, name)


def read_unit(root: str, name: str) -> dict[str, dict[str, list[str]]] | None:
    try:
        with open(unit_path(root, name), encoding="utf-8") as handle:
            return parse_unit(handle.read())
    except FileNotFoundError:
        return None


def _words(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> list[str]:
    return [word for value in unit.get(section, {}).get(key, []) for word in value.split()]


def enable(root: str, name: str) -> list[str]:
    """``systemctl enable``: a link in each ``<target>.wants/`` / ``.requires/`` its [Install] names."""
    unit = read_unit(root, name)
    if unit is None:
        raise UnitError(f"Failed to enable unit: Unit file {name} does not exist.")
    made = []
    for key, suffix in (("WantedBy", "wants"), ("RequiredBy", "requires")):
        for target in _words(unit, "Install", key):
            directory = os.path.join(root, UNIT_DIR, f"{target}.{suffix}")
            os.makedirs(directory, exist_ok=True)
            link = os.path.join(directory, name)
            if not os.path.lexists(link):
                os.symlink(os.path.join("..", name), link)
                made.append(link)
    return made


def disable(root: str, name: str) -> list[str]:
    """``systemctl disable``: the unit's links in every ``.wants/`` / ``.requires/`` removed."""
    base = os.path.join(root, UNIT_DIR)
    removed = []
    for entry in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        link = os.path.join(base, entry, name)
        if entry.endswith((".wants", ".requires")) and os.path.lexists(link):
            os.unlink(link)
            removed.append(link)
    return removed


def is_enabled(root: str, name: str) -> bool:
    base = os.path.join(root, UNIT_DIR)
    if not os.path.isdir(base):
        return False
    return any(os.path.lexists(os.path.join(base, entry, name))
               for entry in os.listdir(base) if entry.endswith((".wants", ".requires")))


def required_by(root: str, name: str) -> list[str]:
    """The units ``name`` requires through ``<name>.requires/``."""
    directory = os.path.join(root, UNIT_DIR, f"{name}.requires")
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def enabled_units(root: str) -> list[str]:
    """Every enabled unit, ordered by their Before=/After= (then by name)."""
    base = os.path.join(root, UNIT_DIR)
    names: set[str] = set()
    if os.path.isdir(base):
        for entry in os.listdir(base):
            if entry.endswith((".wants", ".requires")):
                names.update(os.listdir(os.path.join(base, entry)))
    units = {name: read_unit(root, name) or {} for name in names}
    after: dict[str, set[str]] = {name: set() for name in names}
    for name, unit in units.items():
        after[name].update(n for n in _words(unit, "Unit", "After") if n in names)
        for later in _words(unit, "Unit", "Before"):
            if later in names:
                after[later].add(name)
    ordered: list[str] = []
    while after:
        ready = sorted(n for n, deps in after.items() if not deps - set(ordered))
        if not ready:  # an ordering cycle: systemd breaks it too; take the rest by name
            ready = sorted(after)
        for name in ready:
            ordered.append(name)
            after.pop(name)
    return ordered


# --- running units ------------------------------------------------------------------------------

def journal_path(root: str, name: str) -> str:
    return os.path.join(root, "var/log/journal", name + ".log")


def _journal(root: str, name: str, text: str) -> None:
    target = journal_path(root, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%b %d %H:%M:%S")
    with open(target, "a", encoding="utf-8") as handle:
        for line in text.splitlines():
            handle.write(f"{stamp} {name}: {line}\n")


def node_environment(path: str) -> dict[str, str]:
    """What a process on the node sees: the node's NVML and its commands on PATH (a fresh node's
    own /usr/bin under its root, where nvidia-smi appears once a driver is installed)."""
    from gpuops_sim.k8s.cluster import fresh_node_environment, nvml_bin_dir  # pylint: disable=import-outside-toplevel
    root = host(path).get("root")
    if root and os.path.isdir(os.path.join(root, "usr", "bin")):
        return dict(fresh_node_environment(path, root, os.environ.get("PATH", "/usr/bin:/bin")), LANG="C.UTF-8")
    return {"PATH": os.pathsep.join([nvml_bin_dir(), os.environ.get("PATH", "/usr/bin:/bin")]), ENV: path,
            "LANG": "C.UTF-8"}


def _set_unit(path: str, name: str, **fields: Any) -> None:
    with nvml_state.transaction(path) as current:
        current.setdefault("units", {}).setdefault(name, {}).update(fields)


def set_unit_state(path: str, name: str, **fields: Any) -> None:
    _set_unit(path, name, **fields)


def unit_state(path: str, name: str) -> dict[str, Any]:
    return dict((nvml_state.read_state(path).get("units") or {}).get(name) or {})


def run_unit(path: str, name: str) -> None:
    """Start one installed unit as systemd would: its conditions, then ``ExecStart`` (each line, in
    order) with its ``Environment=``; the unit is ``active`` or ``failed`` afterwards."""
    root = host(path)["root"]
    unit = read_unit(root, name)
    if unit is None:
        raise UnitError(f"Failed to start {name}: Unit {name} not found.", 5)
    service = unit.get("Service", {})
    for condition in unit.get("Unit", {}).get("ConditionPathExists", []):
        negate = condition.startswith("!")
        if os.path.exists(condition.lstrip("!")) == negate:
            _journal(root, name, f"Condition check resulted in {name} being skipped ({condition}).")
            _set_unit(path, name, active="inactive", result="condition", exit_code=0)
            return
    env = node_environment(path)
    for line in service.get("Environment", []):
        for word in shlex.split(line):
            key, _eq, value = word.partition("=")
            env[key] = value
    _journal(root, name, f"Starting {name}...")
    for command in service.get("ExecStart", []):
        argv = shlex.split(command.lstrip("-@+!:"))
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=600)
            code, output = done.returncode, done.stdout + done.stderr
        except (OSError, subprocess.TimeoutExpired) as exc:
            code, output = 203, str(exc)
        _journal(root, name, output)
        if code != 0:
            _journal(root, name, f"{name}: Main process exited, code=exited, status={code}/FAILURE")
            _journal(root, name, f"{name}: Failed with result 'exit-code'.")
            _set_unit(path, name, active="failed", result="exit-code", exit_code=code)
            raise UnitError(f"Job for {name} failed because the control process exited with error code.\n"
                            f"See \"systemctl status {name}\" and \"journalctl -xeu {name}\" for details.")
    _journal(root, name, f"Finished {name}.")
    _set_unit(path, name, active="active", result="success", exit_code=0)


def start(path: str, name: str, kubelet: Callable[[str, bool, str], None], retry_failed: bool = True) -> None:
    """``systemctl start``: the units ``name`` requires first, then ``name``; ``kubelet(path, up,
    reason)`` brings the node's kubelet up (or records why it stays down). A required unit that
    failed is started again, unless ``retry_failed`` is false (the boot's own start job, which ran
    it already)."""
    settings = host(path)
    root, kubelet_unit = settings["root"], settings.get("kubelet_unit") or DEFAULT_KUBELET_UNIT
    for dependency in required_by(root, name):
        current = unit_state(path, dependency).get("active")
        if current != "active":
            try:
                if current == "failed" and not retry_failed:
                    raise UnitError(f"{dependency} failed")
                run_unit(path, dependency)
            except UnitError as exc:
                if name == kubelet_unit:
                    _set_unit(path, name, active="inactive", result="dependency", exit_code=1)
                    kubelet(path, False, f"{dependency} failed")
                raise UnitError(f"A dependency job for {name} failed. See 'journalctl -xe' for details.") from exc
    if name == kubelet_unit:
        _set_unit(path, name, active="active", result="success", exit_code=0)
        kubelet(path, True, "")
        return
    run_unit(path, name)


def status_text(path: str, name: str, lines: int = 10) -> tuple[str, int]:
    """``systemctl status``: a summary and the end of the unit's journal; exit code 0 active, 3 not."""
    root = host(path)["root"]
    current = unit_state(path, name)
    active = current.get("active", "inactive")
    loaded = "loaded" if os.path.exists(unit_path(root, name)) or name == host(path).get("kubelet_unit") else "not-found"
    text = [f"* {name}", f"     Loaded: {loaded} ({unit_path(root, name)}; "
            f"{'enabled' if is_enabled(root, name) else 'disabled'})",
            f"     Active: {active}" + (f" (Result: {current.get('result')})" if active == "failed" else "")]
    try:
        with open(journal_path(root, name), encoding="utf-8") as handle:
            text += [""] + handle.read().splitlines()[-lines:]
    except FileNotFoundError:
        pass
    return "\n".join(text), 0 if active == "active" else 3
