# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile config input for mig_config's module_utils: generated and hand-written cases.

Every input is either accepted or refused with a SpecError / PlanError whose message is short and
quotes no more than an excerpt; nothing else is ever raised, and no case costs more than a bounded
amount of memory (measured with tracemalloc). The case counts come from the Hypothesis profile
(conftest.py: ``ci`` in ``make test``, ``release`` with GPUOPS_HYPOTHESIS_PROFILE=release).
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import given, strategies as st

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig import spec as spec_module
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.plan import PlanError, build_plan
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import (
    MAX_DOCUMENT_BYTES, SpecError, check_document_bounds, decode_config_bytes, load_config_text, load_spec_text, parse_spec,
    read_config_file,
)
from mig_fixtures import gpu

REPO = Path(__file__).resolve().parents[3]
DEFAULT_TEXT = (REPO / "files" / "mig-configs" / "default.yaml").read_text()
MESSAGE_LIMIT = 1000
MEMORY_LIMIT = 200 * 1024 * 1024
SECRET = "s3cr3t-line-of-the-file"


def refused_or_accepted(function, *args):
    """Run ``function``; only a SpecError or PlanError may come out, with a short message.

    The peak memory allocated by the call is measured, and must stay under MEMORY_LIMIT.
    """
    tracemalloc.start()
    try:
        try:
            value = function(*args)
        except (SpecError, PlanError) as exc:
            message = str(exc)
            assert len(message) <= MESSAGE_LIMIT + 200 * len(getattr(exc, "problems", ()) or ()), message[:300]
            assert SECRET not in message
            return exc
        return value
    finally:
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < MEMORY_LIMIT, "a case allocated %d bytes" % peak


# --- strategies ----------------------------------------------------------------------------------

PROFILES = st.sampled_from(["1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb", "1g.10gb", "1g.5gb+me", "1c.3g.20gb",
                            "1g.5gb\n", "", "7g", "g.gb", "1g.5gb+me+me", "9999999g.1gb"])
HOSTILE_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
INTS = st.one_of(st.integers(-5, 100), st.integers(), st.just(2 ** 31), st.just(2 ** 64))
SCALARS = st.one_of(st.none(), st.booleans(), INTS, st.floats(allow_nan=True), HOSTILE_TEXT, PROFILES,
                    st.sampled_from(["all", "v1", "0x20B010DE", "0x20B010DE:0x145F10DE", "-1", "true"]))


def entries():
    entry = st.fixed_dictionaries(
        {"devices": st.one_of(st.just("all"), st.lists(INTS, max_size=4), SCALARS),
         "mig-enabled": st.one_of(st.booleans(), SCALARS)},
        optional={"mig-devices": st.one_of(st.dictionaries(PROFILES, INTS, max_size=4), SCALARS),
                  "device-filter": st.one_of(st.sampled_from(["0x20B010DE", "0x20B010DE:0x145F10DE", "zz"]), SCALARS),
                  "extra": SCALARS})
    return st.one_of(entry, SCALARS, st.lists(SCALARS, max_size=3))


DOCUMENTS = st.one_of(
    st.fixed_dictionaries({"version": st.one_of(st.just("v1"), SCALARS),
                           "mig-configs": st.one_of(st.dictionaries(st.one_of(HOSTILE_TEXT, st.just("c")),
                                                                    st.one_of(st.lists(entries(), max_size=4), SCALARS),
                                                                    max_size=3), SCALARS)}),
    st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(HOSTILE_TEXT, inner, max_size=4)),
                 max_leaves=30),
)


def nested(depth: int, flow: bool) -> str:
    return ("[" * depth + "]" * depth) if flow else "".join("  " * i + "- \n" for i in range(depth)) + "  " * depth + "x\n"


def alias_bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += ["a%d: &a%d [%s]" % (i, i, ",".join("*a%d" % (i - 1) for _i in range(9))) for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE_YAML = st.one_of(
    st.text(alphabet=st.sampled_from(list("[]{}:,-&*!|>'\"#%@`? \n\t01ab.gv") + ["\x00", "\ufeff", "\u2028"]),
            max_size=200),
    st.builds(nested, st.integers(1, 6000), st.booleans()),
    st.builds(alias_bomb, st.integers(1, 12)),
    st.builds(lambda n: "version: v1\nmig-configs:\n  c:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {'1g.5gb': %s}\n" % n,
              st.one_of(st.integers(), st.integers(4000, 9000).map(lambda k: "9" * k), st.just("0x" + "f" * 5000))),
    st.builds(lambda cut, junk: DEFAULT_TEXT[:cut] + junk + DEFAULT_TEXT[cut:], st.integers(0, len(DEFAULT_TEXT)),
              st.text(max_size=20)),
    st.builds(yaml.safe_dump, DOCUMENTS),
)


# --- generated cases -----------------------------------------------------------------------------


@given(DOCUMENTS)
def test_generated_documents_are_accepted_or_refused_clearly(document):
    outcome = refused_or_accepted(parse_spec, document)
    if not isinstance(outcome, SpecError):
        # An accepted document is planned against a GPU: refused with PlanError or planned.
        for name in outcome.names():
            refused_or_accepted(build_plan, name, outcome.configs[name], [gpu("NVIDIA A100-SXM4-40GB", current=True)])


@given(HOSTILE_YAML)
def test_generated_yaml_text_is_accepted_or_refused_clearly(text):
    refused_or_accepted(load_spec_text, text, "config")


@given(st.binary(max_size=300))
def test_generated_bytes_are_text_or_refused_clearly(data):
    refused_or_accepted(decode_config_bytes, data, "config_file x")


@given(st.lists(PROFILES, min_size=1, max_size=3), st.lists(st.integers(0, 2 ** 40), min_size=1, max_size=3))
def test_every_matching_entry_is_checked_not_only_the_last(profiles, counts):
    """Item 10: an entry a later one overrides for the same GPU is validated too."""
    first = {"devices": [0], "mig-enabled": True, "mig-devices": dict(zip(profiles, counts))}
    last = {"devices": "all", "mig-enabled": True, "mig-devices": {"7g.40gb": 1}}
    outcome = refused_or_accepted(load_spec_text, yaml.safe_dump({"version": "v1", "mig-configs": {"c": [first, last]}}))
    if isinstance(outcome, SpecError):
        return
    planned = refused_or_accepted(build_plan, "c", outcome.configs["c"], [gpu("NVIDIA A100-SXM4-40GB", current=True)])
    valid = {"1g.5gb": 7, "2g.10gb": 3, "3g.20gb": 2, "4g.20gb": 1, "7g.40gb": 1, "1g.10gb": 4, "1g.5gb+me": 1}
    if any(count and (profile not in valid or count > valid[profile]) for profile, count in first["mig-devices"].items()):
        assert isinstance(planned, PlanError), first


# --- hand-written cases, one per reported problem ------------------------------------------------


def test_the_shipped_configs_fit_the_bounds_with_room_to_spare():
    document = load_config_text(DEFAULT_TEXT)
    assert len(parse_spec(document).names()) == 81
    assert len(DEFAULT_TEXT.encode()) * 50 < MAX_DOCUMENT_BYTES


def test_an_alias_bomb_is_refused_without_expanding_it():
    text = alias_bomb(9)  # 9^9 strings once expanded, a few hundred bytes
    assert len(text) < 1000
    error = refused_or_accepted(load_config_text, text)
    assert isinstance(error, SpecError) and "aliases are expanded" in str(error)


def test_a_recursive_alias_is_refused():
    error = refused_or_accepted(load_config_text, "a: &a [*a]\n")
    assert isinstance(error, SpecError)


def test_aliases_that_stay_small_are_accepted():
    text = ("version: v1\nmig-configs:\n  a: &e\n    - devices: all\n      mig-enabled: true\n      mig-devices: {'1g.5gb': 7}\n"
            "  b: *e\n")
    assert load_spec_text(text).names() == ["a", "b"]


@pytest.mark.parametrize("depth,flow", [(5000, True), (500, False), (40, False)])
def test_deep_nesting_is_refused_not_a_recursion_error(depth, flow):
    error = refused_or_accepted(load_config_text, nested(depth, flow))
    # Refused by the depth bound, or by libyaml's own (1,000 levels) when it reads ahead.
    assert isinstance(error, SpecError) and ("levels deep" in str(error) or "nesting depth" in str(error))


def test_deep_nesting_of_a_dictionary_argument_is_refused():
    document: dict = {}
    node = document
    for _level in range(5000):
        node["x"] = {}
        node = node["x"]
    error = refused_or_accepted(check_document_bounds, document)
    assert isinstance(error, SpecError) and "levels deep" in str(error)


def test_an_integer_of_thousands_of_digits_is_refused():
    text = "version: v1\nmig-configs:\n  c:\n    - devices: [%s]\n      mig-enabled: false\n" % ("9" * 5000)
    error = refused_or_accepted(load_spec_text, text)
    assert isinstance(error, SpecError) and "an integer of 5000 digits" in str(error)


def test_a_count_of_two_to_the_31_is_refused_in_the_spec():
    text = "version: v1\nmig-configs:\n  c:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {'1g.5gb': 2147483648}\n"
    error = refused_or_accepted(load_spec_text, text)
    assert isinstance(error, SpecError) and "no GPU offers more than 64" in str(error)


def test_a_nul_byte_or_non_utf8_is_refused_clearly():
    assert "NUL" in str(refused_or_accepted(decode_config_bytes, b"version: v1\x00", "config_file f"))
    assert "not UTF-8" in str(refused_or_accepted(decode_config_bytes, b"version: \xff\xfe", "config_file f"))
    assert "NUL" in str(refused_or_accepted(load_config_text, "version: v1\x00"))


def test_a_big_document_is_refused_before_it_is_parsed():
    text = "# " + "x" * MAX_DOCUMENT_BYTES + "\n"
    error = refused_or_accepted(load_config_text, text)
    assert isinstance(error, SpecError) and "more than the" in str(error)


def test_a_file_that_is_not_a_config_is_never_shown(tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:%s:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n" % SECRET)
    error = refused_or_accepted(lambda: load_spec_text(read_config_file(str(passwd)), "config_file %s" % passwd))
    assert isinstance(error, SpecError) and "got a str" in str(error) and "root:x" not in str(error)
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: v1\nmig-configs: [%s\n" % SECRET)
    error = refused_or_accepted(lambda: load_spec_text(read_config_file(str(broken)), "config_file broken"))
    assert isinstance(error, SpecError) and "line" in str(error) and SECRET not in str(error)


def test_special_files_are_refused_before_they_are_read(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # Opening a FIFO for reading would wait for a writer forever: it is refused from its stat.
    assert "a FIFO" in str(refused_or_accepted(read_config_file, str(fifo)))
    assert "a device" in str(refused_or_accepted(read_config_file, "/dev/zero"))
    assert "a directory" in str(refused_or_accepted(read_config_file, str(tmp_path)))
    assert "cannot read it" in str(refused_or_accepted(read_config_file, str(tmp_path / "absent")))
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_DOCUMENT_BYTES + 1))
    assert "more than the" in str(refused_or_accepted(read_config_file, str(big)))


def test_limits_are_the_documented_ones():
    text = (REPO / "docs" / "config-format.md").read_text()
    for name in ("MAX_DOCUMENT_BYTES", "MAX_DOCUMENT_NODES", "MAX_DOCUMENT_DEPTH", "MAX_SCALAR_CHARS", "MAX_INTEGER_DIGITS",
                 "MAX_PROFILE_COUNT", "MAX_CONFIG_NAME_CHARS"):
        assert "{0:,}".format(getattr(spec_module, name)) in text, name
