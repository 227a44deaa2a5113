"""The model tables reproduce the profile names mig-parted's configs use."""

from __future__ import annotations

import pytest

from gpuops_sim.nvml.models import GI_1_SLICE_REV1, GI_2_SLICE_REV1, MIB, MODELS, find_model, mig_memory_size_gb

# known-geometries.md §B: the maximum of each profile alone (the all-<profile> named configs).
EXPECTED_MAX = {
    "NVIDIA A100-SXM4-40GB": {"1g.5gb": 7, "1g.5gb+me": 1, "1g.10gb": 4, "2g.10gb": 3, "3g.20gb": 2, "4g.20gb": 1,
                              "7g.40gb": 1},
    "NVIDIA A100-SXM4-80GB": {"1g.10gb": 7, "1g.10gb+me": 1, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1,
                              "7g.80gb": 1},
    "NVIDIA H100 80GB HBM3": {"1g.10gb": 7, "1g.10gb+me": 1, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1,
                              "7g.80gb": 1},
    "NVIDIA A30": {"1g.6gb": 4, "1g.6gb+me": 1, "2g.12gb": 2, "2g.12gb+me": 1, "4g.24gb": 1},
    "NVIDIA H100 NVL": {"1g.12gb": 7, "1g.12gb+me": 1, "1g.24gb": 4, "2g.24gb": 3, "3g.47gb": 2, "4g.47gb": 1,
                        "7g.94gb": 1},
    "NVIDIA H200": {"1g.18gb": 7, "1g.18gb+me": 1, "1g.35gb": 4, "2g.35gb": 3, "3g.71gb": 2, "4g.71gb": 1,
                    "7g.141gb": 1},
}
PCI_IDS = {
    "NVIDIA A100-SXM4-40GB": 0x20B010DE, "NVIDIA A100-SXM4-80GB": 0x20B210DE, "NVIDIA A30": 0x20B710DE,
    "NVIDIA H100 80GB HBM3": 0x233010DE, "NVIDIA H100 NVL": 0x232110DE, "NVIDIA H200": 0x233510DE,
}
MIG_MODELS = [m for m in MODELS if m.mig_capable]


def go_nvlib_name(total_mib: int, profile) -> str:
    suffix = "+me" if profile.enum in (GI_1_SLICE_REV1, GI_2_SLICE_REV1) else ""
    return f"{profile.slice_count}g.{mig_memory_size_gb(total_mib * MIB, profile.memory_mib)}gb{suffix}"


@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.name)
def test_profile_names_follow_go_nvlib_formula(model):
    for profile in model.gi_profiles:
        assert go_nvlib_name(model.memory_total_mib, profile) == profile.name


@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.name)
def test_profiles_and_counts_match_mig_parted_configs(model):
    assert {p.name: p.instance_count for p in model.gi_profiles} == EXPECTED_MAX[model.name]
    assert model.pci_device_id == PCI_IDS[model.name]


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
