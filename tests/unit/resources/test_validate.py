# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Layouts a strategy cannot run, and bad layouts: refused up front with a message naming node, GPU and profile."""

from __future__ import annotations

import pytest

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.resources import (
    current_layout,
    expected_resources,
    validate_strategy,
)

ALL_BALANCED = {i: {"mig_enabled": True, "devices": {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}} for i in range(8)}
INVALID_SINGLE_LABELS = {
    "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-INVALID",
    "nvidia.com/gpu.count": "0",
    "nvidia.com/gpu.replicas": "0",
    "nvidia.com/gpu.sharing-strategy": "",
    "nvidia.com/gpu.memory": "0",
    "nvidia.com/mig.strategy": "single",
}


def test_single_with_several_profiles_fails_like_the_plugin(node_gpus) -> None:
    result = expected_resources(node_gpus(), ALL_BALANCED, "single", node="gpu-a")
    assert result["capacity"] == {} and result["allocatable"] == {}
    assert result["errors"] == [
        "node gpu-a: MIG strategy 'single' needs one MIG profile on the whole node, but the layout has "
        "1g.5gb on GPUs 0, 1, 2, 3, 4, 5, 6, 7; 2g.10gb on GPUs 0, 1, 2, 3, 4, 5, 6, 7; 3g.20gb on GPUs 0, 1, 2, 3, 4, 5, 6, 7 "
        "(device plugin: 'more than one MIG device type present on node'; GFD: gpu.product ...-MIG-INVALID); "
        "use MIG strategy 'mixed' or a config with a single profile"
    ]
    assert INVALID_SINGLE_LABELS.items() <= result["labels"].items()
    assert not any(key.startswith("nvidia.com/mig-") for key in result["labels"])


def test_single_with_mig_on_some_gpus_only(node_gpus) -> None:
    layout = {i: {"mig_enabled": i < 2, "devices": {"1g.5gb": 7} if i < 2 else {}} for i in range(4)}
    result = expected_resources(node_gpus(4), layout, "single", node="gpu-b")
    assert result["errors"] == [
        "node gpu-b: MIG strategy 'single' needs every GPU in the same MIG mode, but GPUs 0, 1 have MIG enabled and "
        "GPUs 2, 3 have it disabled (device plugin: 'all devices on the node must be configured with the same "
        "migEnabled value'; GFD: gpu.product ...-MIG-INVALID)"
    ]
    assert result["capacity"] == {}
    assert INVALID_SINGLE_LABELS.items() <= result["labels"].items()
    assert result["labels"]["nvidia.com/gpu.count"] == "0"


def test_single_with_mig_enabled_and_no_devices(node_gpus) -> None:
    result = expected_resources(node_gpus(2), {0: {"mig_enabled": True, "devices": {}}, 1: {"mig_enabled": True, "devices": {}}}, "single")
    assert result["errors"] == [
        "MIG strategy 'single': GPU 0 has MIG enabled but no MIG devices (device plugin: 'device 0 has no MIG devices "
        "configured'; GFD: gpu.product ...-MIG-INVALID)",
        "MIG strategy 'single': GPU 1 has MIG enabled but no MIG devices (device plugin: 'device 1 has no MIG devices "
        "configured'; GFD: gpu.product ...-MIG-INVALID)",
    ]
    assert INVALID_SINGLE_LABELS.items() <= expected_resources(node_gpus(2), {0: {"mig_enabled": True, "devices": {}}}, "single")["labels"].items()


def test_single_same_profile_name_on_two_gpu_models(gpu) -> None:
    gpus = [gpu(0), gpu(1, model="a100-80gb-pcie")]
    layout = {0: {"mig_enabled": True, "devices": {"1g.10gb": 4}}, 1: {"mig_enabled": True, "devices": {"1g.10gb": 7}}}
    errors = expected_resources(gpus, layout, "single")["errors"]
    assert len(errors) == 1 and "profile 1g.10gb differs between the GPU models" in errors[0]


def test_mixed_refuses_compute_instance_profiles(gpu) -> None:
    node = gpu(0, mig=True, instances=["3g.20gb"])
    node["mig"]["instances"][0]["devices"] = [
        {"uuid": "MIG-a", "ci_id": 0, "profile": "1c.3g.20gb"},
        {"uuid": "MIG-b", "ci_id": 1, "profile": "2c.3g.20gb"},
    ]
    result = expected_resources([node], None, "mixed")
    assert [e.split(" (")[0] for e in result["errors"]] == [
        "MIG strategy 'mixed' advertises only full-width MIG devices, but GPU 0 would have 1c.3g.20gb",
        "MIG strategy 'mixed' advertises only full-width MIG devices, but GPU 0 would have 2c.3g.20gb",
    ]
    # Under single the plugin takes any profile; the two CIs are two different device types though.
    single = expected_resources([node], None, "single")
    assert "more than one MIG device type" in single["errors"][0]
    # GFD still labels them, with the compute slices of the device.
    assert result["labels"]["nvidia.com/mig-1c.3g.20gb.slices.ci"] == "1"
    assert result["labels"]["nvidia.com/mig-1c.3g.20gb.slices.gi"] == "3"
    assert result["labels"]["nvidia.com/mig-1c.3g.20gb.multiprocessors"] == "14"


@pytest.mark.parametrize(
    "layout, message",
    [
        ({9: {"mig_enabled": True, "devices": {"1g.5gb": 7}}}, "node n: GPU 9 in the layout does not exist on the node (its GPUs: 0, 1)"),
        ({0: {"mig_enabled": True, "devices": {"1g.6gb": 4}}},
         "node n: GPU 0 (NVIDIA A100-SXM4-40GB) has no MIG profile 1g.6gb (it offers 1g.10gb, 1g.5gb, 1g.5gb+me, 2g.10gb, 3g.20gb, 4g.20gb, 7g.40gb)"),
        ({0: {"mig_enabled": False, "devices": {"1g.5gb": 7}}}, "node n: GPU 0 (NVIDIA A100-SXM4-40GB): mig_enabled is false but devices lists 1g.5gb"),
        ({0: {"mig_enabled": True, "devices": {"1g.5gb": -1}}},
         "node n: GPU 0 (NVIDIA A100-SXM4-40GB): count of MIG profile 1g.5gb must be an integer >= 0, got -1"),
        ({0: {"mig_enabled": "yes"}}, "node n: GPU 0 (NVIDIA A100-SXM4-40GB): mig_enabled must be true or false, got 'yes'"),
        ({0: {"mig_enabled": True, "mig-devices": {}}}, "node n: GPU 0 (NVIDIA A100-SXM4-40GB): unknown layout field(s) 'mig-devices'"),
        ({"first": {"mig_enabled": False}}, "node n: layout key 'first' is not a GPU index"),
        ([0, 1], "node n: layout must be a mapping of GPU index to {mig_enabled, devices}, got [0, 1]"),
    ],
)
def test_bad_layouts_are_errors_naming_node_gpu_and_profile(node_gpus, layout, message: str) -> None:
    result = expected_resources(node_gpus(2), layout, "mixed", node="n")
    assert result["errors"] == [message]
    assert result["capacity"] == {}


def test_not_mig_capable_gpu(gpu) -> None:
    errors = expected_resources([gpu(0, capable=False)], {0: {"mig_enabled": True, "devices": {}}}, "mixed")["errors"]
    assert errors == ["GPU 0 (NVIDIA A100-SXM4-40GB) is not MIG-capable but the layout enables MIG on it"]


def test_a_wrong_entry_leaves_that_gpu_as_it_is_for_the_labels(gpu) -> None:
    result = expected_resources([gpu(0, mig=True, instances=["7g.40gb"])], {0: {"mig_enabled": True, "devices": {"9g.99gb": 1}}}, "mixed")
    assert result["errors"] and result["labels"]["nvidia.com/mig-7g.40gb.count"] == "1"


def test_validate_strategy_from_the_layout_alone() -> None:
    assert validate_strategy(ALL_BALANCED, "mixed") == []
    assert validate_strategy({0: {"mig_enabled": True, "devices": {"1g.5gb": 7}}}, "single") == []
    errors = validate_strategy(ALL_BALANCED, "single", node="dgx-01")
    assert len(errors) == 1
    assert errors[0].startswith("node dgx-01: MIG strategy 'single' needs one MIG profile on the whole node, but the layout has 1g.5gb on GPUs 0")
    assert validate_strategy({0: {"mig_enabled": False}}, "none") == []
    assert validate_strategy({0: {"mig_enabled": True, "devices": {}}}, "single") == [
        "MIG strategy 'single': GPU 0 has MIG enabled but no MIG devices (device plugin: 'device 0 has no MIG devices "
        "configured'; GFD: gpu.product ...-MIG-INVALID)"
    ]


def test_validate_strategy_counts_gpus_the_layout_leaves_alone(gpu) -> None:
    # GPU 1 keeps its 3g.20gb instances, so 1g.5gb on GPU 0 makes two types under single.
    gpus = [gpu(0), gpu(1, mig=True, instances=["3g.20gb", "3g.20gb"])]
    layout = {0: {"mig_enabled": True, "devices": {"1g.5gb": 7}}}
    assert validate_strategy(layout, "single") == []
    errors = validate_strategy(layout, "single", gpus=gpus, node="n")
    assert errors == [
        "node n: MIG strategy 'single' needs one MIG profile on the whole node, but the layout has 1g.5gb on GPU 0; "
        "3g.20gb on GPU 1 (device plugin: 'more than one MIG device type present on node'; GFD: gpu.product ...-MIG-INVALID); "
        "use MIG strategy 'mixed' or a config with a single profile"
    ]


def test_validate_strategy_rejects_an_unknown_strategy() -> None:
    with pytest.raises(ValueError, match="got 'dual'"):
        validate_strategy({}, "dual")


def test_current_layout(gpu) -> None:
    gpus = [gpu(0), gpu(1, mig=True, instances=["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"]), gpu(2, mig=True)]
    assert current_layout(gpus) == {
        0: {"mig_enabled": False, "devices": {}},
        1: {"mig_enabled": True, "devices": {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}},
        2: {"mig_enabled": True, "devices": {}},
    }
    # Applying the current layout changes nothing.
    assert expected_resources(gpus, current_layout(gpus), "mixed") == expected_resources(gpus, None, "mixed")


def test_a_boolean_is_not_a_count(node_gpus) -> None:
    errors = expected_resources(node_gpus(1), {0: {"mig_enabled": True, "devices": {"1g.5gb": True}}}, "mixed")["errors"]
    assert errors == ["GPU 0 (NVIDIA A100-SXM4-40GB): count of MIG profile 1g.5gb must be an integer >= 0, got True"]


@pytest.mark.parametrize("gpus", [None, "gpu0", {"gpus": {}}, [{"name": "no index"}]])
def test_gpus_must_be_gpu_info_shaped(gpus) -> None:
    with pytest.raises(ValueError, match="gpu"):
        expected_resources(gpus, None, "mixed")
