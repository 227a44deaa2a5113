"""The model tables reproduce the profile names mig-parted's configs use."""

from __future__ import annotations

import pytest

from gpuops_sim.nvml.models import (
    GI_1_SLICE_ALL_ME, GI_1_SLICE_GFX, GI_1_SLICE_NO_ME, GI_1_SLICE_REV1, GI_2_SLICE_ALL_ME, GI_2_SLICE_GFX,
    GI_2_SLICE_NO_ME, GI_2_SLICE_REV1, GI_4_SLICE_GFX, MIB, MODELS, find_model, mig_memory_size_gb,
)

# known-geometries.md §B: the maximum of each profile alone (the all-<profile> named configs of
# mig-parted's default config), per group of models that share a profile table.
_40GB = {"1g.5gb": 7, "1g.5gb+me": 1, "1g.10gb": 4, "2g.10gb": 3, "3g.20gb": 2, "4g.20gb": 1, "7g.40gb": 1}
_80GB = {"1g.10gb": 7, "1g.10gb+me": 1, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1}
_NVL_94GB = {"1g.12gb": 7, "1g.12gb+me": 1, "1g.24gb": 4, "2g.24gb": 3, "3g.47gb": 2, "4g.47gb": 1, "7g.94gb": 1}
_96GB = {"1g.12gb": 7, "1g.12gb+me": 1, "1g.24gb": 4, "2g.24gb": 3, "3g.48gb": 2, "4g.48gb": 1, "7g.96gb": 1}
_141GB = {"1g.18gb": 7, "1g.18gb+me": 1, "1g.35gb": 4, "2g.35gb": 3, "3g.71gb": 2, "4g.71gb": 1, "7g.141gb": 1}
# model name: (PCI device id as mig-parted's device-filter writes it, profile maximums)
EXPECTED = {
    "NVIDIA A100-SXM4-40GB": (0x20B010DE, _40GB),
    "NVIDIA A100 PCIe 40GB (20B1)": (0x20B110DE, _40GB),
    "NVIDIA A100-PCIE-40GB": (0x20F110DE, _40GB),
    "NVIDIA A800 40GB Active": (0x20F610DE, _40GB),
    "NVIDIA A100-SXM4-80GB": (0x20B210DE, _80GB),
    "NVIDIA A100 80GB PCIe": (0x20B510DE, _80GB),
    "NVIDIA A800-SXM4-80GB": (0x20F310DE, _80GB),
    "NVIDIA A800 80GB PCIe": (0x20F510DE, _80GB),
    "NVIDIA H100 80GB HBM3": (0x233010DE, _80GB),
    "NVIDIA H100 PCIe": (0x233110DE, _80GB),
    "NVIDIA H800 PCIe": (0x232210DE, _80GB),
    "NVIDIA H800": (0x232410DE, _80GB),
    "NVIDIA A30": (0x20B710DE, {"1g.6gb": 4, "1g.6gb+me": 1, "2g.12gb": 2, "2g.12gb+me": 1, "4g.24gb": 1}),
    "NVIDIA H100 NVL": (0x232110DE, _NVL_94GB),
    "NVIDIA H800 NVL": (0x233A10DE, _NVL_94GB),
    "NVIDIA H100 96GB": (0x233D10DE, _96GB),
    "NVIDIA GH200 480GB": (0x234210DE, _96GB),
    "NVIDIA PG506-232": (0x20B610DE, _96GB),
    "NVIDIA H20": (0x232910DE, _96GB),
    "NVIDIA H200": (0x233510DE, _141GB),
    "NVIDIA H200 NVL": (0x233B10DE, _141GB),
    "NVIDIA GH200 144G HBM3e": (0x234810DE, {"1g.18gb": 7, "1g.18gb+me": 1, "1g.36gb": 4, "2g.36gb": 3, "3g.72gb": 2,
                                             "4g.72gb": 1, "7g.144gb": 1}),
    "NVIDIA B200": (0x290110DE, {"1g.23gb": 7, "1g.23gb+me": 1, "1g.45gb": 4, "2g.45gb": 3, "3g.90gb": 2, "4g.90gb": 1,
                                 "7g.180gb": 1}),
    "NVIDIA GB200": (0x294110DE, {"1g.23gb": 7, "1g.23gb+me": 1, "1g.47gb": 4, "2g.47gb": 3, "3g.93gb": 2, "4g.93gb": 1,
                                  "7g.186gb": 1}),
    "NVIDIA B300 SXM6 AC": (0x318210DE, {"1g.34gb": 7, "1g.34gb+me": 1, "1g.67gb": 4, "2g.67gb": 3, "3g.135gb": 2,
                                         "4g.135gb": 1, "7g.269gb": 1}),
    "NVIDIA GB300": (0x31C210DE, {"1g.35gb": 7, "1g.35gb+me": 1, "1g.70gb": 4, "2g.70gb": 3, "3g.139gb": 2,
                                  "4g.139gb": 1, "7g.278gb": 1}),
    "NVIDIA RTX PRO 6000 Blackwell Server Edition": (0x2BB510DE, {
        "1g.24gb": 4, "1g.24gb+gfx": 4, "1g.24gb+me": 1, "1g.24gb+me.all": 1, "1g.24gb-me": 4,
        "2g.48gb": 2, "2g.48gb+gfx": 2, "2g.48gb+me.all": 1, "2g.48gb-me": 2, "4g.96gb": 1, "4g.96gb+gfx": 1}),
}
EXPECTED_MAX = {name: maximums for name, (_pci, maximums) in EXPECTED.items()}
MIG_MODELS = [m for m in MODELS if m.mig_capable]
# nvml.h's GPU-instance profile enum -> the name suffix go-nvlib gives it.
SUFFIX = {GI_1_SLICE_REV1: "+me", GI_2_SLICE_REV1: "+me", GI_1_SLICE_GFX: "+gfx", GI_2_SLICE_GFX: "+gfx",
          GI_4_SLICE_GFX: "+gfx", GI_1_SLICE_NO_ME: "-me", GI_2_SLICE_NO_ME: "-me", GI_1_SLICE_ALL_ME: "+me.all",
          GI_2_SLICE_ALL_ME: "+me.all"}


def go_nvlib_name(total_mib: int, profile) -> str:
    suffix = SUFFIX.get(profile.enum, "")
    return f"{profile.slice_count}g.{mig_memory_size_gb(total_mib * MIB, profile.memory_mib)}gb{suffix}"


@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.name)
def test_profile_names_follow_go_nvlib_formula(model):
    for profile in model.gi_profiles:
        assert go_nvlib_name(model.memory_total_mib, profile) == profile.name


@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.name)
def test_profiles_and_counts_match_mig_parted_configs(model):
    pci_device_id, maximums = EXPECTED[model.name]
    assert {p.name: p.instance_count for p in model.gi_profiles} == maximums
    assert model.pci_device_id == pci_device_id


def test_model_names_aliases_and_pci_ids_are_unique():
    keys = [key for m in MODELS for key in (m.name.lower(), *m.aliases)]
    assert len(keys) == len(set(keys))
    assert len({m.pci_device_id for m in MODELS}) == len(MODELS)
    assert set(EXPECTED) == {m.name for m in MIG_MODELS}


@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.name)
def test_profile_ids_are_unique_and_no_profile_exceeds_the_gpu(model):
    assert len({p.id for p in model.gi_profiles}) == len({p.enum for p in model.gi_profiles}) == len(model.gi_profiles)
    for profile in model.gi_profiles:
        assert profile.multiprocessors <= model.multiprocessors
        assert profile.memory_mib <= model.memory_total_mib


def test_formula_rounds_half_away_from_zero():
    # H200 3g: 0.5 of 141 GB = 70.5 → 71 (Python's round() would say 70)
    assert mig_memory_size_gb(143771 * MIB, 71168) == 71


@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.name)
def test_placements_fit_the_grid_and_each_profile_alone_reaches_its_count(model):
    for profile in model.gi_profiles:
        assert all(s + profile.placement_size <= model.memory_slots for s in profile.placement_starts)
        assert len(profile.placement_starts) >= profile.instance_count


def test_compute_instance_tables_match_captures():
    a100 = find_model("NVIDIA A100-SXM4-40GB")
    by_gi = {gi.name: {ci.name: (ci.id, ci.instance_count, ci.multiprocessors) for ci in a100.ci_profiles(gi)}
             for gi in a100.gi_profiles}
    assert by_gi["3g.20gb"] == {"1c.3g.20gb": (0, 3, 14), "2c.3g.20gb": (1, 1, 28), "3g.20gb": (2, 1, 42)}
    assert by_gi["4g.20gb"] == {"1c.4g.20gb": (0, 4, 14), "2c.4g.20gb": (1, 2, 28), "4g.20gb": (3, 1, 56)}
    assert by_gi["2g.10gb"] == {"1c.2g.10gb": (0, 2, 14), "2g.10gb": (1, 1, 28)}
    assert by_gi["1g.5gb"] == {"1g.5gb": (0, 1, 14)}
    assert set(by_gi["7g.40gb"]) == {"1c.7g.40gb", "2c.7g.40gb", "3c.7g.40gb", "4c.7g.40gb", "7g.40gb"}


def test_find_model_accepts_names_and_aliases():
    assert find_model("NVIDIA H200").pci_device_id == 0x233510DE
    assert find_model("h100").name == "NVIDIA H100 80GB HBM3"
    assert find_model("A100-SXM4-40GB").name == "NVIDIA A100-SXM4-40GB"
    assert not find_model("Tesla T4").mig_capable
    with pytest.raises(ValueError, match="unknown GPU model 'v100'"):
        find_model("v100")
