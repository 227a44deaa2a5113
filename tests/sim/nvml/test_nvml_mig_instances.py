"""GPU and compute instances through the real pynvml on the simulated library."""

from __future__ import annotations

import ctypes

import pynvml
import pytest

from gpuops_sim import nvml as sim
from gpuops_sim.nvml.models import MODELS, MIB, mig_memory_size_gb
from test_nvml_models import EXPECTED_MAX, SUFFIX

MIG_MODELS = [m.name for m in MODELS if m.mig_capable]


def balanced(model: str) -> dict[str, int]:
    """mig-parted's all-balanced: 1 x 3g, 1 x 2g, 2 x 1g of the plain profiles (the 1g with the
    most instances), largest first so the automatic placement cannot fragment the grid."""
    plain = {name: count for name, count in EXPECTED_MAX[model].items() if "+" not in name and "-" not in name}
    layout = {}
    for slices, count in ((3, 1), (2, 1), (1, 2)):
        choices = sorted((-n, name) for name, n in plain.items() if name.startswith(f"{slices}g."))
        if choices:
            layout[choices[0][1]] = count
    return layout


def profiles(handle) -> dict[str, pynvml.c_nvmlGpuInstanceProfileInfo_v2_t]:
    """Every GI profile the device reports, keyed by mig-parted name (as go-nvlib computes it)."""
    total = pynvml.nvmlDeviceGetMemoryInfo(handle).total
    found = {}
    for enum in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, enum)
        except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
            continue
        suffix = SUFFIX.get(enum, "")
        name = f"{info.sliceCount}g.{mig_memory_size_gb(total, info.memorySizeMB)}gb{suffix}"
        assert info.name == f"MIG {name}"
        found[name] = info
    return found


def default_ci(gi, slices: int):
    enum = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4}[slices]
    info = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, enum, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
    return pynvml.nvmlGpuInstanceCreateComputeInstance(gi, info.id)


@pytest.mark.parametrize("model", MIG_MODELS)
def test_each_profile_alone_up_to_its_count_then_insufficient_resources(simulated_node, model):
    simulated_node(model, mig_enabled=True)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    found = profiles(handle)
    assert {name: info.instanceCount for name, info in found.items()} == EXPECTED_MAX[model]
    for name, info in found.items():
        assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, info.id) == info.instanceCount
        created = [pynvml.nvmlDeviceCreateGpuInstance(handle, info.id) for _attempt in range(info.instanceCount)]
        assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, info.id) == 0
        with pytest.raises(pynvml.NVMLError_InsufficientResources):
            pynvml.nvmlDeviceCreateGpuInstance(handle, info.id)
        starts = sorted(pynvml.nvmlGpuInstanceGetInfo(gi).placement.start for gi in created)
        assert len(set(starts)) == len(starts), name
        for gi in created:
            pynvml.nvmlGpuInstanceDestroy(gi)
        assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, info.id) == info.instanceCount


@pytest.mark.parametrize("model", MIG_MODELS)
def test_all_balanced_layout_with_default_compute_instances(simulated_node, model):
    path = simulated_node(model, mig_enabled=True)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    found = profiles(handle)
    for name, count in balanced(model).items():
        for _attempt in range(count):
            gi = pynvml.nvmlDeviceCreateGpuInstance(handle, found[name].id)
            default_ci(gi, found[name].sliceCount)
    shown = sim.show(path)["gpus"][0]
    layout: dict[str, int] = {}
    for gi in shown["gpu_instances"]:
        layout[gi["profile"]] = layout.get(gi["profile"], 0) + 1
        assert [ci["profile"] for ci in gi["compute_instances"]] == [gi["profile"]]
    assert layout == balanced(model)
    assert pynvml.nvmlDeviceGetMaxMigDeviceCount(handle) in (4, 7)
    mig_names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i))
                 for i in range(sum(balanced(model).values()))]
    assert sorted(n.removeprefix(f"{model} MIG ") for n in mig_names) == sorted(
        name for name, count in balanced(model).items() for _attempt in range(count))


def test_automatic_placement_follows_the_observed_driver_order(simulated_node):
    simulated_node("NVIDIA H100 80GB HBM3", mig_enabled=True)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    infos = [pynvml.nvmlGpuInstanceGetInfo(pynvml.nvmlDeviceCreateGpuInstance(handle, 19)) for _attempt in range(7)]
    assert [i.placement.start for i in infos] == [6, 4, 5, 0, 1, 2, 3]
    assert [i.id for i in infos] == [13, 11, 12, 7, 8, 9, 10]


def test_known_fragmentation_issue_1g_1g_2g_then_3g_fails(simulated_node):
    simulated_node("NVIDIA A100-SXM4-40GB", mig_enabled=True)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    for profile_id in (19, 19, 14):
        pynvml.nvmlDeviceCreateGpuInstance(handle, profile_id)
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        pynvml.nvmlDeviceCreateGpuInstance(handle, 9)


def placement(start: int, size: int) -> pynvml.c_nvmlGpuInstancePlacement_t:
    value = pynvml.c_nvmlGpuInstancePlacement_t()
    value.start, value.size = start, size
    return value


def test_explicit_placements_and_cross_profile_capacity(simulated_node):
    simulated_node("NVIDIA A100-SXM4-40GB", mig_enabled=True)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    gi = pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(handle, 9, ctypes.byref(placement(0, 4)))
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 19) == 3
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 5) == 0
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(handle, 19, ctypes.byref(placement(2, 1)))
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(handle, 19, ctypes.byref(placement(7, 1)))
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(handle, 14, ctypes.byref(placement(4, 1)))
    pynvml.nvmlGpuInstanceDestroy(gi)
    # the structure passed by value (a Python-only convenience some callers rely on) works too
    gi = pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(handle, 9, placement(4, 4))
    info = pynvml.nvmlGpuInstanceGetInfo(gi)
    assert (info.id, info.profileId, info.placement.start, info.placement.size) == (2, 9, 4, 4)
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 19) == 4
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 5) == 1


def test_possible_placements_two_phase_and_insufficient_size(simulated_node):
    simulated_node("NVIDIA A100-SXM4-40GB", mig_enabled=True)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    count = ctypes.c_uint(0)
    pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, 19, None, ctypes.byref(count))
    assert count.value == 7
    small = (pynvml.c_nvmlGpuInstancePlacement_t * 2)()
    count.value = 2
    with pytest.raises(pynvml.NVMLError_InsufficientSize):
        pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, 19, small, ctypes.byref(count))
    assert count.value == 7
    array = (pynvml.c_nvmlGpuInstancePlacement_t * 7)()
    pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, 19, array, ctypes.byref(count))
    assert [(p.start, p.size) for p in array] == [(s, 1) for s in range(7)]
    # placements list every legal start, occupied or not
    pynvml.nvmlDeviceCreateGpuInstance(handle, 0)
    pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, 15, None, ctypes.byref(count))
    assert count.value == 4


def test_get_gpu_instances_by_profile_and_by_id(simulated_node):
    simulated_node("NVIDIA A100-SXM4-40GB", mig_enabled=True)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    created = [pynvml.nvmlDeviceCreateGpuInstance(handle, 14) for _attempt in range(2)]
    count = ctypes.c_uint(3)
    array = (pynvml.c_nvmlGpuInstance_t * 3)()
    pynvml.nvmlDeviceGetGpuInstances(handle, 14, array, ctypes.byref(count))
    assert count.value == 2
    ids = sorted(pynvml.nvmlGpuInstanceGetInfo(array[i]).id for i in range(count.value))
    assert ids == sorted(pynvml.nvmlGpuInstanceGetInfo(gi).id for gi in created)
    same = pynvml.nvmlDeviceGetGpuInstanceById(handle, ids[0])
    assert pynvml.nvmlGpuInstanceGetInfo(same).id == ids[0]
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlDeviceGetGpuInstanceById(handle, 1)


def test_error_codes_for_bad_profiles_and_disabled_mig(simulated_node):
    simulated_node("NVIDIA A30", count=2, mig_enabled=True)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, pynvml.NVML_GPU_INSTANCE_PROFILE_7_SLICE)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceCreateGpuInstance(handle, 19)  # an A100 profile id, not on A30
    assert pynvml.nvmlDeviceGetGpuInstanceProfileInfoById(handle, 0).name == "MIG 4g.24gb"
    assert pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, 0, version=1).memorySizeMB == 5952
    pynvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_DISABLE)
    assert pynvml.nvmlDeviceGetMigMode(handle) == [0, 0]
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceCreateGpuInstance(handle, 14)
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 14) == 0
    assert pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, 0).id == 14  # queries work with MIG off


def test_compute_instances_profiles_capacity_and_teardown_order(simulated_node):
    path = simulated_node("NVIDIA A100-SXM4-40GB", mig_enabled=True)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    gi = pynvml.nvmlDeviceCreateGpuInstance(handle, 9)
    one = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, 0, 0)
    assert (one.id, one.sliceCount, one.instanceCount, one.multiprocessorCount, one.name) == (0, 1, 3, 14, "MIG 1c.3g.20gb")
    assert pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, 2, 0).name == "MIG 3g.20gb"
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, 3, 0)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, 0, 1)
    cis = [pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 0) for _attempt in range(3)]
    assert [pynvml.nvmlComputeInstanceGetInfo(ci).id for ci in cis] == [0, 1, 2]
    assert pynvml.nvmlGpuInstanceGetComputeInstanceRemainingCapacity(gi, 2) == 0
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        pynvml.nvmlGpuInstanceCreateComputeInstance(gi, 0)
    count = ctypes.c_uint(3)
    array = (pynvml.c_nvmlComputeInstance_t * 3)()
    pynvml.nvmlGpuInstanceGetComputeInstances(gi, 0, array, ctypes.byref(count))
    assert count.value == 3
    with pytest.raises(pynvml.NVMLError_InUse):
        pynvml.nvmlGpuInstanceDestroy(gi)
    mig_uuid = sim.show(path)["gpus"][0]["gpu_instances"][0]["compute_instances"][1]["device_uuid"]
    sim.attach_process(path, mig_uuid, 4242, 512)
    with pytest.raises(pynvml.NVMLError_InUse):
        pynvml.nvmlComputeInstanceDestroy(cis[1])
    sim.detach_process(path, 4242)
    for ci in cis:
        pynvml.nvmlComputeInstanceDestroy(ci)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):  # stale handle
        pynvml.nvmlComputeInstanceGetInfo(cis[0])
    pynvml.nvmlGpuInstanceDestroy(gi)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlGpuInstanceGetInfo(gi)
    assert sim.show(path)["gpus"][0]["gpu_instances"] == []


def test_compute_instance_with_placement(simulated_node):
    simulated_node("NVIDIA H100 80GB HBM3", mig_enabled=True)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    gi = pynvml.nvmlDeviceCreateGpuInstance(handle, 5)  # 4g: CI widths 1, 2, 4
    count = ctypes.c_uint(0)
    pynvml.nvmlGpuInstanceGetComputeInstancePossiblePlacements(gi, 1, None, ctypes.byref(count))
    array = (pynvml.c_nvmlComputeInstancePlacement_t * count.value)()
    pynvml.nvmlGpuInstanceGetComputeInstancePossiblePlacements(gi, 1, array, ctypes.byref(count))
    assert [(p.start, p.size) for p in array] == [(0, 2), (2, 2)]
    where = pynvml.c_nvmlComputeInstancePlacement_t()
    where.start, where.size = 2, 2
    ci = pynvml.nvmlGpuInstanceCreateComputeInstanceWithPlacement(gi, 1, ctypes.byref(where))
    info = pynvml.nvmlComputeInstanceGetInfo(ci)
    assert (info.profileId, info.placement.start, info.placement.size) == (1, 2, 2)
    assert pynvml.nvmlGpuInstanceGetInfo(info.gpuInstance).profileId == 5
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        pynvml.nvmlGpuInstanceCreateComputeInstanceWithPlacement(gi, 0, _ci_placement(3))
    assert pynvml.nvmlGpuInstanceGetComputeInstanceRemainingCapacity(gi, 0) == 2
    mig_dev = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, 0)
    attrs = pynvml.nvmlDeviceGetAttributes(mig_dev)
    assert (attrs.gpuInstanceSliceCount, attrs.computeInstanceSliceCount, attrs.multiprocessorCount,
            attrs.memorySizeMB) == (4, 2, 32, 40448)
    assert pynvml.nvmlDeviceGetName(mig_dev) == "NVIDIA H100 80GB HBM3 MIG 2c.4g.40gb"
    assert pynvml.nvmlDeviceGetMemoryInfo(mig_dev).total == 40448 * MIB


def _ci_placement(start: int):
    where = pynvml.c_nvmlComputeInstancePlacement_t()
    where.start, where.size = start, 1
    return ctypes.byref(where)


def test_an_instance_with_all_media_engines_leaves_room_only_for_no_media_ones(simulated_node):
    # nvml.h: _ALL_ME blocks every profile except _NO_ME ones (RTX PRO 6000: +me.all id 65, -me id 67).
    simulated_node("NVIDIA RTX PRO 6000 Blackwell Server Edition", mig_enabled=True)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    everything = pynvml.nvmlDeviceCreateGpuInstance(handle, 65)
    for blocked in (14, 21, 47, 5, 35, 64):
        assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, blocked) == 0
        with pytest.raises(pynvml.NVMLError_InsufficientResources):
            pynvml.nvmlDeviceCreateGpuInstance(handle, blocked)
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 67) == 3
    pynvml.nvmlDeviceCreateGpuInstance(handle, 67)
    pynvml.nvmlGpuInstanceDestroy(everything)
    # and the other way round: beside a plain instance no +me.all can be created
    pynvml.nvmlDeviceCreateGpuInstance(handle, 14)
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        pynvml.nvmlDeviceCreateGpuInstance(handle, 65)
