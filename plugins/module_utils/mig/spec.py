# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection: no compatibility promise outside gpuops.nvidia.
"""Parse and validate a mig-parted v1 config document (pure: no NVML, no files).

The rules are those of mig-parted's ``api/spec/v1/spec.go`` and go-nvlib's profile parser, so a
document mig-parted accepts is accepted here and one it rejects is rejected here, with two
deliberate additions: ``device-filter`` values are parsed now (mig-parted parses them only when it
walks the GPUs), and negative GPU indexes are refused (mig-parted would silently match nothing).
Every error names the config, the entry index, the field and the offending value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.naming import parse_profile

SPEC_VERSION = "v1"
ENTRY_KEYS = ("device-filter", "devices", "mig-enabled", "mig-devices")


class SpecError(ValueError):
    """The document is not a valid mig-parted v1 config."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_u32(text: str) -> int:
    """Go's ``strconv.ParseUint(text, 0, 32)`` for the inputs that matter: hex, octal, binary, decimal."""
    if not text or text != text.strip() or text[0] in "+-":
        raise ValueError("not an unsigned integer")
    value = int(text, 0)
    if value > 0xFFFFFFFF:
        raise ValueError("value out of range")
    return value


@dataclass(frozen=True)
class DeviceFilter:
    """``0xDDDDVVVV`` or ``0xDDDDVVVV:0xSSSSVVVV`` (device<<16 | vendor, then the PCI subsystem)."""

    device_vendor: int
    subsystem: Optional[int] = None

    @classmethod
    def parse(cls, text: str) -> "DeviceFilter":
        parts = text.split(":")
        if len(parts) > 2:
            raise ValueError("expected '<devicevendor>' or '<devicevendor>:<subdevicevendor>'")
        device_vendor = _parse_u32(parts[0])
        subsystem = _parse_u32(parts[1]) if len(parts) == 2 else None
        return cls(device_vendor, subsystem)

    def matches(self, pci_device_id: str, pci_subsystem_id: str = "") -> bool:
        try:
            if _parse_u32(pci_device_id) != self.device_vendor:
                return False
            if self.subsystem is None:
                return True
            return _parse_u32(pci_subsystem_id) == self.subsystem
        except ValueError:
            return False

    def __str__(self) -> str:
        text = "0x%08X" % self.device_vendor
        if self.subsystem is not None:
            text += ":0x%08X" % self.subsystem
        return text


@dataclass(frozen=True)
class ConfigEntry:
    config: str
    position: int
    mig_enabled: bool
    devices: Optional[Tuple[int, ...]] = None  # None: "all"
    device_filter: Tuple[DeviceFilter, ...] = ()  # empty: every GPU
    mig_devices: Tuple[Tuple[str, int], ...] = ()  # in document order

    @property
    def where(self) -> str:
        return "mig-configs.%s[%d]" % (self.config, self.position)

    def matches(self, index: int, pci_device_id: str, pci_subsystem_id: str = "") -> bool:
        if self.devices is not None and index not in self.devices:
            return False
        if not self.device_filter:
            return True
        return any(f.matches(pci_device_id, pci_subsystem_id) for f in self.device_filter)

    def to_dict(self) -> Dict[str, Any]:
        result: Dict[str, Any] = {
            "devices": "all" if self.devices is None else list(self.devices),
            "mig-enabled": self.mig_enabled,
        }
        if self.device_filter:
            result["device-filter"] = [str(f) for f in self.device_filter]
        if self.mig_enabled:
            result["mig-devices"] = dict(self.mig_devices)
        return result


@dataclass(frozen=True)
class MigSpec:
    configs: Dict[str, Tuple[ConfigEntry, ...]]

    def names(self) -> List[str]:
        return sorted(self.configs)

    def select(self, name: Optional[str]) -> Tuple[str, Tuple[ConfigEntry, ...]]:
        """The named config; the name may be left out when the document holds exactly one."""
        if name is None or name == "":
            if len(self.configs) == 1:
                only = next(iter(self.configs))
                return only, self.configs[only]
            raise SpecError(
                "config_name is required: the document holds %d named configs (%s)"
                % (len(self.configs), ", ".join(self.names()))
            )
        if name not in self.configs:
            raise SpecError(
                "config_name: unknown named config %r; the document holds: %s" % (name, ", ".join(self.names()))
            )
        return name, self.configs[name]


def _devices(where: str, value: Any) -> Optional[Tuple[int, ...]]:
    if isinstance(value, str):
        if value != "all":
            raise SpecError("%s.devices: invalid string %r (the only string allowed is 'all')" % (where, value))
        return None
    if not isinstance(value, list):
        raise SpecError(
            "%s.devices: invalid value %r (expected 'all' or a list of GPU indexes; a bare integer is not allowed)"
            % (where, value)
        )
    for item in value:
        if not _is_int(item):
            raise SpecError("%s.devices: invalid GPU index %r in %r (integers expected)" % (where, item, value))
        if item < 0:
            raise SpecError("%s.devices: negative GPU index %r in %r" % (where, item, value))
    return tuple(value)


def _device_filter(where: str, value: Any) -> Tuple[DeviceFilter, ...]:
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise SpecError(
            "%s.device-filter: invalid value %r (expected a string or a list of strings such as \"0x20B010DE\"; "
            "quote hexadecimal IDs so YAML keeps them as strings)" % (where, value)
        )
    filters = []
    for item in items:
        try:
            filters.append(DeviceFilter.parse(item))
        except ValueError as exc:
            raise SpecError("%s.device-filter: invalid device ID %r: %s" % (where, item, exc))
    return tuple(filters)


def _mig_devices(where: str, value: Any) -> Tuple[Tuple[str, int], ...]:
    if not isinstance(value, dict):
        raise SpecError("%s.mig-devices: invalid value %r (expected a mapping of profile to count)" % (where, value))
    pairs = []
    for profile, count in value.items():
        if not isinstance(profile, str):
            raise SpecError("%s.mig-devices: invalid profile %r (profile names are strings)" % (where, profile))
        try:
            parse_profile(profile)
        except ValueError as exc:
            raise SpecError("%s.mig-devices: invalid format for %r: %s" % (where, profile, exc))
        if not _is_int(count):
            raise SpecError("%s.mig-devices.%s: invalid count %r (an integer is expected)" % (where, profile, count))
        if count < 0:
            raise SpecError("%s.mig-devices.%s: invalid count %r (counts must be >= 0)" % (where, profile, count))
        pairs.append((profile, count))
    if pairs and not any(count > 0 for _profile, count in pairs):
        raise SpecError("%s.mig-devices: all counts are 0 in %r (use {} for MIG enabled with no instances)" % (where, value))
    return tuple(pairs)


def parse_entry(config: str, position: int, raw: Any) -> ConfigEntry:
    where = "mig-configs.%s[%d]" % (config, position)
    if not isinstance(raw, dict):
        raise SpecError("%s: invalid entry %r (expected a mapping)" % (where, raw))
    for key in raw:
        if key not in ENTRY_KEYS:
            raise SpecError(
                "%s: unexpected field %r (allowed: %s); profile counts belong under 'mig-devices'"
                % (where, key, ", ".join(ENTRY_KEYS))
            )
    for key in ("devices", "mig-enabled"):
        if key not in raw:
            raise SpecError("%s: missing required field %r" % (where, key))
    enabled = raw["mig-enabled"]
    if not isinstance(enabled, bool):
        raise SpecError("%s.mig-enabled: invalid value %r (true or false expected)" % (where, enabled))
    devices = _devices(where, raw["devices"])
    device_filter = _device_filter(where, raw["device-filter"]) if "device-filter" in raw else ()
    mig_devices_raw = raw.get("mig-devices")
    if enabled and mig_devices_raw is None:
        raise SpecError("%s.mig-devices: missing required field when 'mig-enabled' is true ({} means no instances)" % where)
    mig_devices = _mig_devices(where, mig_devices_raw) if mig_devices_raw is not None else ()
    if not enabled and mig_devices:
        raise SpecError("%s.mig-devices: MIG devices %r included when 'mig-enabled' is false" % (where, mig_devices_raw))
    return ConfigEntry(config, position, enabled, devices, device_filter, mig_devices)


def parse_spec(document: Any) -> MigSpec:
    """Validate a parsed document (dict) and return the configs it holds."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise SpecError("config: expected a mapping with 'version' and 'mig-configs', got %r" % (document,))
    if document and "version" not in document:
        raise SpecError("version: missing required field (expected %r)" % SPEC_VERSION)
    version = document.get("version")
    if version != SPEC_VERSION:
        raise SpecError("version: unknown version %r (expected %r)" % (version, SPEC_VERSION))
    for key in document:
        if key not in ("version", "mig-configs"):
            raise SpecError("%s: unexpected field (allowed: version, mig-configs)" % (key,))
    raw_configs = document.get("mig-configs")
    if not isinstance(raw_configs, dict) or not raw_configs:
        raise SpecError("mig-configs: at least one named config is required, got %r" % (raw_configs,))
    configs: Dict[str, Tuple[ConfigEntry, ...]] = {}
    for name, raw_entries in raw_configs.items():
        if not isinstance(name, str) or not name:
            raise SpecError("mig-configs: invalid config name %r (a non-empty string is expected)" % (name,))
        if not isinstance(raw_entries, list):
            raise SpecError("mig-configs.%s: invalid value %r (expected a list of entries)" % (name, raw_entries))
        if not raw_entries:
            raise SpecError("mig-configs.%s: at least one entry is required" % name)
        configs[name] = tuple(parse_entry(name, i, raw) for i, raw in enumerate(raw_entries))
    return MigSpec(configs)


def parse_devices_option(value: Any, option: str = "devices") -> Optional[List[int]]:
    """A module's ``devices`` option: ``all`` (None) or a list of GPU indexes (ints or digit strings)."""
    if value is None or value == "all" or value == ["all"]:
        return None
    items = value if isinstance(value, list) else [value]
    indexes = []
    for item in items:
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item.strip())
        if not _is_int(item) or item < 0:
            raise SpecError("%s: invalid GPU index %r (expected 'all' or a list of GPU indexes)" % (option, item))
        indexes.append(item)
    return indexes


def load_spec_text(text: str, source: str = "config") -> MigSpec:
    """Parse YAML (or JSON) text, then validate it."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a runtime requirement
        raise SpecError("%s: PyYAML is required to read YAML text" % source)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError("%s: malformed YAML: %s" % (source, exc))
    return parse_spec(document)
