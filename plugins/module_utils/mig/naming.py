# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection: no compatibility promise outside gpuops.nvidia.
"""MIG profile names: mig-parted's ``[<C>c.]<G>g.<GB>gb[+attr|-attr]`` strings, parsed and computed.

Names are computed from what NVML reports for each GPU (go-nvlib's ``getMigMemorySizeGB``), so they
follow the driver's memory accounting. The only table here is the NVML enum itself: which GPU
instance profile enum has how many compute slices and which attribute suffix (nvml.h, go-nvlib).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

# NVML_GPU_INSTANCE_PROFILE_* enum value -> (compute slices, name suffix).
GI_ENUM_SHAPES = {
    0x0: (1, ""),         # 1_SLICE
    0x1: (2, ""),         # 2_SLICE
    0x2: (3, ""),         # 3_SLICE
    0x3: (4, ""),         # 4_SLICE
    0x4: (7, ""),         # 7_SLICE
    0x5: (8, ""),         # 8_SLICE
    0x6: (6, ""),         # 6_SLICE
    0x7: (1, "+me"),      # 1_SLICE_REV1
    0x8: (2, "+me"),      # 2_SLICE_REV1
    0x9: (1, ""),         # 1_SLICE_REV2 (double memory)
    0xA: (1, "+gfx"),     # 1_SLICE_GFX
    0xB: (2, "+gfx"),     # 2_SLICE_GFX
    0xC: (4, "+gfx"),     # 4_SLICE_GFX
    0xD: (1, "-me"),      # 1_SLICE_NO_ME
    0xE: (2, "-me"),      # 2_SLICE_NO_ME
    0xF: (1, "+me.all"),  # 1_SLICE_ALL_ME
    0x10: (2, "+me.all"),  # 2_SLICE_ALL_ME
    0x11: (3, "+gfx"),    # 3_SLICE_GFX
}
GI_ENUM_COUNT = 0x12

# NVML_COMPUTE_INSTANCE_PROFILE_* enum value -> compute slices. Lower enums first: the plain
# full-width profile is preferred over REV1 / NVL variants of the same width.
CI_ENUM_SLICES = {0x0: 1, 0x1: 2, 0x2: 3, 0x3: 4, 0x4: 7, 0x5: 8, 0x6: 6, 0x7: 1, 0x8: 7}
CI_ENUM_COUNT = 0x9

_MIB = 1024 * 1024
_GIB = 1024 * 1024 * 1024


def memory_gb(memory_mib: int, device_total_bytes: int) -> int:
    """The ``GB`` of a profile name, exactly as go-nvlib computes it (float64, same operation order).

    Python's round() rounds half to even (70.5 -> 70); Go's math.Round rounds half away from zero,
    hence floor(x + 0.5) for these non-negative values.
    """
    if device_total_bytes <= 0:
        raise ValueError("device total memory must be positive, got %r" % device_total_bytes)
    fraction = (float(memory_mib) * _MIB) / float(device_total_bytes)
    fraction = math.ceil(fraction * 8) / 8
    total_gb = float((device_total_bytes + _GIB - 1) // _GIB)
    return int(math.floor(fraction * total_gb + 0.5))


def profile_name(slices: int, gb: int, suffix: str = "", compute_slices: Optional[int] = None) -> str:
    """``3g.20gb``, ``1g.5gb+me``, or ``1c.3g.20gb`` when a compute instance is narrower than its GPU instance."""
    base = "%dg.%dgb%s" % (slices, gb, suffix)
    if compute_slices is not None and compute_slices != slices:
        return "%dc.%s" % (compute_slices, base)
    return base


@dataclass(frozen=True)
class ParsedProfile:
    """A profile string split into its parts; equality is what go-nvlib's ``Matches`` compares."""

    compute_slices: int
    slices: int
    gb: int
    attributes: Tuple[str, ...] = ()
    negative_attributes: Tuple[str, ...] = ()

    @property
    def suffix(self) -> str:
        if self.attributes:
            return "+" + ",".join(self.attributes)
        if self.negative_attributes:
            return "-" + ",".join(self.negative_attributes)
        return ""

    @property
    def is_gpu_instance_profile(self) -> bool:
        return self.compute_slices == self.slices

    def shape(self) -> Tuple[int, int, str]:
        """What stays the same when a driver renames a profile: compute slices, slices, suffix."""
        return (self.compute_slices, self.slices, self.suffix)

    def __str__(self) -> str:
        return profile_name(self.slices, self.gb, self.suffix, self.compute_slices)


def _parse_field(text: str, unit: str) -> int:
    if text.strip() != text:
        raise ValueError("leading or trailing spaces on '%%d%s'" % unit)
    if not text.endswith(unit):
        raise ValueError("missing '%s' from '%%d%s'" % (unit, unit))
    number = text[:-len(unit)]
    # Go's strconv.Atoi: optional sign, ASCII digits only.
    digits = number[1:] if number[:1] in ("+", "-") else number
    if not digits or not digits.isdigit() or not digits.isascii():
        raise ValueError("malformed number in '%%d%s'" % unit)
    return int(number)


def _parse_attributes(text: str) -> Tuple[str, ...]:
    attributes = text.split(",")
    seen = set()
    for attribute in attributes:
        if attribute in seen:
            raise ValueError("non unique attribute in list")
        if attribute == "":
            raise ValueError("empty attribute in list")
        if attribute.strip() != attribute:
            raise ValueError("leading or trailing spaces in attribute")
        if attribute[0].isdigit():
            raise ValueError("attribute begins with a number")
        if attribute[0] == "." or attribute[-1] == ".":
            raise ValueError("attribute begins/ends with a dot")
        if not all((c.isascii() and c.isalnum()) or c == "." for c in attribute):
            raise ValueError("non alpha-numeric character or digit in attribute")
        seen.add(attribute)
    return tuple(sorted(attributes))


def parse_profile(profile: str) -> ParsedProfile:
    """Parse a profile string with go-nvlib's rules (``parseMigProfile``); raise ValueError if malformed."""
    if not isinstance(profile, str):
        raise ValueError("profile must be a string, got %r" % (profile,))
    if profile == "":
        raise ValueError("profile is the empty string")
    plus = profile.split("+", 1)
    minus = profile.split("-", 1)
    if len(plus) == 2 and len(minus) == 2:
        raise ValueError("profile '%s' contains both '+/-' attributes" % profile)
    parts = plus if len(plus) == 2 else minus
    fields = parts[0].split(".", 2)
    try:
        if len(fields) == 3:
            compute = _parse_field(fields[0], "c")
            slices = _parse_field(fields[1], "g")
            gb = _parse_field(fields[2], "gb")
        elif len(fields) == 2:
            slices = _parse_field(fields[0], "g")
            gb = _parse_field(fields[1], "gb")
            compute = slices
        else:
            raise ValueError("parsed wrong number of fields, expected 2 or 3")
    except ValueError as exc:
        raise ValueError("cannot parse fields of '%s': %s" % (profile, exc))
    if len(parts) == 1:
        return ParsedProfile(compute, slices, gb)
    try:
        attributes = _parse_attributes(parts[1])
    except ValueError as exc:
        raise ValueError("cannot parse attributes of '%s': %s" % (profile, exc))
    if len(minus) == 2:
        return ParsedProfile(compute, slices, gb, negative_attributes=attributes)
    return ParsedProfile(compute, slices, gb, attributes=attributes)
