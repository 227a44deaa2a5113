# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mig-parted v1 validation (api/spec/v1/spec.go), one test per rule."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import (
    DeviceFilter, SpecError, load_spec_text, parse_spec,
)

VALID = {
    "version": "v1",
    "mig-configs": {
        "all-disabled": [{"devices": "all", "mig-enabled": False}],
        "all-enabled": [{"devices": "all", "mig-enabled": True, "mig-devices": {}}],
        "custom": [
            {"devices": [0, 1], "mig-enabled": False},
            {"device-filter": "0x20B010DE", "devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 7}},
            {"device-filter": ["0x20B210DE", "0x20B510DE:0x151F10DE"], "devices": [2], "mig-enabled": True,
             "mig-devices": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1, "1c.3g.40gb": 0}},
        ],
    },
}


def doc_with(config_entry):
    return {"version": "v1", "mig-configs": {"c": [config_entry]}}


def error_of(document) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(document)
    return str(info.value)


def test_valid_document_parses_in_order():
    spec = parse_spec(copy.deepcopy(VALID))
    assert spec.names() == ["all-disabled", "all-enabled", "custom"]
    entries = spec.configs["custom"]
    assert [e.position for e in entries] == [0, 1, 2]
    assert entries[0].devices == (0, 1) and not entries[0].mig_enabled
    assert entries[1].devices is None and entries[1].mig_devices == (("1g.5gb", 7),)
    assert entries[2].device_filter[1].subsystem == 0x151F10DE
    assert spec.configs["all-enabled"][0].mig_devices == ()


def test_version_required_and_v1():
    assert "version" in error_of({"mig-configs": VALID["mig-configs"]})
    assert "unknown version 'v2'" in error_of({"version": "v2", "mig-configs": VALID["mig-configs"]})
    assert "unknown version" in error_of({})
    assert "unknown version" in error_of(None)


def test_top_level_keys_and_type():
    assert "unexpected field" in error_of({"version": "v1", "mig-configs": VALID["mig-configs"], "extra": 1})
    assert "expected a mapping" in error_of(["version", "v1"])


def test_mig_configs_non_empty():
    assert "at least one named config" in error_of({"version": "v1", "mig-configs": {}})
    assert "at least one named config" in error_of({"version": "v1"})
    assert "mig-configs.c: at least one entry" in error_of({"version": "v1", "mig-configs": {"c": []}})
    assert "expected a list" in error_of({"version": "v1", "mig-configs": {"c": {"devices": "all"}}})


def test_entry_keys_only_the_four():
    message = error_of(doc_with({"devices": "all", "mig-enabled": True, "mig-devices": {}, "1g.5gb": 7}))
    assert "mig-configs.c[0]" in message and "'1g.5gb'" in message and "unexpected field" in message


def test_shorthand_profile_keys_rejected_like_mig_parted():
    # mig-parted's examples always spell mig-devices out; spec.go rejects profile keys at entry level.
    assert "unexpected field" in error_of(doc_with({"devices": "all", "mig-enabled": True, "1g.5gb": 7}))


@pytest.mark.parametrize("field", ["devices", "mig-enabled"])
def test_required_fields(field):
    entry = {"devices": "all", "mig-enabled": False}
    del entry[field]
    assert "missing required field %r" % field in error_of(doc_with(entry))


@pytest.mark.parametrize("value,fragment", [
    ("some", "invalid string 'some'"),
    (0, "bare integer"),
    ([0, "1"], "invalid GPU index '1'"),
    ([True], "invalid GPU index True"),
    ([1.0], "invalid GPU index 1.0"),
    ([-1], "negative GPU index -1"),
])
def test_devices_all_or_list_of_ints(value, fragment):
    message = error_of(doc_with({"devices": value, "mig-enabled": False}))
    assert "mig-configs.c[0].devices" in message and fragment in message


def test_mig_enabled_must_be_bool():
    message = error_of(doc_with({"devices": "all", "mig-enabled": "yes"}))
    assert "mig-configs.c[0].mig-enabled" in message and "'yes'" in message


def test_mig_devices_required_when_enabled():
    assert "mig-configs.c[0].mig-devices: missing" in error_of(doc_with({"devices": "all", "mig-enabled": True}))
    assert "missing" in error_of(doc_with({"devices": "all", "mig-enabled": True, "mig-devices": None}))


def test_mig_devices_forbidden_when_disabled():
    message = error_of(doc_with({"devices": "all", "mig-enabled": False, "mig-devices": {"1g.5gb": 1}}))
    assert "included when 'mig-enabled' is false" in message
    parse_spec(doc_with({"devices": "all", "mig-enabled": False, "mig-devices": {}}))


@pytest.mark.parametrize("devices,fragment", [
    ({"1g.5gbx": 1}, "invalid format for '1g.5gbx'"),
    ({"1g.5gb": -1}, "invalid count -1"),
    ({"1g.5gb": "2"}, "invalid count '2'"),
    ({"1g.5gb": 1.5}, "invalid count 1.5"),
    ({"1g.5gb": 0, "2g.10gb": 0}, "all counts are 0"),
    (["1g.5gb"], "expected a mapping"),
])
def test_mig_devices_profiles_and_counts(devices, fragment):
    message = error_of(doc_with({"devices": "all", "mig-enabled": True, "mig-devices": devices}))
    assert "mig-configs.c[0].mig-devices" in message and fragment in message


@pytest.mark.parametrize("profile", ["1g.5gb+me", "1g.24gb+me.all", "4g.96gb+gfx", "1g.24gb-me", "1c.3g.20gb"])
def test_mig_devices_accept_every_profile_form(profile):
    parse_spec(doc_with({"devices": "all", "mig-enabled": True, "mig-devices": {profile: 1}}))


@pytest.mark.parametrize("value,fragment", [
    (548474078, "quote hexadecimal IDs"),
    (["0x20B010DE", 5], "quote hexadecimal IDs"),
    ("0xZZ", "invalid device ID '0xZZ'"),
    ("0x20B010DE:0x1:0x2", "invalid device ID"),
    ("0x1FFFFFFFF", "invalid device ID"),
    (" 0x20B010DE", "invalid device ID"),
])
def test_device_filter_format(value, fragment):
    message = error_of(doc_with({"device-filter": value, "devices": "all", "mig-enabled": False}))
    assert "mig-configs.c[0].device-filter" in message and fragment in message


def test_device_filter_matching():
    plain = DeviceFilter.parse("0x20B010DE")
    assert plain.matches("0x20B010DE", "0x134F10DE")
    assert not plain.matches("0x20B210DE")
    decimal = DeviceFilter.parse(str(0x20B010DE))
    assert decimal == plain
    with_sub = DeviceFilter.parse("0x20B010DE:0x134F10DE")
    assert with_sub.matches("0x20B010DE", "0x134F10DE")
    assert not with_sub.matches("0x20B010DE", "0x145F10DE")
    assert str(with_sub) == "0x20B010DE:0x134F10DE"


def test_entry_matching_devices_and_filter():
    spec = parse_spec(copy.deepcopy(VALID))
    first, second, third = spec.configs["custom"]
    assert first.matches(1, "0x20B010DE") and not first.matches(2, "0x20B010DE")
    assert second.matches(5, "0x20B010DE") and not second.matches(5, "0x20B210DE")
    assert third.matches(2, "0x20B210DE") and not third.matches(3, "0x20B210DE")
    assert third.matches(2, "0x20B510DE", "0x151F10DE") and not third.matches(2, "0x20B510DE", "0x0")


def test_select_config():
    spec = parse_spec(copy.deepcopy(VALID))
    assert spec.select("custom")[0] == "custom"
    with pytest.raises(SpecError, match="unknown named config 'nope'"):
        spec.select("nope")
    with pytest.raises(SpecError, match="config_name is required"):
        spec.select(None)
    single = parse_spec(doc_with({"devices": "all", "mig-enabled": False}))
    assert single.select(None)[0] == "c"


def test_config_names_must_be_strings():
    assert "invalid config name 3" in error_of({"version": "v1", "mig-configs": {3: [{"devices": "all", "mig-enabled": False}]}})


def test_load_yaml_text():
    spec = load_spec_text("version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: false\n")
    assert spec.names() == ["a"]
    with pytest.raises(SpecError, match="malformed YAML"):
        load_spec_text("version: v1\nmig-configs: [\n")


def test_entry_to_dict_round_trips():
    spec = parse_spec(copy.deepcopy(VALID))
    again = parse_spec({"version": "v1", "mig-configs": {"x": [e.to_dict() for e in spec.configs["custom"]]}})
    assert [e.to_dict() for e in again.configs["x"]] == [e.to_dict() for e in spec.configs["custom"]]
