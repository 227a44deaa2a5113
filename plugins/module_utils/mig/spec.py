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

import os
import reprlib
import stat
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.naming import parse_profile

SPEC_VERSION = "v1"
ENTRY_KEYS = ("device-filter", "devices", "mig-enabled", "mig-devices")

# Bounds on a config document, generous for real ones (mig-parted's own file of 81 named configs
# is 636 lines, 13.5 KiB, about 2,400 nodes, 5 levels deep) and small enough that a hostile document
# costs well under a second and a few MiB to refuse. docs/config-format.md lists them.
MAX_DOCUMENT_BYTES = 1024 * 1024        # a config file or YAML text
MAX_DOCUMENT_NODES = 100000             # mappings, sequences and scalars, with every alias expanded
MAX_DOCUMENT_DEPTH = 32                 # nesting of mappings and sequences
MAX_SCALAR_CHARS = 4096                 # one string
MAX_INTEGER_DIGITS = 20                 # one integer (2^64 has 20 digits)
MAX_PROFILE_COUNT = 64                  # one profile's count in mig-devices (GPUs offer at most 7 or 8)
MAX_CONFIG_NAME_CHARS = 253             # a named config (it becomes a label value and a file name)
EXCERPT_CHARS = 60                      # the most of a value an error message quotes


class SpecError(ValueError):
    """The document is not a valid mig-parted v1 config."""


_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel = 2
_EXCERPT.maxstring = EXCERPT_CHARS
_EXCERPT.maxother = EXCERPT_CHARS
_EXCERPT.maxlong = 24
_EXCERPT.maxdict = 4
_EXCERPT.maxlist = 6


def excerpt(value: Any) -> str:
    """A short quote of ``value`` for an error message: never a whole document or file."""
    try:
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
            return "an integer of %d bits" % value.bit_length()
        text = _EXCERPT.repr(value)
    # A message must never fail on what it quotes.
    except Exception:  # pylint: disable=broad-except
        text = "a %s" % type(value).__name__
    return text if len(text) <= 2 * EXCERPT_CHARS else text[:2 * EXCERPT_CHARS - 3] + "..."


def check_document_bounds(document: Any, source: str = "config") -> None:
    """Refuse a parsed document over the bounds: size with aliases expanded, depth, scalar sizes,
    and a structure that contains itself. Iterative, each shared node measured once, so an alias
    bomb is refused after a few thousand steps."""
    size: Dict[int, int] = {}
    depth: Dict[int, int] = {}
    on_path = set()
    stack: List[Tuple[Any, bool]] = [(document, False)]

    def children(node: Any) -> List[Any]:
        return list(node.keys()) + list(node.values()) if isinstance(node, dict) else list(node)

    def check_scalar(value: Any) -> None:
        if isinstance(value, str) and len(value) > MAX_SCALAR_CHARS:
            raise SpecError("%s: a string of %d characters (at most %d)" % (source, len(value), MAX_SCALAR_CHARS))
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
            raise SpecError("%s: an integer of %d bits (at most 64)" % (source, value.bit_length()))

    if not isinstance(document, (dict, list)):
        check_scalar(document)
        return
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            total, deepest = 1, 1
            for child in children(node):
                if isinstance(child, (dict, list)):
                    total += size[id(child)]
                    deepest = max(deepest, 1 + depth[id(child)])
                else:
                    check_scalar(child)
                    total += 1
            if total > MAX_DOCUMENT_NODES:
                raise SpecError("%s: more than %d nodes once its aliases are expanded" % (source, MAX_DOCUMENT_NODES))
            if deepest > MAX_DOCUMENT_DEPTH:
                raise SpecError("%s: nested more than %d levels deep" % (source, MAX_DOCUMENT_DEPTH))
            size[key], depth[key] = total, deepest
            continue
        if key in size:
            continue
        if key in on_path:
            raise SpecError("%s: a structure that contains itself (a recursive alias)" % source)
        on_path.add(key)
        stack.append((node, True))
        if len(stack) > 2 * MAX_DOCUMENT_NODES:
            raise SpecError("%s: more than %d nodes" % (source, MAX_DOCUMENT_NODES))
        for child in children(node):
            if isinstance(child, (dict, list)) and id(child) not in size:
                stack.append((child, False))


def read_config_file(path: str, field: str = "config_file") -> str:
    """The text of a config file: a regular file of at most MAX_DOCUMENT_BYTES, UTF-8, no NUL.

    A FIFO, a device (``/dev/zero``) or a directory is refused before it is read, and the read is
    bounded. Messages name the file and the problem, never what the file holds.
    """
    where = "%s %s" % (field, excerpt(path))
    try:
        info = os.stat(path)
    except OSError as exc:
        raise SpecError("%s: cannot read it: %s" % (where, exc.strerror or exc))
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) else \
            "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "not a regular file"
        raise SpecError("%s: is %s; a config must be a regular file" % (where, kind))
    if info.st_size > MAX_DOCUMENT_BYTES:
        raise SpecError("%s: %d bytes, more than the %d a config may have" % (where, info.st_size, MAX_DOCUMENT_BYTES))
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, opening it does not wait.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise SpecError("%s: cannot read it: %s" % (where, exc.strerror or exc))
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise SpecError("%s: is not a regular file; a config must be one" % where)
        chunks = []
        remaining = MAX_DOCUMENT_BYTES + 1
        while remaining > 0:
            chunk = os.read(descriptor, min(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as exc:
        raise SpecError("%s: cannot read it: %s" % (where, exc.strerror or exc))
    finally:
        os.close(descriptor)
    data = b"".join(chunks)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise SpecError("%s: more than the %d bytes a config may have" % (where, MAX_DOCUMENT_BYTES))
    return decode_config_bytes(data, where)


def decode_config_bytes(data: bytes, where: str) -> str:
    if b"\0" in data:
        raise SpecError("%s: holds a NUL byte (at offset %d); a config is UTF-8 text" % (where, data.index(b"\0")))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError("%s: is not UTF-8 text (invalid byte at offset %d)" % (where, exc.start))


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
                % (len(self.configs), _listing(self.names()))
            )
        if name not in self.configs:
            raise SpecError(
                "config_name: unknown named config %s; the document holds: %s" % (excerpt(name), _listing(self.names()))
            )
        return name, self.configs[name]


def _listing(names: List[str], shown: int = 100) -> str:
    if len(names) <= shown:
        return ", ".join(names)
    return "%s and %d more" % (", ".join(names[:shown]), len(names) - shown)


def _devices(where: str, value: Any) -> Optional[Tuple[int, ...]]:
    if isinstance(value, str):
        if value != "all":
            raise SpecError("%s.devices: invalid string %s (the only string allowed is 'all')" % (where, excerpt(value)))
        return None
    if not isinstance(value, list):
        raise SpecError(
            "%s.devices: invalid value %s (expected 'all' or a list of GPU indexes; a bare integer is not allowed)"
            % (where, excerpt(value))
        )
    for item in value:
        if not _is_int(item):
            raise SpecError("%s.devices: invalid GPU index %s in %s (integers expected)" % (where, excerpt(item), excerpt(value)))
        if item < 0:
            raise SpecError("%s.devices: negative GPU index %s in %s" % (where, excerpt(item), excerpt(value)))
    return tuple(value)


def _device_filter(where: str, value: Any) -> Tuple[DeviceFilter, ...]:
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise SpecError(
            "%s.device-filter: invalid value %s (expected a string or a list of strings such as \"0x20B010DE\"; "
            "quote hexadecimal IDs so YAML keeps them as strings)" % (where, excerpt(value))
        )
    filters = []
    for item in items:
        try:
            filters.append(DeviceFilter.parse(item))
        except ValueError as exc:
            raise SpecError("%s.device-filter: invalid device ID %s: %s" % (where, excerpt(item), exc))
    return tuple(filters)


def _mig_devices(where: str, value: Any) -> Tuple[Tuple[str, int], ...]:
    if not isinstance(value, dict):
        raise SpecError("%s.mig-devices: invalid value %s (expected a mapping of profile to count)" % (where, excerpt(value)))
    pairs = []
    for profile, count in value.items():
        if not isinstance(profile, str):
            raise SpecError("%s.mig-devices: invalid profile %s (profile names are strings)" % (where, excerpt(profile)))
        try:
            parse_profile(profile)
        except ValueError as exc:
            raise SpecError("%s.mig-devices: invalid format for %s: %s" % (where, excerpt(profile), excerpt(str(exc))[1:-1]))
        if not _is_int(count):
            raise SpecError("%s.mig-devices.%s: invalid count %s (an integer is expected)" % (where, profile, excerpt(count)))
        if count < 0:
            raise SpecError("%s.mig-devices.%s: invalid count %s (counts must be >= 0)" % (where, profile, excerpt(count)))
        if count > MAX_PROFILE_COUNT:
            raise SpecError("%s.mig-devices.%s: invalid count %s (no GPU offers more than %d instances of a profile)"
                            % (where, profile, excerpt(count), MAX_PROFILE_COUNT))
        pairs.append((profile, count))
    if pairs and not any(count > 0 for _profile, count in pairs):
        raise SpecError("%s.mig-devices: all counts are 0 in %s (use {} for MIG enabled with no instances)" % (where, excerpt(value)))
    return tuple(pairs)


def parse_entry(config: str, position: int, raw: Any) -> ConfigEntry:
    where = "mig-configs.%s[%d]" % (config, position)
    if not isinstance(raw, dict):
        raise SpecError("%s: invalid entry %s (expected a mapping)" % (where, excerpt(raw)))
    for key in raw:
        if key not in ENTRY_KEYS:
            raise SpecError(
                "%s: unexpected field %s (allowed: %s); profile counts belong under 'mig-devices'"
                % (where, excerpt(key), ", ".join(ENTRY_KEYS))
            )
    for key in ("devices", "mig-enabled"):
        if key not in raw:
            raise SpecError("%s: missing required field %r" % (where, key))
    enabled = raw["mig-enabled"]
    if not isinstance(enabled, bool):
        raise SpecError("%s.mig-enabled: invalid value %s (true or false expected)" % (where, excerpt(enabled)))
    devices = _devices(where, raw["devices"])
    device_filter = _device_filter(where, raw["device-filter"]) if "device-filter" in raw else ()
    mig_devices_raw = raw.get("mig-devices")
    if enabled and mig_devices_raw is None:
        raise SpecError("%s.mig-devices: missing required field when 'mig-enabled' is true ({} means no instances)" % where)
    mig_devices = _mig_devices(where, mig_devices_raw) if mig_devices_raw is not None else ()
    if not enabled and mig_devices:
        raise SpecError("%s.mig-devices: MIG devices %s included when 'mig-enabled' is false" % (where, excerpt(mig_devices_raw)))
    return ConfigEntry(config, position, enabled, devices, device_filter, mig_devices)


def parse_spec(document: Any, source: str = "config") -> MigSpec:
    """Validate a parsed document (dict) and return the configs it holds."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        # The type only: a file that is not a config (say /etc/passwd) must not be shown.
        raise SpecError("%s: expected a mapping with 'version' and 'mig-configs', got a %s" % (source, type(document).__name__))
    check_document_bounds(document, source)
    if document and "version" not in document:
        raise SpecError("version: missing required field (expected %r)" % SPEC_VERSION)
    version = document.get("version")
    if version != SPEC_VERSION:
        raise SpecError("version: unknown version %s (expected %r)" % (excerpt(version), SPEC_VERSION))
    for key in document:
        if key not in ("version", "mig-configs"):
            raise SpecError("%s: unexpected field (allowed: version, mig-configs)" % (key,))
    raw_configs = document.get("mig-configs")
    if not isinstance(raw_configs, dict) or not raw_configs:
        raise SpecError("mig-configs: at least one named config is required, got %s" % (excerpt(raw_configs),))
    configs: Dict[str, Tuple[ConfigEntry, ...]] = {}
    for name, raw_entries in raw_configs.items():
        if not isinstance(name, str) or not name or len(name) > MAX_CONFIG_NAME_CHARS:
            raise SpecError("mig-configs: invalid config name %s (a non-empty string of at most %d characters is expected)"
                            % (excerpt(name), MAX_CONFIG_NAME_CHARS))
        if not isinstance(raw_entries, list):
            raise SpecError("mig-configs.%s: invalid value %s (expected a list of entries)" % (name, excerpt(raw_entries)))
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
            raise SpecError("%s: invalid GPU index %s (expected 'all' or a list of GPU indexes)" % (option, excerpt(item)))
        indexes.append(item)
    return indexes


def _yaml_problem(exc: Exception) -> str:
    """A YAML error without the snippet of the document PyYAML quotes: the problem and where."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or type(exc).__name__
    text = str(problem)
    if len(text) > 2 * EXCERPT_CHARS:
        text = text[:2 * EXCERPT_CHARS - 3] + "..."
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return "%s (line %d, column %d)" % (text, mark.line + 1, mark.column + 1)
    return text


def load_config_text(text: str, source: str = "config") -> Any:
    """Parse YAML (or JSON) text within the bounds; the document, not yet validated.

    The parser is PyYAML's safe loader (libyaml's when present). Before anything is built, its
    events are scanned: too deep a nesting or too many nodes is refused there. Aliases are allowed
    but the document they expand to must fit MAX_DOCUMENT_NODES (an alias bomb is refused, not
    expanded), and an integer is read only when it has at most MAX_INTEGER_DIGITS digits.
    """
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a runtime requirement
        raise SpecError("%s: PyYAML is required to read YAML text" % source)
    if not isinstance(text, str):
        raise SpecError("%s: expected YAML text, got a %s" % (source, type(text).__name__))
    if len(text) > MAX_DOCUMENT_BYTES:
        raise SpecError("%s: %d characters, more than the %d a config may have" % (source, len(text), MAX_DOCUMENT_BYTES))
    if "\0" in text:
        raise SpecError("%s: holds a NUL character (at offset %d); a config is text" % (source, text.index("\0")))
    loader = _bounded_loader(yaml)
    try:
        nesting = events = 0
        for event in yaml.parse(text, Loader=loader):
            events += 1
            if isinstance(event, yaml.CollectionStartEvent):
                nesting += 1
                if nesting > MAX_DOCUMENT_DEPTH:
                    raise SpecError("%s: nested more than %d levels deep" % (source, MAX_DOCUMENT_DEPTH))
            elif isinstance(event, yaml.CollectionEndEvent):
                nesting -= 1
            if events > 2 * MAX_DOCUMENT_NODES:
                raise SpecError("%s: more than %d nodes" % (source, MAX_DOCUMENT_NODES))
        document = yaml.load(text, Loader=loader)  # nosec B506 - a safe loader, bounded above
    except yaml.YAMLError as exc:
        raise SpecError("%s: malformed YAML: %s" % (source, _yaml_problem(exc)))
    except RecursionError:
        raise SpecError("%s: nested too deep" % source)
    check_document_bounds(document, source)
    return document


_LOADERS: Dict[int, Any] = {}


def _bounded_loader(yaml: Any) -> Any:
    """PyYAML's safe loader (libyaml's when present) whose integers are bounded in digits."""
    if id(yaml) not in _LOADERS:
        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        class BoundedSafeLoader(base):  # type: ignore[misc, valid-type]  # pylint: disable=too-many-ancestors
            """A safe loader that refuses integers longer than MAX_INTEGER_DIGITS."""

        def construct_int(loader: Any, node: Any) -> Any:
            digits = sum(1 for char in str(node.value) if char.isalnum())
            if digits > MAX_INTEGER_DIGITS + 2:
                raise yaml.constructor.ConstructorError(
                    None, None, "an integer of %d digits (at most %d)" % (digits, MAX_INTEGER_DIGITS), node.start_mark)
            return yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)

        BoundedSafeLoader.add_constructor("tag:yaml.org,2002:int", construct_int)
        _LOADERS[id(yaml)] = BoundedSafeLoader
    return _LOADERS[id(yaml)]


def load_spec_text(text: str, source: str = "config") -> MigSpec:
    """Parse YAML (or JSON) text within the bounds, then validate it."""
    return parse_spec(load_config_text(text, source), source)
