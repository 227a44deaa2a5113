# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every named config of files/mig-configs/default.yaml (mig-parted's default config) on a
simulated GPU of every model it names: the collection's read → plan → apply (what mig_config and
the boot-time applier run) either leaves NVML in the layout the config asks for, or refuses before
any NVML change with a message naming the config, the model and the profile it cannot hold.

A config with device-filters runs on each model its filters name; one without runs on every
simulated MIG model. What each case must do is restated here from the simulator's model table
(profile names, counts, mig-parted's renaming tolerance), independently of the planner.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
import yaml

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.plan import PlanError, build_plan
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.reconcile import apply_reading, read_and_plan
from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.spec import parse_spec
from ansible_collections.gpuops.nvidia.plugins.module_utils.nvml import open_nvml

from gpuops_sim import nvml as sim
from gpuops_sim.nvml import state as sim_state
from gpuops_sim.nvml.models import MODELS, GpuModel

DEFAULT = Path(__file__).resolve().parents[3] / "files" / "mig-configs" / "default.yaml"
DOCUMENT = yaml.safe_load(DEFAULT.read_text(encoding="utf-8"))
CONFIGS: Dict[str, List[Dict[str, Any]]] = DOCUMENT["mig-configs"]
SPEC = parse_spec(DOCUMENT, str(DEFAULT))
MIG_MODELS = [m for m in MODELS if m.mig_capable]
RESET_COMMAND = ["nvidia-smi", "--gpu-reset", "-i", "{index}"]
# plan.py's ALTERNATIVE_NAME_TOLERANCE, restated: a driver that accounts memory differently names
# the same profile a few GB apart (7g.79gb / 7g.80gb, 1g.24gb / 1g.23gb).
RENAME_TOLERANCE = 0.05


def filter_ids(entry: Dict[str, Any]) -> List[int]:
    value = entry.get("device-filter") or []
    return [int(v.split(":")[0], 16) for v in ([value] if isinstance(value, str) else value)]


NAMED_IDS = sorted({pci for entries in CONFIGS.values() for entry in entries for pci in filter_ids(entry)})


def models_for(entries: List[Dict[str, Any]]) -> List[GpuModel]:
    named = {pci for entry in entries for pci in filter_ids(entry)}
    return [m for m in MIG_MODELS if not named or m.pci_device_id in named]


CASES = [pytest.param(name, model, id="%s-%s" % (name, model.aliases[0]))
         for name, entries in CONFIGS.items() for model in models_for(entries)]


def deciding_entry(entries: List[Dict[str, Any]], model: GpuModel) -> Optional[Dict[str, Any]]:
    """mig-parted applies the matching entries in file order: the last one decides."""
    decided = None
    for entry in entries:
        ids = filter_ids(entry)
        if (not ids or model.pci_device_id in ids) and entry["devices"] == "all":
            decided = entry
    return decided


def split(profile: str) -> Tuple[int, int, str]:
    """'1g.24gb+me.all' -> (1, 24, '+me.all')."""
    slices, _dot, rest = profile.partition("g.")
    gb, _unit, suffix = rest.partition("gb")
    return int(slices), int(gb), suffix


def offered_name(model: GpuModel, requested: str) -> Optional[str]:
    """The model's profile a requested name means: the same name, or the unique nearest one of the
    same slices and kind within the renaming tolerance; None when the model has no such profile."""
    names = [p.name for p in model.gi_profiles]
    if requested in names:
        return requested
    slices, gb, suffix = split(requested)
    near = sorted((abs(split(n)[1] - gb), n) for n in names if split(n)[0] == slices and split(n)[2] == suffix)
    if not near or (len(near) > 1 and near[0][0] == near[1][0]):
        return None
    distance, name = near[0]
    return name if distance <= RENAME_TOLERANCE * max(gb, split(name)[1]) else None


def expected_outcome(entry: Dict[str, Any], model: GpuModel) -> Tuple[Optional[Dict[str, int]], Optional[str]]:
    """(the layout NVML must show, None) when the entry fits the model; (None, the profile) when not."""
    if not entry["mig-enabled"]:
        return {}, None
    counts = {p.name: p.instance_count for p in model.gi_profiles}
    layout: Dict[str, int] = {}
    for requested, count in entry["mig-devices"].items():
        name = offered_name(model, requested)
        if name is None or count > counts[name]:
            return None, requested
        layout[name] = layout.get(name, 0) + count
    # nvml.h: a "+me.all" instance takes every media engine; only "-me" instances fit beside it.
    everything = [n for n in layout if n.endswith("+me.all")]
    beside = [n for n in layout if not n.endswith(("+me.all", "-me"))]
    if everything and (sum(layout[n] for n in everything) > 1 or beside):
        return None, everything[0]
    return layout, None


def nvml_layout(path: str) -> Tuple[bool, Dict[str, int]]:
    gpu = sim.show(path)["gpus"][0]
    counts = Counter(ci["profile"] for gi in gpu["gpu_instances"] for ci in gi["compute_instances"])
    return gpu["mig"]["current"], dict(counts)


def test_every_gpu_model_the_default_file_names_is_simulated():
    simulated = {m.pci_device_id: m for m in MIG_MODELS}
    assert len(NAMED_IDS) == 27
    assert [hex(pci) for pci in NAMED_IDS if pci not in simulated] == []
    # Each model's own configs exist in the file (its table has mig-parted's names) and are among
    # those that must apply to it: all-disabled, all-enabled, all-balanced, all-<each profile>.
    for pci in NAMED_IDS:
        model = simulated[pci]
        own = ["all-disabled", "all-enabled", "all-balanced"]
        own += ["all-" + p.name.replace("+", ".") for p in model.gi_profiles]
        for name in own:
            assert name in CONFIGS, (model.name, name)
            entry = deciding_entry(CONFIGS[name], model)
            if name == "all-1g.35gb" and pci == 0x233B10DE:
                # Upstream quirk: all-1g.35gb's filters name the H200 SXM and GB300, not the H200 NVL.
                assert entry is None
                continue
            assert entry is not None and expected_outcome(entry, model)[0] is not None, (model.name, name)


@pytest.fixture(scope="module")
def node_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One state file, re-written for each case (cheaper than a directory per case)."""
    return str(tmp_path_factory.mktemp("default-configs") / "node.json")


_FRESH: Dict[str, Tuple[bytes, Any]] = {}


def fresh_node(path: str, model: GpuModel) -> Tuple[bytes, Any]:
    """A new node with one GPU of ``model``, MIG disabled: its state file and what NVML reads from
    it (read once per model; a refused config is planned against that reading)."""
    if model.name not in _FRESH:
        sim.init_node(path, model, 1)
        nvml = open_nvml({"GPUOPS_NVML_SIMULATOR": path})
        try:
            _FRESH[model.name] = (Path(path).read_bytes(), nvml.read_node())
        finally:
            nvml.close()
    return _FRESH[model.name]


@pytest.mark.parametrize("name, model", CASES)
def test_named_config_applies_on_the_model_or_is_refused_naming_config_model_and_profile(node_file, name, model):
    path = node_file
    state, reading = fresh_node(path, model)
    entries = SPEC.select(name)[1]
    entry = deciding_entry(CONFIGS[name], model)
    assert entry is not None  # every case is a model the config names, or a config for every model
    layout, unfit = expected_outcome(entry, model)
    if layout is None:
        # read_and_plan's plan step, on this model's reading: validation fails before any NVML call.
        with pytest.raises(PlanError) as refused:
            build_plan(name, list(entries), reading.gpus)
        message = str(refused.value)
        assert "config %r" % name in message and model.name in message and unfit in message, message
        return

    Path(path).write_bytes(state)

    def run_command(argv: List[str]) -> Tuple[int, str, str]:
        assert argv[:3] == RESET_COMMAND[:3]
        return 0, "\n".join(sim_state.reset_gpus(path, [int(argv[-1])])), ""

    nvml = open_nvml({"GPUOPS_NVML_SIMULATOR": path})
    try:
        planned = read_and_plan(nvml, name, entries)
        outcome = apply_reading(nvml, planned, entries, run_command, RESET_COMMAND, None, False)
        assert outcome.failure is None, str(outcome.failure)
        assert nvml_layout(path) == (entry["mig-enabled"], layout)
        renamed = sorted(set(layout) - set(entry.get("mig-devices") or {}))
        assert len(planned.plan.warnings) == len(renamed)  # a renamed profile is applied with a warning
        assert all(any(n in w for w in planned.plan.warnings) for n in renamed), planned.plan.warnings
        # Applied means converged: a second read plans nothing.
        assert not read_and_plan(nvml, name, entries).plan.changed
    finally:
        nvml.close()


@pytest.mark.parametrize("name, model", [("all-1g.5gb", "NVIDIA B200"), ("all-1g.24gb.me.all", "NVIDIA A100-SXM4-40GB"),
                                         ("all-1g.23gb", "NVIDIA H100 NVL"), ("all-2g.48gb.gfx", "NVIDIA GB200")])
def test_a_refused_config_changes_nothing_through_nvml(tmp_path, name, model):
    # The whole path, read → plan, on the simulated node: refused with the state file untouched.
    path = str(tmp_path / "node.json")
    sim.init_node(path, model, 1)
    before = Path(path).read_bytes()
    nvml = open_nvml({"GPUOPS_NVML_SIMULATOR": path})
    try:
        with pytest.raises(PlanError, match="config '%s'.*%s" % (re.escape(name), re.escape(model))):
            read_and_plan(nvml, name, SPEC.select(name)[1])
    finally:
        nvml.close()
    assert Path(path).read_bytes() == before


@pytest.mark.parametrize("layout", [{"1g.24gb+me.all": 1, "1g.24gb-me": 3}, {"2g.48gb+me.all": 1, "2g.48gb-me": 1},
                                    {"1g.24gb+gfx": 2, "2g.48gb+gfx": 1}, {"1g.24gb+me": 1, "1g.24gb": 1, "2g.48gb-me": 1}])
def test_graphics_and_media_engine_variants_apply_on_the_rtx_pro_6000(tmp_path, layout):
    path = str(tmp_path / "node.json")
    sim.init_node(path, "NVIDIA RTX PRO 6000 Blackwell Server Edition", 1)
    name, entries = parse_spec({"version": "v1", "mig-configs": {"mixed": [
        {"devices": "all", "mig-enabled": True, "mig-devices": layout}]}}).select("mixed")
    nvml = open_nvml({"GPUOPS_NVML_SIMULATOR": path})
    try:
        outcome = apply_reading(nvml, read_and_plan(nvml, name, entries), entries, None, None, None, False)
        assert outcome.failure is None, str(outcome.failure)
        assert nvml_layout(path) == (True, layout)
        assert not read_and_plan(nvml, name, entries).plan.changed
    finally:
        nvml.close()
