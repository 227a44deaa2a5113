# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Resources and labels per MIG strategy, on an 8x A100-SXM4-40GB node (a DGX A100)."""

from __future__ import annotations

import pytest

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.resources import (
    expected_resources,
    mig_resource_name,
    product_name,
)

ALL_1G_5GB = {i: {"mig_enabled": True, "devices": {"1g.5gb": 7}} for i in range(8)}
ALL_BALANCED = {i: {"mig_enabled": True, "devices": {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}} for i in range(8)}
ALL_DISABLED = {i: {"mig_enabled": False, "devices": {}} for i in range(8)}
ALL_ENABLED = {i: {"mig_enabled": True, "devices": {}} for i in range(8)}

FULL_GPU_MIG_ENABLED = {
    # GFD labels MIG-enabled full GPUs without sharing information: replicas 0.
    "nvidia.com/gpu.count": "8",
    "nvidia.com/gpu.memory": "40960",
    "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
    "nvidia.com/gpu.replicas": "0",
    "nvidia.com/gpu.sharing-strategy": "none",
    "nvidia.com/mig.capable": "true",
}


def mig_labels(profile: str, count: int, memory: int, sms: int, slices: int, ce: int, dec: int, jpeg: int = 0, ofa: int = 0) -> dict:
    prefix = "nvidia.com/mig-%s." % profile.replace("+", ".")
    return {
        prefix + "count": str(count),
        prefix + "engines.copy": str(ce),
        prefix + "engines.decoder": str(dec),
        prefix + "engines.encoder": "0",
        prefix + "engines.jpeg": str(jpeg),
        prefix + "engines.ofa": str(ofa),
        prefix + "memory": str(memory),
        prefix + "multiprocessors": str(sms),
        prefix + "product": "NVIDIA-A100-SXM4-40GB-MIG-" + profile.replace("+", "."),
        prefix + "replicas": "1",
        prefix + "sharing-strategy": "none",
        prefix + "slices.ci": str(slices),
        prefix + "slices.gi": str(slices),
    }


def test_single_all_1g_5gb_publishes_56_gpus(node_gpus) -> None:
    result = expected_resources(node_gpus(), ALL_1G_5GB, "single")
    assert result["errors"] == []
    assert result["capacity"] == {"nvidia.com/gpu": 56}
    assert result["allocatable"] == {"nvidia.com/gpu": 56}
    assert result["labels"] == {
        "nvidia.com/gpu.count": "56",
        "nvidia.com/gpu.engines.copy": "1",
        "nvidia.com/gpu.engines.decoder": "0",
        "nvidia.com/gpu.engines.encoder": "0",
        "nvidia.com/gpu.engines.jpeg": "0",
        "nvidia.com/gpu.engines.ofa": "0",
        "nvidia.com/gpu.memory": "4864",
        "nvidia.com/gpu.multiprocessors": "14",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb",
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/gpu.slices.ci": "1",
        "nvidia.com/gpu.slices.gi": "1",
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig.strategy": "single",
    }


def test_mixed_all_1g_5gb_publishes_56_mig_devices(node_gpus) -> None:
    result = expected_resources(node_gpus(), ALL_1G_5GB, "mixed")
    assert result["errors"] == []
    assert result["capacity"] == {"nvidia.com/mig-1g.5gb": 56}
    assert result["allocatable"] == {"nvidia.com/mig-1g.5gb": 56}
    assert result["labels"] == {
        **FULL_GPU_MIG_ENABLED,
        "nvidia.com/mig.strategy": "mixed",
        **mig_labels("1g.5gb", 56, 4864, 14, 1, 1, 0),
    }


def test_mixed_all_balanced(node_gpus) -> None:
    result = expected_resources(node_gpus(), ALL_BALANCED, "mixed")
    assert result["errors"] == []
    assert result["capacity"] == {
        "nvidia.com/mig-1g.5gb": 16,
        "nvidia.com/mig-2g.10gb": 8,
        "nvidia.com/mig-3g.20gb": 8,
    }
    assert result["allocatable"] == result["capacity"]
    assert result["labels"] == {
        **FULL_GPU_MIG_ENABLED,
        "nvidia.com/mig.strategy": "mixed",
        **mig_labels("1g.5gb", 16, 4864, 14, 1, 1, 0),
        **mig_labels("2g.10gb", 8, 9856, 28, 2, 2, 1),
        **mig_labels("3g.20gb", 8, 19968, 42, 3, 3, 2),
    }


def test_none_strategy_counts_mig_enabled_gpus_as_whole_gpus(node_gpus) -> None:
    result = expected_resources(node_gpus(), ALL_1G_5GB, "none")
    assert result["errors"] == []
    assert result["capacity"] == {"nvidia.com/gpu": 8}
    assert result["labels"] == FULL_GPU_MIG_ENABLED


def test_none_strategy_without_mig(node_gpus) -> None:
    result = expected_resources(node_gpus(), ALL_DISABLED, "none")
    assert result["capacity"] == {"nvidia.com/gpu": 8}
    assert result["labels"] == {**FULL_GPU_MIG_ENABLED, "nvidia.com/gpu.replicas": "1"}


@pytest.mark.parametrize("strategy", ["single", "mixed"])
def test_mig_strategies_with_mig_disabled_everywhere_publish_whole_gpus(node_gpus, strategy: str) -> None:
    result = expected_resources(node_gpus(), ALL_DISABLED, strategy)
    assert result["errors"] == []
    assert result["capacity"] == {"nvidia.com/gpu": 8}
    assert result["labels"] == {**FULL_GPU_MIG_ENABLED, "nvidia.com/gpu.replicas": "1", "nvidia.com/mig.strategy": strategy}


def test_mixed_with_some_gpus_whole_and_some_partitioned(node_gpus) -> None:
    layout = {i: {"mig_enabled": i >= 4, "devices": {"3g.20gb": 2} if i >= 4 else {}} for i in range(8)}
    result = expected_resources(node_gpus(), layout, "mixed")
    assert result["errors"] == []
    assert result["capacity"] == {"nvidia.com/gpu": 4, "nvidia.com/mig-3g.20gb": 8}
    # The whole GPUs' labels (with sharing info) override those of the MIG-enabled ones.
    assert result["labels"]["nvidia.com/gpu.count"] == "8"
    assert result["labels"]["nvidia.com/gpu.replicas"] == "1"
    assert result["labels"]["nvidia.com/mig-3g.20gb.count"] == "8"


def test_mixed_with_mig_enabled_but_empty_gpus_publishes_nothing_for_them(node_gpus) -> None:
    result = expected_resources(node_gpus(), ALL_ENABLED, "mixed")
    assert result["errors"] == []
    assert result["capacity"] == {} and result["allocatable"] == {}
    assert result["labels"] == {**FULL_GPU_MIG_ENABLED, "nvidia.com/mig.strategy": "mixed"}
    assert len(result["warnings"]) == 1 and "GPUs 0, 1, 2, 3, 4, 5, 6, 7 have MIG enabled but no MIG devices" in result["warnings"][0]


def test_media_engine_profile_is_spelled_with_a_dot(node_gpus) -> None:
    layout = {0: {"mig_enabled": True, "devices": {"1g.5gb+me": 1}}}
    result = expected_resources(node_gpus(1), layout, "mixed")
    assert result["capacity"] == {"nvidia.com/mig-1g.5gb.me": 1}
    assert result["labels"]["nvidia.com/mig-1g.5gb.me.product"] == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb.me"
    assert result["labels"]["nvidia.com/mig-1g.5gb.me.engines.jpeg"] == "1"
    assert result["labels"]["nvidia.com/mig-1g.5gb.me.engines.ofa"] == "1"
    assert mig_resource_name("2g.48gb+me.all") == "nvidia.com/mig-2g.48gb.me.all"


def test_single_with_7g_layout(node_gpus) -> None:
    layout = {i: {"mig_enabled": True, "devices": {"7g.40gb": 1}} for i in range(8)}
    result = expected_resources(node_gpus(), layout, "single")
    assert result["capacity"] == {"nvidia.com/gpu": 8}
    assert result["labels"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-MIG-7g.40gb"
    assert result["labels"]["nvidia.com/gpu.memory"] == "40192"
    assert result["labels"]["nvidia.com/gpu.engines.decoder"] == "5"


def test_gpus_absent_from_the_layout_keep_their_current_instances(node_gpus, gpu) -> None:
    gpus = [gpu(0), gpu(1, mig=True, instances=["3g.20gb", "3g.20gb"]), gpu(2, mig=True, instances=["1g.5gb"])]
    result = expected_resources(gpus, {0: {"mig_enabled": True, "devices": {"1g.5gb": 7}}}, "mixed")
    assert result["errors"] == []
    assert result["capacity"] == {"nvidia.com/mig-1g.5gb": 8, "nvidia.com/mig-3g.20gb": 2}


def test_no_layout_means_the_node_as_it_is(gpu) -> None:
    gpus = [gpu(0, mig=True, instances=["2g.10gb", "2g.10gb", "2g.10gb"])]
    assert expected_resources(gpus, None, "mixed")["capacity"] == {"nvidia.com/mig-2g.10gb": 3}
    assert expected_resources(gpus, {}, "single")["capacity"] == {"nvidia.com/gpu": 3}


def test_accepts_the_whole_gpu_info_result_and_string_gpu_indices(node_gpus) -> None:
    info = {"driver_version": "550.54.15", "cuda_version": "12.4", "gpus": node_gpus(2)}
    layout = {"0": {"mig_enabled": True, "devices": {"1g.5gb": 7}}, "1": {"mig_enabled": True, "devices": {"1g.5gb": 7}}}
    assert expected_resources(info, layout, "single")["capacity"] == {"nvidia.com/gpu": 14}


def test_node_without_gpus_publishes_nothing() -> None:
    assert expected_resources([], None, "mixed") == {"capacity": {}, "allocatable": {}, "labels": {}, "errors": [], "warnings": []}


def test_mig_capable_false_on_a_node_of_non_mig_gpus(gpu) -> None:
    result = expected_resources([gpu(0, capable=False)], None, "single")
    assert result["capacity"] == {"nvidia.com/gpu": 1}
    assert result["labels"]["nvidia.com/mig.capable"] == "false"


def test_two_gpu_models_warn_that_gfd_labels_describe_one(gpu) -> None:
    gpus = [gpu(0), gpu(1, model="a100-80gb-pcie")]
    result = expected_resources(gpus, None, "none", node="n1")
    assert result["capacity"] == {"nvidia.com/gpu": 2}
    assert result["warnings"] == [
        "node n1: GPUs of several models (NVIDIA A100 80GB PCIe, NVIDIA A100-SXM4-40GB): GFD's nvidia.com/gpu.* labels "
        "describe only one of them, and upstream does not define which"
    ]


def test_mixed_same_profile_name_on_two_models_is_one_resource(gpu) -> None:
    # 1g.10gb exists on both A100 40GB (4 per GPU) and A100 80GB (7 per GPU).
    gpus = [gpu(0), gpu(1, model="a100-80gb-pcie")]
    layout = {0: {"mig_enabled": True, "devices": {"1g.10gb": 4}}, 1: {"mig_enabled": True, "devices": {"1g.10gb": 7}}}
    assert expected_resources(gpus, layout, "mixed")["capacity"] == {"nvidia.com/mig-1g.10gb": 11}


def test_product_name_sanitising() -> None:
    assert product_name("NVIDIA A100 80GB PCIe") == "NVIDIA-A100-80GB-PCIe"
    assert product_name("NVIDIA  H100 (PCIe)!", "MIG", "1g.10gb") == "NVIDIA-H100-PCIe-MIG-1g.10gb"
    assert product_name("NVIDIA A30", shared=True) == "NVIDIA-A30-SHARED"
    assert product_name("") == ""


def test_strategy_must_be_known(node_gpus) -> None:
    with pytest.raises(ValueError, match="mig strategy must be one of none, single, mixed, got 'Mixed'"):
        expected_resources(node_gpus(1), None, "Mixed")
