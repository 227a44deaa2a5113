# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The shipped default named MIG configs (files/mig-configs/default.yaml).

The checker here is deliberately independent of plugins/module_utils/mig/spec.py: it restates
mig-parted's v1 rules (api/spec/v1/spec.go) in a few lines, so a bug in the product's parser
cannot hide a bug in the shipped data and vice versa.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "files" / "mig-configs" / "default.yaml"

# mig-parted v0.15.0 deployments/systemd/config-default.yaml, by name.
UPSTREAM_NAMES = [
    "all-disabled", "all-enabled",
    "all-1g.5gb", "all-1g.5gb.me", "all-2g.10gb", "all-3g.20gb", "all-4g.20gb", "all-7g.40gb",
    "all-1g.10gb", "all-1g.10gb.me", "all-1g.20gb", "all-2g.20gb", "all-3g.40gb", "all-4g.40gb", "all-7g.80gb",
    "all-1g.6gb", "all-1g.6gb.me", "all-2g.12gb", "all-2g.12gb.me", "all-4g.24gb",
    "all-1g.12gb", "all-1g.12gb.me", "all-1g.24gb", "all-2g.24gb", "all-1g.24gb.me",
    "all-3g.47gb", "all-4g.47gb", "all-7g.94gb", "all-3g.48gb", "all-4g.48gb", "all-7g.96gb",
    "all-1g.18gb", "all-1g.18gb.me", "all-1g.35gb", "all-2g.35gb", "all-3g.71gb", "all-4g.71gb", "all-7g.141gb",
    "all-1g.36gb", "all-2g.36gb", "all-3g.72gb", "all-4g.72gb", "all-7g.144gb",
    "all-1g.23gb", "all-1g.23gb.me", "all-1g.45gb", "all-2g.45gb", "all-3g.90gb", "all-4g.90gb", "all-7g.180gb",
    "all-1g.47gb", "all-2g.47gb", "all-3g.93gb", "all-4g.93gb", "all-7g.186gb",
    "all-1g.34gb", "all-1g.34gb.me", "all-1g.67gb", "all-2g.67gb", "all-3g.135gb", "all-4g.135gb", "all-7g.269gb",
    "all-1g.35gb.me", "all-1g.70gb", "all-2g.70gb", "all-3g.139gb", "all-4g.139gb", "all-7g.278gb",
    "all-1g.24gb.gfx", "all-1g.24gb.me.all", "all-1g.24gb-me", "all-2g.48gb", "all-2g.48gb.gfx",
    "all-2g.48gb.me.all", "all-2g.48gb-me", "all-4g.96gb", "all-4g.96gb.gfx",
    "all-3g.95gb", "all-4g.95gb", "all-7g.189gb",
    "all-balanced",
]

# Names this collection adds on top of upstream (none today); they must never shadow an upstream name.
EXTRA_NAMES: list[str] = []

A100_40GB = ["0x20B010DE", "0x20B110DE", "0x20F110DE", "0x20F610DE"]
CLASS_80GB = ["0x233010DE", "0x233110DE", "0x232210DE", "0x20B210DE", "0x20B510DE", "0x20F310DE", "0x20F510DE", "0x232410DE"]
CLASS_96GB = ["0x234210DE", "0x233D10DE", "0x20B610DE", "0x232910DE"]

# The three configs whose entries carry device-filters, entry by entry.
FILTERED = {
    "all-1g.10gb": [
        (CLASS_80GB, {"1g.10gb": 7}),
        (A100_40GB, {"1g.10gb": 4}),
    ],
    "all-1g.35gb": [
        (["0x233510DE"], {"1g.35gb": 4}),
        (["0x31C210DE"], {"1g.35gb": 7}),
    ],
    "all-balanced": [
        (["0x294110DE"], {"1g.23gb": 2, "2g.47gb": 1, "3g.93gb": 1}),
        (["0x31C210DE"], {"1g.35gb": 2, "2g.70gb": 1, "3g.139gb": 1}),
        (["0x2BB510DE"], {"1g.24gb": 2, "2g.48gb": 1}),
        (["0x290110DE"], {"1g.23gb": 2, "2g.45gb": 1, "3g.90gb": 1}),
        (["0x318210DE"], {"1g.34gb": 2, "2g.67gb": 1, "3g.135gb": 1}),
        (["0x234810DE"], {"1g.18gb": 2, "2g.36gb": 1, "3g.72gb": 1}),
        (["0x233510DE", "0x233B10DE"], {"1g.18gb": 2, "2g.35gb": 1, "3g.71gb": 1}),
        (["0x232110DE", "0x233A10DE"], {"1g.12gb": 2, "2g.24gb": 1, "3g.47gb": 1}),
        (CLASS_80GB, {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}),
        (A100_40GB, {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}),
        (["0x20B710DE"], {"1g.6gb": 2, "2g.12gb": 1}),
        (CLASS_96GB, {"1g.12gb": 2, "2g.24gb": 1, "3g.48gb": 1}),
    ],
}

# A sample of single-entry configs with their counts (the single-profile maximum of that model).
SINGLE_ENTRY_SAMPLE = {
    "all-1g.5gb": {"1g.5gb": 7},
    "all-1g.5gb.me": {"1g.5gb+me": 1},
    "all-2g.10gb": {"2g.10gb": 3},
    "all-3g.20gb": {"3g.20gb": 2},
    "all-7g.40gb": {"7g.40gb": 1},
    "all-1g.6gb": {"1g.6gb": 4},
    "all-2g.12gb.me": {"2g.12gb+me": 1},
    "all-1g.24gb": {"1g.24gb": 4},
    "all-1g.24gb.me.all": {"1g.24gb+me.all": 1},
    "all-1g.24gb-me": {"1g.24gb-me": 4},
    "all-4g.96gb.gfx": {"4g.96gb+gfx": 1},
    "all-7g.141gb": {"7g.141gb": 1},
    "all-7g.278gb": {"7g.278gb": 1},
}

ENTRY_KEYS = {"device-filter", "devices", "mig-enabled", "mig-devices"}
DEVICE_FILTER = re.compile(r"^0x[0-9A-F]{4}10DE(:0x[0-9A-F]{8})?$")
# go-nvlib's profile grammar: [<C>c.]<G>g.<GB>gb[+me|+me.all|+gfx][-me]
PROFILE = re.compile(r"^(?:(?P<c>\d+)c\.)?(?P<g>\d+)g\.(?P<gb>\d+)gb(?:\+me|\+me\.all|\+gfx)?(?:-me)?$")


def is_integer(value: Any) -> bool:
    """An integer and not a bool (bool is an int subclass, but `true` is no GPU index or count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def entry_problems(entry: Any) -> list[str]:
    """mig-parted v1 rules for one entry of a named config; empty when the entry is valid."""
    if not isinstance(entry, dict):
        return ["entry is not a mapping"]
    problems = ["unexpected field %r" % key for key in entry if key not in ENTRY_KEYS]
    devices = entry.get("devices")
    if devices != "all" and not (isinstance(devices, list) and all(is_integer(i) and i >= 0 for i in devices)):
        problems.append("devices must be 'all' or a list of GPU indices, got %r" % (devices,))
    enabled = entry.get("mig-enabled")
    if not isinstance(enabled, bool):
        problems.append("mig-enabled must be a boolean, got %r" % (enabled,))
    mig_devices = entry.get("mig-devices")
    if enabled is True and not isinstance(mig_devices, dict):
        problems.append("mig-enabled: true needs a mig-devices mapping")
    if enabled is False and mig_devices:
        problems.append("mig-enabled: false with non-empty mig-devices")
    if isinstance(mig_devices, dict):
        for profile, count in mig_devices.items():
            match = PROFILE.match(str(profile))
            if not match:
                problems.append("mig-devices key %r is not a MIG profile" % (profile,))
            elif match.group("c") and int(match.group("c")) > int(match.group("g")):
                problems.append("profile %r has more compute slices than GPU slices" % (profile,))
            if not is_integer(count) or count < 0:
                problems.append("count of %r must be an integer >= 0, got %r" % (profile, count))
        if mig_devices and not any(is_integer(c) and c > 0 for c in mig_devices.values()):
            problems.append("mig-devices has no count above 0")
    if "device-filter" in entry:
        problems.extend(filter_problems(entry["device-filter"]))
    return problems


def filter_problems(device_filter: Any) -> list[str]:
    values = device_filter if isinstance(device_filter, list) else [device_filter]
    if not values:
        return ["device-filter is an empty list"]
    return ["device-filter value %r is not 0xDDDDVVVV[:0xSSSSVVVV]" % (v,) for v in values if not (isinstance(v, str) and DEVICE_FILTER.match(v))]


@pytest.fixture(scope="module")
def document() -> dict:
    with DEFAULT_CONFIG.open(encoding="utf-8") as stream:
        return yaml.safe_load(stream)


@pytest.fixture(scope="module")
def configs(document: dict) -> dict:
    return document["mig-configs"]


def test_document_is_mig_parted_v1(document: dict) -> None:
    assert set(document) == {"version", "mig-configs"}
    assert document["version"] == "v1"
    assert isinstance(document["mig-configs"], dict) and document["mig-configs"]


def test_holds_exactly_the_81_upstream_names_plus_declared_extras(configs: dict) -> None:
    assert len(UPSTREAM_NAMES) == 81 == len(set(UPSTREAM_NAMES))
    assert not set(EXTRA_NAMES) & set(UPSTREAM_NAMES)
    assert sorted(configs) == sorted(UPSTREAM_NAMES + EXTRA_NAMES)


def test_yaml_has_no_duplicate_config_names() -> None:
    # PyYAML keeps the last of two equal keys silently; count the keys in the text instead.
    names = re.findall(r"^  ([A-Za-z0-9][^:\s]*):\s*$", DEFAULT_CONFIG.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(names) == len(set(names)) == len(UPSTREAM_NAMES + EXTRA_NAMES)


@pytest.mark.parametrize("name", UPSTREAM_NAMES)
def test_every_entry_is_valid(configs: dict, name: str) -> None:
    entries = configs[name]
    assert isinstance(entries, list) and entries, "%s has no entries" % name
    for position, entry in enumerate(entries):
        assert entry_problems(entry) == [], "%s entry %d" % (name, position)


def test_disabled_and_enabled(configs: dict) -> None:
    assert configs["all-disabled"] == [{"devices": "all", "mig-enabled": False}]
    assert configs["all-enabled"] == [{"devices": "all", "mig-enabled": True, "mig-devices": {}}]


@pytest.mark.parametrize("name", sorted(set(UPSTREAM_NAMES) - set(FILTERED) - {"all-disabled", "all-enabled"}))
def test_single_entry_configs_apply_one_profile_to_all_gpus(configs: dict, name: str) -> None:
    (entry,) = configs[name]
    assert "device-filter" not in entry
    assert entry["devices"] == "all" and entry["mig-enabled"] is True
    (profile,) = entry["mig-devices"]
    # The config name is the profile with '+' spelled '.'.
    assert name == "all-" + profile.replace("+", ".")


@pytest.mark.parametrize("name, expected", sorted(SINGLE_ENTRY_SAMPLE.items()))
def test_single_entry_counts(configs: dict, name: str, expected: dict) -> None:
    assert configs[name][0]["mig-devices"] == expected


@pytest.mark.parametrize("name", sorted(FILTERED))
def test_filtered_configs_match_upstream_entry_by_entry(configs: dict, name: str) -> None:
    got = [(entry["device-filter"], entry["mig-devices"]) for entry in configs[name]]
    assert got == FILTERED[name]
    for entry in configs[name]:
        assert entry["devices"] == "all" and entry["mig-enabled"] is True


def test_device_filters_are_full_pci_id_strings(configs: dict) -> None:
    for name, entries in configs.items():
        for entry in entries:
            if "device-filter" in entry:
                assert isinstance(entry["device-filter"], list), name
                assert filter_problems(entry["device-filter"]) == [], name


def test_no_gpu_is_matched_twice_within_a_filtered_config(configs: dict) -> None:
    # mig-parted applies every matching entry in order; overlapping filters would stack layouts.
    for name in FILTERED:
        seen: set[str] = set()
        for entry in configs[name]:
            ids = set(entry["device-filter"])
            assert not ids & seen, "%s: %s" % (name, sorted(ids & seen))
            seen |= ids


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 7}, "extra": 1}, "unexpected field"),
        ({"devices": 0, "mig-enabled": True, "mig-devices": {}}, "devices must be"),
        ({"devices": "all", "mig-enabled": "yes", "mig-devices": {}}, "mig-enabled must be"),
        ({"devices": "all", "mig-enabled": True}, "needs a mig-devices"),
        ({"devices": "all", "mig-enabled": False, "mig-devices": {"1g.5gb": 1}}, "non-empty mig-devices"),
        ({"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5": 1}}, "not a MIG profile"),
        ({"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": -1}}, "integer >= 0"),
        ({"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 0}}, "no count above 0"),
        ({"device-filter": "0x20B0", "devices": "all", "mig-enabled": False}, "not 0xDDDDVVVV"),
    ],
)
def test_checker_rejects_invalid_entries(entry: dict, problem: str) -> None:
    # Guards the guard: the checker above must be able to fail.
    assert any(problem in p for p in entry_problems(entry))


def test_the_product_spec_parser_reads_the_file_the_same_way(configs: dict) -> None:
    # Cross-check with plugins/module_utils/mig/spec.py: same names, same entries.
    collections = str(Path(__file__).resolve().parents[2] / ".collections")
    if collections not in sys.path:
        sys.path.insert(0, collections)
    from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import load_spec_text

    spec = load_spec_text(DEFAULT_CONFIG.read_text(encoding="utf-8"), str(DEFAULT_CONFIG))
    assert spec.names() == sorted(configs)
    for name, entries in spec.configs.items():
        assert [entry.to_dict() for entry in entries] == configs[name], name


@pytest.mark.parametrize("name", sorted(FILTERED))
def test_every_listed_pci_id_is_matched_by_exactly_one_entry(name: str) -> None:
    collections = str(Path(__file__).resolve().parents[2] / ".collections")
    if collections not in sys.path:
        sys.path.insert(0, collections)
    from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import load_spec_text

    entries = load_spec_text(DEFAULT_CONFIG.read_text(encoding="utf-8")).configs[name]
    for _filter, layout in FILTERED[name]:
        for pci_id in _filter:
            matched = [dict(entry.mig_devices) for entry in entries if entry.matches(0, pci_id, "0x000010DE")]
            assert matched == [layout], (name, pci_id)
    # A GPU the config does not list (here an A30 for all-1g.10gb) is matched by nothing.
    if name != "all-balanced":
        assert not [entry for entry in entries if entry.matches(0, "0x20B710DE")]
