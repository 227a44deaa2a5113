# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""Which NVIDIA software a GPU node already runs outside Kubernetes: a MIG manager service
(mig-parted's ``nvidia-mig-manager.service``, as DeepOps installs it), a driver installed with
NVIDIA's runfile, and the container runtime's runtimes and registry settings.

The parsers are pure (text in, dictionaries out); ``read_node`` does the file reads under a root
directory, and never raises on a file it cannot read or parse: that file counts as absent, with
the reason in ``warnings``.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Any, Callable, Mapping

try:  # Python 3.11 and later; older nodes get the header scan below
    import tomllib
except ImportError:  # pragma: no cover - depends on the node's Python
    tomllib = None  # type: ignore[assignment]

#: Unit names of mig-parted's systemd service (the package's name, and names sites give it).
MIG_MANAGER_UNITS = ("nvidia-mig-manager.service", "nvidia-mig-parted.service", "mig-parted.service")
UNIT_DIRS = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")
#: Files NVIDIA's runfile installer leaves behind (packages install neither).
RUNFILE_MARKERS = ("usr/bin/nvidia-uninstall", "var/log/nvidia-installer.log")
SELECTED_CONFIG_VARIABLE = "MIG_PARTED_SELECTED_CONFIG"
CONFIG_FILE_VARIABLE = "MIG_PARTED_CONFIG_FILE"
#: The CRI plugin's table per containerd config version.
_CRI_PLUGINS = ("io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri", "cri")
_TABLE_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → values (repeated keys kept in order), as systemd reads a unit file."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in re.sub(r"\\\n", " ", text).splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif current is not None and "=" in line:
            key, _eq, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_environment(units: list[dict[str, dict[str, list[str]]]]) -> dict[str, str]:
    """The ``Environment=`` of a unit and its drop-ins, in order (a later assignment wins)."""
    env: dict[str, str] = {}
    for unit in units:
        for line in unit.get("Service", {}).get("Environment", []):
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            for word in words:
                key, eq, value = word.partition("=")
                if eq:
                    env[key] = value
    return env


def _exec_option(units: list[dict[str, dict[str, list[str]]]], flags: tuple[str, ...]) -> str:
    """The value of a ``-c NAME`` / ``--selected-config=NAME`` style option of ExecStart."""
    for unit in units:
        for line in unit.get("Service", {}).get("ExecStart", []):
            try:
                words = shlex.split(line.lstrip("-@+!:"))
            except ValueError:
                continue
            for i, word in enumerate(words):
                for flag in flags:
                    if word == flag and i + 1 < len(words):
                        return words[i + 1]
                    if word.startswith(flag + "="):
                        return word.split("=", 1)[1]
    return ""


def mig_manager_service(name: str, units: list[dict[str, dict[str, list[str]]]]) -> dict[str, str]:
    """What a mig-parted service applies at boot: its named config and config file."""
    env = unit_environment(units)
    return {
        "name": name,
        "selected_config": env.get(SELECTED_CONFIG_VARIABLE) or _exec_option(units, ("-c", "--selected-config")),
        "config_file": env.get(CONFIG_FILE_VARIABLE) or _exec_option(units, ("-f", "--config-file")),
    }


def parse_systemctl_show(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _nested(document: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def containerd_entries(text: str) -> dict[str, Any]:
    """The runtimes, default runtime and registry settings of a containerd config (versions 1–3)."""
    if tomllib is None:
        return _containerd_entries_by_headers(text)
    try:
        document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, TypeError, ValueError) as exc:
        raise ValueError("not valid TOML: {0}".format(exc)) from exc
    runtimes: dict[str, str] = {}
    default_runtime = ""
    mirrors: list[str] = []
    config_path = ""
    plugins = document.get("plugins") if isinstance(document.get("plugins"), dict) else {}
    for plugin in _CRI_PLUGINS:
        cri = plugins.get(plugin)
        containerd = _nested(cri, "containerd")
        table = _nested(containerd, "runtimes")
        for name, runtime in (table if isinstance(table, dict) else {}).items():
            if isinstance(runtime, dict):
                binary = _nested(runtime, "options", "BinaryName")
                runtimes[name] = binary if isinstance(binary, str) else ""
        name = _nested(containerd, "default_runtime_name")
        default_runtime = name if isinstance(name, str) and name else default_runtime
        registry = _nested(cri, "registry")
        found = _nested(registry, "mirrors")
        if isinstance(found, dict):
            mirrors.extend(sorted(k for k in found if k not in mirrors))
        path = _nested(registry, "config_path")
        config_path = path if isinstance(path, str) and path else config_path
    images_registry = _nested(plugins, "io.containerd.cri.v1.images", "registry", "config_path")
    if isinstance(images_registry, str) and images_registry:
        config_path = images_registry
    return {"runtimes": runtimes, "default_runtime": default_runtime, "registry_mirrors": mirrors,
            "registry_config_path": config_path}


def _containerd_entries_by_headers(text: str) -> dict[str, Any]:
    """Without a TOML parser: the runtime and mirror tables named in section headers."""
    runtimes: dict[str, str] = {}
    mirrors: list[str] = []
    for line in text.splitlines():
        match = _TABLE_HEADER.match(line)
        if not match:
            continue
        parts = [p.strip().strip('"') for p in re.findall(r'"[^"]*"|[^.]+', match.group(1))]
        if "runtimes" in parts and parts.index("runtimes") + 1 < len(parts):
            runtimes.setdefault(parts[parts.index("runtimes") + 1], "")
        if "mirrors" in parts and parts.index("mirrors") + 1 < len(parts):
            mirror = parts[parts.index("mirrors") + 1]
            if mirror not in mirrors:
                mirrors.append(mirror)
    return {"runtimes": runtimes, "default_runtime": "", "registry_mirrors": mirrors, "registry_config_path": ""}


def nvidia_runtimes(entries: Mapping[str, Any]) -> list[str]:
    """The runtimes that run NVIDIA's container runtime (by name or binary)."""
    return sorted(name for name, binary in (entries.get("runtimes") or {}).items()
                  if "nvidia" in name or "nvidia" in (binary or ""))


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _unit_files(root: str, name: str) -> tuple[str | None, list[dict[str, dict[str, list[str]]]]]:
    """The unit file of ``name`` under ``root`` (first of systemd's directories) and its drop-ins."""
    for directory in UNIT_DIRS:
        path = os.path.join(root, directory, name)
        text = _read(path)
        if text is None:
            continue
        units = [parse_unit(text)]
        drop_ins = os.path.join(root, "etc/systemd/system", name + ".d")
        if os.path.isdir(drop_ins):
            for entry in sorted(os.listdir(drop_ins)):
                if entry.endswith(".conf"):
                    units.append(parse_unit(_read(os.path.join(drop_ins, entry)) or ""))
        return path, units
    return None, []


def is_enabled_by_links(root: str, name: str) -> bool:
    """``systemctl enable`` left a link to the unit in a ``.wants`` or ``.requires`` directory."""
    base = os.path.join(root, "etc/systemd/system")
    try:
        entries = os.listdir(base)
    except OSError:
        return False
    return any(os.path.lexists(os.path.join(base, entry, name)) for entry in entries if entry.endswith((".wants", ".requires")))


def read_node(root: str, containerd_config: str,
              systemctl_show: Callable[[str], Mapping[str, str] | None]) -> dict[str, Any]:
    """Read the node's files under ``root``; ``systemctl_show(unit)`` answers a unit's state
    (``ActiveState``, ``UnitFileState``), or None where systemctl cannot be asked."""
    warnings: list[str] = []
    services = []
    for name in MIG_MANAGER_UNITS:
        path, units = _unit_files(root, name)
        if path is None:
            continue
        service: dict[str, Any] = dict(mig_manager_service(name, units), path=path)
        state = systemctl_show(name) or {}
        service["active"] = state.get("ActiveState", "unknown")
        if "UnitFileState" in state:
            service["enabled"] = state["UnitFileState"] in ("enabled", "enabled-runtime", "static")
        else:
            service["enabled"] = is_enabled_by_links(root, name)
        services.append(service)
    runfile = [os.path.join(root, marker) for marker in RUNFILE_MARKERS if os.path.exists(os.path.join(root, marker))]
    containerd: dict[str, Any] = {"path": os.path.join(root, containerd_config.lstrip("/")), "present": False}
    text = _read(containerd["path"])
    if text is not None:
        containerd["present"] = True
        try:
            containerd.update(containerd_entries(text))
            containerd["nvidia_runtimes"] = nvidia_runtimes(containerd)
        except ValueError as exc:
            warnings.append("{0}: {1}".format(containerd["path"], exc))
    return {"mig_manager_services": services, "driver_runfile": runfile, "containerd": containerd, "warnings": warnings}
