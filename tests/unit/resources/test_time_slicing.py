# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Time-slicing (device plugin ``sharing.timeSlicing``) on top of each MIG strategy."""

from __future__ import annotations

import pytest

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.resources import (
    TimeSlicing,
    expected_resources,
    parse_time_slicing,
    time_slicing_config,
)

ALL_1G_5GB = {i: {"mig_enabled": True, "devices": {"1g.5gb": 7}} for i in range(8)}
GPU_X4 = {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}


def test_replicas_4_multiplies_whole_gpus(node_gpus) -> None:
    result = expected_resources(node_gpus(), None, "none", GPU_X4)
    assert result["capacity"] == {"nvidia.com/gpu": 32} == result["allocatable"]
    labels = result["labels"]
    assert labels["nvidia.com/gpu.count"] == "8"  # GFD counts GPUs, not replicas
    assert labels["nvidia.com/gpu.replicas"] == "4"
    assert labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-SHARED"


def test_replicas_4_multiplies_single_strategy_mig_devices(node_gpus) -> None:
    result = expected_resources(node_gpus(), ALL_1G_5GB, "single", GPU_X4)
    assert result["errors"] == []
    assert result["capacity"] == {"nvidia.com/gpu": 224}
    labels = result["labels"]
    assert labels["nvidia.com/gpu.count"] == "56"
    assert labels["nvidia.com/gpu.replicas"] == "4"
    assert labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb-SHARED"


def test_rename_by_default_publishes_gpu_shared_and_drops_the_suffix(node_gpus) -> None:
    config = dict(GPU_X4, renameByDefault=True)
    result = expected_resources(node_gpus(), ALL_1G_5GB, "single", config)
    assert result["capacity"] == {"nvidia.com/gpu.shared": 224}
    labels = result["labels"]
    # Labels stay keyed by the original resource name.
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"
    assert labels["nvidia.com/gpu.replicas"] == "4"
    assert labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
    assert not any(key.startswith("nvidia.com/gpu.shared") for key in labels)


def test_mixed_strategy_replicates_only_the_named_mig_resource(node_gpus) -> None:
    layout = {i: {"mig_enabled": True, "devices": {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}} for i in range(8)}
    config = {"resources": [{"name": "nvidia.com/mig-1g.5gb", "replicas": 2}]}
    result = expected_resources(node_gpus(), layout, "mixed", config)
    assert result["capacity"] == {"nvidia.com/mig-1g.5gb": 32, "nvidia.com/mig-2g.10gb": 8, "nvidia.com/mig-3g.20gb": 8}
    labels = result["labels"]
    assert labels["nvidia.com/mig-1g.5gb.replicas"] == "2"
    assert labels["nvidia.com/mig-1g.5gb.product"] == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb-SHARED"
    assert labels["nvidia.com/mig-2g.10gb.replicas"] == "1"
    # The strategy of the whole config: time-slicing is on, but 2g.10gb has one replica.
    assert labels["nvidia.com/mig-2g.10gb.sharing-strategy"] == "none"
    assert labels["nvidia.com/mig-1g.5gb.sharing-strategy"] == "time-slicing"


def test_gpu_replicas_do_not_touch_mixed_mig_devices(node_gpus) -> None:
    result = expected_resources(node_gpus(), ALL_1G_5GB, "mixed", GPU_X4)
    assert result["capacity"] == {"nvidia.com/mig-1g.5gb": 56}
    # MIG-enabled full GPUs are labelled without sharing information.
    assert result["labels"]["nvidia.com/gpu.replicas"] == "0"
    assert result["labels"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB"


def test_none_strategy_replicates_mig_enabled_gpus_but_gfd_says_replicas_0(node_gpus) -> None:
    result = expected_resources(node_gpus(), ALL_1G_5GB, "none", GPU_X4)
    assert result["capacity"] == {"nvidia.com/gpu": 32}
    assert result["labels"]["nvidia.com/gpu.replicas"] == "0"


def test_short_resource_names_get_the_nvidia_domain() -> None:
    assert parse_time_slicing({"resources": [{"name": "gpu", "replicas": 3}]}) == TimeSlicing({"nvidia.com/gpu": 3})
    assert parse_time_slicing(None) == TimeSlicing() == parse_time_slicing({})


@pytest.mark.parametrize(
    "config, message",
    [
        ({"resources": []}, "time_slicing.resources must be a non-empty list"),
        ({"renameByDefault": "yes", "resources": [{"name": "gpu", "replicas": 2}]}, "time_slicing.renameByDefault must be a boolean, got 'yes'"),
        ({"resources": [{"name": "nvidia.com/gpu", "replicas": 1}]}, r"time_slicing.resources\[0\].replicas must be an integer >= 2, got 1"),
        ({"resources": [{"replicas": 2}]}, r"time_slicing.resources\[0\].name must be a resource name"),
        ({"resources": ["nvidia.com/gpu"]}, r"time_slicing.resources\[0\] must be a mapping"),
        ({"replicas": 4}, "time_slicing has unknown field"),
        (["nvidia.com/gpu"], "time_slicing must be a mapping"),
    ],
)
def test_bad_time_slicing_config_names_the_field(config, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_time_slicing(config)


def test_time_slicing_config_from_role_variables() -> None:
    assert time_slicing_config(None) is None
    assert time_slicing_config("1") is None
    assert time_slicing_config(0) is None
    assert time_slicing_config("4") == {"renameByDefault": False, "resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}
    assert time_slicing_config(2, True, ["nvidia.com/mig-1g.5gb"]) == {
        "renameByDefault": True, "resources": [{"name": "nvidia.com/mig-1g.5gb", "replicas": 2}]}
    # What it builds is what the model reads.
    assert parse_time_slicing(time_slicing_config(3, True)) == TimeSlicing({"nvidia.com/gpu": 3}, rename_by_default=True)


@pytest.mark.parametrize("replicas", ["four", "2.5", True, -2, [4]])
def test_time_slicing_config_rejects_non_integers(replicas) -> None:
    with pytest.raises(ValueError, match="time-slicing replicas must be an integer"):
        time_slicing_config(replicas)
