# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Resolving the kubelet's device IDs to GPU and MIG devices, as NVIDIA's device plugin names them."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from ansible_collections.gpuops.nvidia.plugins.module_utils.podresources.devices import (
    DeviceTable,
    UnresolvedDevice,
    allocatable_devices,
    pod_device_map,
    split_replica,
)

GPU0 = "GPU-0a0a0a0a-0000-4000-8000-000000000000"
GPU1 = "GPU-1b1b1b1b-1111-4111-8111-111111111111"
MIG_A = "MIG-aaaaaaaa-0000-5000-8000-000000000000"
MIG_B = "MIG-bbbbbbbb-0000-5000-8000-000000000000"
# GPU 0 runs MIG with two devices (handle indexes 0 and 3: NVML's handle indexes may have gaps); GPU 1 does not.
TABLE = [
    {"index": 0, "uuid": GPU0, "migs": [{"index": 0, "uuid": MIG_A, "gi_id": 7, "ci_id": 0},
                                        {"index": 3, "uuid": MIG_B, "gi_id": 1, "ci_id": 0}]},
    {"index": 1, "uuid": GPU1, "migs": []},
]


def pod(name, *devices, namespace="ml", container="main"):
    return {"namespace": namespace, "name": name,
            "containers": [{"name": container, "devices": [{"resource_name": r, "device_ids": list(ids)} for r, ids in devices]}]}


@pytest.mark.parametrize("device_id, expected", [
    (GPU1, (GPU1, GPU1)),                                   # uuid strategy, whole GPU
    (MIG_A, (MIG_A, GPU0)),                                 # uuid strategy, MIG device
    ("MIG-" + GPU0 + "/1/0", (MIG_B, GPU0)),                # MIG UUID of drivers before R470
    ("1", (GPU1, GPU1)),                                    # index strategy, whole GPU
    ("0:3", (MIG_B, GPU0)),                                 # index strategy, <gpu>:<mig>
    (GPU1 + "::5", (GPU1, GPU1)),                           # time-slicing replica of a GPU
    (MIG_A + "::0", (MIG_A, GPU0)),                         # replica of a MIG device
    ("0:0::2", (MIG_A, GPU0)),                              # replica under the index strategy
])
def test_each_form_the_device_plugin_registers_resolves(device_id, expected):
    assert DeviceTable(TABLE).resolve(device_id) == expected


@pytest.mark.parametrize("device_id", ["GPU-ffffffff-0000-4000-8000-000000000000", "2", "0:1", "1:0",
                                       "MIG-" + GPU1 + "/1/0", "nvidia0", ""])
def test_ids_of_no_device_resolve_to_nothing(device_id):
    assert DeviceTable(TABLE).resolve(device_id) is None


@given(st.sampled_from([GPU0, GPU1, MIG_A, MIG_B, "0", "1", "0:0", "0:3"]), st.integers(min_value=0, max_value=10**6))
def test_a_replica_resolves_to_its_device(device_id, replica):
    table = DeviceTable(TABLE)
    assert split_replica("{0}::{1}".format(device_id, replica)) == (device_id, replica)
    assert table.resolve(device_id) is not None
    assert table.resolve("{0}::{1}".format(device_id, replica)) == table.resolve(device_id)


@given(st.lists(st.tuples(st.sampled_from(["nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "nvidia.com/gpu.shared"]),
                          st.lists(st.sampled_from([GPU0, GPU1, MIG_A, MIG_B, "1", "0:3"]), min_size=1, max_size=3)),
                min_size=1, max_size=3))
def test_every_pod_maps_to_the_devices_and_gpus_behind_its_ids(devices):
    table = DeviceTable(TABLE)
    [entry] = pod_device_map([pod("p", *devices)], table)
    resolved = [table.resolve(i) for _r, ids in devices for i in ids]
    assert set(entry["devices"]) == {r[0] for r in resolved}
    assert set(entry["gpus"]) == {r[1] for r in resolved}
    assert len(entry["devices"]) == len(set(entry["devices"]))


def test_a_pod_with_two_resources_and_other_resources_ignored():
    listing = [
        pod("train", ("nvidia.com/mig-1g.10gb", [MIG_A]), ("nvidia.com/gpu", [GPU1 + "::3"]), ("example.com/fpga", ["f0"])),
        pod("cpu-only", ("example.com/fpga", ["f1"])),
        pod("idle"),
    ]
    assert pod_device_map(listing, DeviceTable(TABLE)) == [{
        "namespace": "ml", "name": "train",
        "resources": {"nvidia.com/gpu": [GPU1 + "::3"], "nvidia.com/mig-1g.10gb": [MIG_A]},
        "devices": [GPU1, MIG_A],
        "gpus": [GPU1, GPU0],
        "parents": {MIG_A: GPU0},
    }]


def test_an_id_of_no_device_fails_the_whole_map_naming_it():
    with pytest.raises(UnresolvedDevice, match=r"device ID '7' of nvidia.com/gpu held by pod ml/x is no GPU or MIG device"):
        pod_device_map([pod("ok", ("nvidia.com/gpu", [GPU1])), pod("x", ("nvidia.com/gpu", ["7"]))], DeviceTable(TABLE))


def test_allocatable_keeps_nvidia_resources():
    assert allocatable_devices([{"resource_name": "nvidia.com/gpu", "device_ids": [GPU1, GPU0, GPU1]},
                                {"resource_name": "cpu", "device_ids": ["0"]}]) == {"nvidia.com/gpu": sorted([GPU0, GPU1])}
