# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Profile names: go-nvlib's parser and memory formula."""

from __future__ import annotations

import pytest

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.naming import memory_gb, parse_profile, profile_name


@pytest.mark.parametrize("mib,total_mib,gb", [
    (4864, 40960, 5), (9856, 40960, 10), (40192, 40960, 40),      # A100-40GB
    (80896, 81920, 80), (9728, 81920, 10),                         # A100-80GB
    (71168, 143771, 71),                                           # H200 3g: 70.5 rounds up, not to even
    (20992, 183359, 23),                                           # B200 1g: 22.5 rounds up
    (47488, 95830, 47), (95360, 95830, 94),                        # H100 NVL
    (5952, 24576, 6), (24000, 24576, 24),                          # A30
])
def test_memory_gb_matches_go_nvlib(mib, total_mib, gb):
    assert memory_gb(mib, total_mib * 1024 * 1024) == gb


def test_memory_gb_rejects_zero_total():
    with pytest.raises(ValueError):
        memory_gb(10, 0)


def test_profile_name_forms():
    assert profile_name(1, 5) == "1g.5gb"
    assert profile_name(1, 5, "+me") == "1g.5gb+me"
    assert profile_name(3, 20, "", compute_slices=1) == "1c.3g.20gb"
    assert profile_name(3, 20, "", compute_slices=3) == "3g.20gb"


@pytest.mark.parametrize("text", [
    "1g.5gb", "1c.2g.10gb", "1g.10gb+me", "1g.24gb+me.all", "4g.96gb+gfx", "1g.24gb-me", "7g.80gb",
])
def test_parse_valid_profiles_round_trip(text):
    assert str(parse_profile(text)) == text


@pytest.mark.parametrize("text,fragment", [
    ("", "empty string"),
    ("1g", "wrong number of fields"),
    ("1x.5gb", "missing 'g'"),
    ("1g.5", "missing 'gb'"),
    ("ag.5gb", "malformed number"),
    (" 1g.5gb", "spaces"),
    ("1g.5gb+", "empty attribute"),
    ("1g.5gb+me,me", "non unique"),
    ("1g.5gb+1me", "begins with a number"),
    ("1g.5gb+me.", "begins/ends with a dot"),
    ("1g.5gb+m_e", "non alpha-numeric"),
    ("1g.5gb+me-me", "both '+/-'"),
    ("1c.1c.1g.5gb", "missing 'g'"),
])
def test_parse_invalid_profiles(text, fragment):
    with pytest.raises(ValueError, match=None) as info:
        parse_profile(text)
    assert fragment in str(info.value)


def test_parse_shape_ignores_memory():
    assert parse_profile("7g.79gb").shape() == parse_profile("7g.80gb").shape()
    assert parse_profile("1g.5gb+me").shape() != parse_profile("1g.5gb").shape()
    assert not parse_profile("1c.3g.20gb").is_gpu_instance_profile
