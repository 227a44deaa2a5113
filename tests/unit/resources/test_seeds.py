# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The worked examples of the seed documents, reproduced by the model.

Seed 002 is NVIDIA's "Supporting MIG in Kubernetes" (device plugin v0.7.0, GFD v0.2.0, driver
450.80.02, GPU name "A100-SXM4-40GB"). Its label dumps come from that GFD version, which did not
yet write gpu.replicas / gpu.sharing-strategy, and include labels this model does not compute
(driver and CUDA versions, timestamp, machine, compute capability): those are left out of the
comparison. Seed 000 is AKS's MIG node pool guide (8x A100 40GB), seed 003 the AKS time-slicing
walk-through (1x A100 80GB PCIe).
"""

from __future__ import annotations

from ansible_collections.gpuops.nvidia.plugins.module_utils.mig.resources import expected_resources

NOT_MODELLED = (
    "nvidia.com/cuda.", "nvidia.com/gfd.timestamp", "nvidia.com/gpu.machine", "nvidia.com/gpu.family",
    "nvidia.com/gpu.compute.",
)


def modelled(labels: dict) -> dict:
    return {k: v for k, v in labels.items() if not k.startswith(NOT_MODELLED)}


def test_seed_002_none_strategy_mig_disabled(gpu) -> None:
    result = expected_resources([gpu(0, "seed-a100")], None, "none")
    assert result["capacity"] == {"nvidia.com/gpu": 1} == result["allocatable"]
    seed = {
        "nvidia.com/cuda.driver.major": "450", "nvidia.com/gpu.count": "1", "nvidia.com/gpu.family": "ampere",
        "nvidia.com/gpu.memory": "40537", "nvidia.com/gpu.product": "A100-SXM4-40GB",
    }
    assert modelled(seed).items() <= result["labels"].items()


def test_seed_002_none_strategy_mig_enabled_labels_do_not_change(gpu) -> None:
    before = expected_resources([gpu(0, "seed-a100")], None, "none")
    after = expected_resources([gpu(0, "seed-a100")], {0: {"mig_enabled": True, "devices": {}}}, "none")
    assert after["capacity"] == {"nvidia.com/gpu": 1}
    for key in ("nvidia.com/gpu.count", "nvidia.com/gpu.memory", "nvidia.com/gpu.product"):
        assert after["labels"][key] == before["labels"][key]
    assert "nvidia.com/mig.strategy" not in after["labels"]


def test_seed_002_single_strategy_seven_1g_5gb(gpu) -> None:
    # nvidia-smi mig -cgi 19,19,19,19,19,19,19 -C
    result = expected_resources([gpu(0, "seed-a100", mig=True, instances=["1g.5gb"] * 7)], None, "single")
    assert result["capacity"] == {"nvidia.com/gpu": 7} == result["allocatable"]
    seed = {
        "nvidia.com/cuda.driver.major": "450", "nvidia.com/cuda.driver.minor": "80", "nvidia.com/cuda.driver.rev": "02",
        "nvidia.com/cuda.runtime.major": "11", "nvidia.com/cuda.runtime.minor": "0", "nvidia.com/gfd.timestamp": "1605657366",
        "nvidia.com/gpu.compute.major": "8", "nvidia.com/gpu.compute.minor": "0", "nvidia.com/gpu.count": "7",
        "nvidia.com/gpu.engines.copy": "1", "nvidia.com/gpu.engines.decoder": "0", "nvidia.com/gpu.engines.encoder": "0",
        "nvidia.com/gpu.engines.jpeg": "0", "nvidia.com/gpu.engines.ofa": "0", "nvidia.com/gpu.family": "ampere",
        "nvidia.com/gpu.machine": "NVIDIA DGX", "nvidia.com/gpu.memory": "4864", "nvidia.com/gpu.multiprocessors": "14",
        "nvidia.com/gpu.product": "A100-SXM4-40GB-MIG-1g.5gb", "nvidia.com/gpu.slices.ci": "1", "nvidia.com/gpu.slices.gi": "1",
        "nvidia.com/mig.strategy": "single",
    }
    assert modelled(seed).items() <= result["labels"].items()


def test_seed_002_mixed_strategy_one_of_each(gpu) -> None:
    # nvidia-smi mig -cgi 9,14,19 -C
    result = expected_resources([gpu(0, "seed-a100", mig=True, instances=["3g.20gb", "2g.10gb", "1g.5gb"])], None, "mixed")
    assert result["capacity"] == {"nvidia.com/mig-1g.5gb": 1, "nvidia.com/mig-2g.10gb": 1, "nvidia.com/mig-3g.20gb": 1}
    assert result["allocatable"] == result["capacity"]
    # The seed's dump names the 3g device "3g.21gb" while its capacity says mig-3g.20gb (two driver
    # runs); the model uses one name for both, the one the GPU reports.
    seed = {
        "nvidia.com/gpu.count": "1", "nvidia.com/gpu.memory": "40537", "nvidia.com/gpu.product": "A100-SXM4-40GB",
        "nvidia.com/mig-1g.5gb.count": "1", "nvidia.com/mig-1g.5gb.engines.copy": "1", "nvidia.com/mig-1g.5gb.engines.decoder": "0",
        "nvidia.com/mig-1g.5gb.engines.encoder": "0", "nvidia.com/mig-1g.5gb.engines.jpeg": "0", "nvidia.com/mig-1g.5gb.engines.ofa": "0",
        "nvidia.com/mig-1g.5gb.memory": "4864", "nvidia.com/mig-1g.5gb.multiprocessors": "14", "nvidia.com/mig-1g.5gb.slices.ci": "1",
        "nvidia.com/mig-1g.5gb.slices.gi": "1", "nvidia.com/mig-2g.10gb.count": "1", "nvidia.com/mig-2g.10gb.engines.copy": "2",
        "nvidia.com/mig-2g.10gb.engines.decoder": "1", "nvidia.com/mig-2g.10gb.engines.encoder": "0",
        "nvidia.com/mig-2g.10gb.engines.jpeg": "0", "nvidia.com/mig-2g.10gb.engines.ofa": "0", "nvidia.com/mig-2g.10gb.memory": "9984",
        "nvidia.com/mig-2g.10gb.multiprocessors": "28", "nvidia.com/mig-2g.10gb.slices.ci": "2", "nvidia.com/mig-2g.10gb.slices.gi": "2",
        "nvidia.com/mig-3g.20gb.count": "1", "nvidia.com/mig-3g.20gb.engines.copy": "3", "nvidia.com/mig-3g.20gb.engines.decoder": "2",
        "nvidia.com/mig-3g.20gb.engines.encoder": "0", "nvidia.com/mig-3g.20gb.engines.jpeg": "0", "nvidia.com/mig-3g.20gb.engines.ofa": "0",
        "nvidia.com/mig-3g.20gb.memory": "20096", "nvidia.com/mig-3g.20gb.multiprocessors": "42", "nvidia.com/mig-3g.20gb.slices.ci": "3",
        "nvidia.com/mig-3g.20gb.slices.gi": "3", "nvidia.com/mig.strategy": "mixed",
    }
    assert seed.items() <= result["labels"].items()


def test_seed_000_aks_mig1g_node_pool(node_gpus) -> None:
    # Standard_ND96asr_v4: 8x A100 40GB, profile MIG1g -> 7x 1g.5gb per GPU.
    gpus = node_gpus(8, mig=True, instances=["1g.5gb"] * 7)
    assert expected_resources(gpus, None, "single")["allocatable"] == {"nvidia.com/gpu": 56}
    assert expected_resources(gpus, None, "mixed")["allocatable"] == {"nvidia.com/mig-1g.5gb": 56}


def test_seed_003_time_slicing_then_mig(gpu) -> None:
    # Standard_NC24ads_A100_v4: 1x A100 80GB PCIe.
    node = [gpu(0, "a100-80gb-pcie")]
    plain = expected_resources(node, None, "none")
    assert plain["allocatable"] == {"nvidia.com/gpu": 1}
    sliced = expected_resources(node, None, "none", {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]})
    assert sliced["allocatable"] == {"nvidia.com/gpu": 4}
    # Time-slicing removed, node labelled all-1g.10gb; the GPU Operator default strategy is single.
    mig = expected_resources(node, {0: {"mig_enabled": True, "devices": {"1g.10gb": 7}}}, "single")
    assert mig["capacity"] == {"nvidia.com/gpu": 7} == mig["allocatable"]
    assert mig["labels"]["nvidia.com/gpu.product"] == "NVIDIA-A100-80GB-PCIe-MIG-1g.10gb"
