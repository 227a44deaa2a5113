# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The PodResources client against a real gRPC server (the generated servicer) on a unix socket:
every answer, and every way the map cannot be had, named in the result."""

from __future__ import annotations

import json
import os
import threading
from concurrent import futures

import grpc
import pytest

from ansible_collections.gpuops.nvidia.plugins.module_utils.podresources.client import (
    DeviceTableUnavailable,
    device_map,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.podresources.v1 import api_pb2, api_pb2_grpc

GPU0 = "GPU-0a0a0a0a-0000-4000-8000-000000000000"
GPU1 = "GPU-1b1b1b1b-1111-4111-8111-111111111111"
MIG_A = "MIG-aaaaaaaa-0000-5000-8000-000000000000"
MIG_B = "MIG-bbbbbbbb-0000-5000-8000-000000000000"
TABLE = [
    {"index": 0, "uuid": GPU0, "migs": [{"index": 0, "uuid": MIG_A, "gi_id": 7, "ci_id": 0},
                                        {"index": 1, "uuid": MIG_B, "gi_id": 8, "ci_id": 0}]},
    {"index": 1, "uuid": GPU1, "migs": []},
]


def devices(resource, *ids):
    return api_pb2.ContainerDevices(resource_name=resource, device_ids=list(ids))


def pod(namespace, name, *containers):
    return api_pb2.PodResources(namespace=namespace, name=name, containers=[
        api_pb2.ContainerResources(name=cname, devices=list(devs)) for cname, devs in containers])


class Kubelet(api_pb2_grpc.PodResourcesListerServicer):
    """Answers what a test sets: pods, allocatable, or a gRPC status for a method."""

    def __init__(self):
        self.pods = []
        self.allocatable = []
        self.errors = {}
        self.hang = threading.Event()
        self.hanging = False

    def _fail(self, method, context):
        if self.hanging:
            self.hang.wait(10)
        if method in self.errors:
            context.abort(self.errors[method], "{0} refused by the test".format(method))

    def List(self, request, context):  # noqa: N802
        self._fail("List", context)
        return api_pb2.ListPodResourcesResponse(pod_resources=self.pods)

    def GetAllocatableResources(self, request, context):  # noqa: N802
        self._fail("GetAllocatableResources", context)
        return api_pb2.AllocatableResourcesResponse(devices=self.allocatable)


@pytest.fixture
def kubelet(tmp_path):
    service = Kubelet()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(service, server)
    service.socket = str(tmp_path / "kubelet.sock")
    server.add_insecure_port("unix://" + service.socket)
    server.start()
    yield service
    service.hang.set()
    server.stop(grace=None).wait()


def read(path, timeout=5.0):
    return device_map(path, timeout, lambda: TABLE)


def test_pods_with_mig_and_whole_gpus_of_two_resources(kubelet):
    kubelet.pods = [
        pod("ml", "train", ("main", [devices("nvidia.com/mig-1g.10gb", MIG_A), devices("nvidia.com/gpu", GPU1)]),
            ("sidecar", [devices("nvidia.com/mig-1g.10gb", MIG_B)])),
        pod("web", "front", ("main", [])),
        pod("kube-system", "fpga", ("main", [devices("example.com/fpga", "f0")])),
    ]
    kubelet.allocatable = [devices("nvidia.com/gpu", GPU1), devices("nvidia.com/mig-1g.10gb", MIG_B, MIG_A),
                           devices("example.com/fpga", "f0")]
    result = read(kubelet.socket)
    assert result["available"] is True and result["error"] is None and result["reason"] is None
    assert result["pods"] == [{
        "namespace": "ml", "name": "train",
        "resources": {"nvidia.com/gpu": [GPU1], "nvidia.com/mig-1g.10gb": [MIG_A, MIG_B]},
        "devices": [GPU1, MIG_A, MIG_B],
        "gpus": [GPU1, GPU0],
        "parents": {MIG_A: GPU0, MIG_B: GPU0},
    }]
    assert result["allocatable"] == {"nvidia.com/gpu": [GPU1], "nvidia.com/mig-1g.10gb": [MIG_A, MIG_B]}


def test_index_strategy_and_time_sliced_replicas(kubelet):
    kubelet.pods = [
        pod("ml", "by-index", ("main", [devices("nvidia.com/gpu", "1"), devices("nvidia.com/mig-1g.10gb", "0:1")])),
        pod("ml", "shared-a", ("main", [devices("nvidia.com/gpu.shared", GPU1 + "::0")])),
        pod("ml", "shared-b", ("main", [devices("nvidia.com/gpu.shared", GPU1 + "::3", MIG_A + "::1")])),
    ]
    result = read(kubelet.socket)
    by_name = {entry["name"]: (entry["devices"], entry["gpus"]) for entry in result["pods"]}
    assert by_name == {
        "by-index": ([GPU1, MIG_B], [GPU1, GPU0]),
        "shared-a": ([GPU1], [GPU1]),
        "shared-b": ([GPU1, MIG_A], [GPU1, GPU0]),
    }


def test_a_kubelet_without_allocatable_resources_still_gives_the_map(kubelet):
    kubelet.errors["GetAllocatableResources"] = grpc.StatusCode.UNIMPLEMENTED
    kubelet.pods = [pod("ml", "p", ("main", [devices("nvidia.com/gpu", GPU0)]))]
    result = read(kubelet.socket)
    assert result["available"] is True and result["allocatable"] == {} and len(result["pods"]) == 1


def test_nvml_is_not_opened_when_no_pod_holds_a_gpu(kubelet):
    def no_nvml():
        raise AssertionError("NVML read")
    kubelet.pods = [pod("web", "front", ("main", []))]
    assert device_map(kubelet.socket, 5.0, no_nvml)["pods"] == []


@pytest.mark.parametrize("code, error, words", [
    (grpc.StatusCode.UNIMPLEMENTED, "unimplemented", "answered PodResources v1 List with gRPC UNIMPLEMENTED: this kubelet does not serve the v1 API"),
    (grpc.StatusCode.UNAVAILABLE, "grpc_unavailable", "answered PodResources v1 List with gRPC UNAVAILABLE"),
    (grpc.StatusCode.PERMISSION_DENIED, "grpc_permission_denied", "with gRPC PERMISSION_DENIED"),
])
def test_a_server_error_is_named_with_its_grpc_code(kubelet, code, error, words):
    kubelet.errors["List"] = code
    result = read(kubelet.socket)
    assert result["available"] is False and result["pods"] == []
    assert result["error"] == error
    assert words in result["reason"] and kubelet.socket in result["reason"]


def test_no_answer_within_the_timeout(kubelet):
    kubelet.hanging = True
    result = read(kubelet.socket, timeout=0.3)
    assert result["error"] == "timeout"
    assert result["reason"] == ("the kubelet at {0} did not answer PodResources v1 List within 0.3s "
                                "(gRPC DEADLINE_EXCEEDED)".format(kubelet.socket))


def test_socket_missing(tmp_path):
    path = str(tmp_path / "pod-resources" / "kubelet.sock")
    result = read(path)
    assert result == {"available": False, "error": "socket_missing", "socket": path, "pods": [], "allocatable": {},
                      "reason": "the kubelet's PodResources socket {0} does not exist (a kubelet without the PodResources "
                                "API, or one whose root directory is elsewhere: set kubelet_pod_resources_socket)".format(path)}


def test_not_a_socket_and_nobody_listening(tmp_path):
    plain = tmp_path / "kubelet.sock"
    plain.write_text("")
    assert read(str(plain))["error"] == "not_a_socket"
    import socket
    stale = str(tmp_path / "stale.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(stale)
    listener.close()  # the file stays, nobody listens: a kubelet that is not running
    result = read(stale)
    assert result["error"] == "connect_failed" and "ECONNREFUSED" in result["reason"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_permission_denied_for_a_user_who_cannot_open_the_socket(kubelet):
    """As a non-root user on a node: a real EACCES, in a child that dropped to nobody."""
    kubelet.pods = [pod("ml", "p", ("main", [devices("nvidia.com/gpu", GPU0)]))]
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.close(reader)
            os.setgid(65534)
            os.setuid(65534)
            os.write(writer, json.dumps(read(kubelet.socket)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        text = pipe.read()
    os.waitpid(child, 0)
    result = json.loads(text)
    assert result["available"] is False and result["error"] == "permission_denied"
    assert result["reason"].startswith("the kubelet's PodResources socket {0}: permission denied".format(kubelet.socket))


def test_an_id_no_device_has_makes_the_map_unavailable(kubelet):
    kubelet.pods = [pod("ml", "p", ("main", [devices("nvidia.com/gpu", "GPU-ffffffff-0000-4000-8000-000000000000")]))]
    result = read(kubelet.socket)
    assert result["available"] is False and result["error"] == "unresolved_device"
    assert "held by pod ml/p is no GPU or MIG device of this node" in result["reason"]


def test_nvml_failing_makes_the_map_unavailable(kubelet):
    def broken():
        raise DeviceTableUnavailable("NVML is not available: Driver Not Loaded")
    kubelet.pods = [pod("ml", "p", ("main", [devices("nvidia.com/gpu", GPU0)]))]
    result = device_map(kubelet.socket, 5.0, broken)
    assert result["error"] == "nvml" and result["reason"].endswith("NVML is not available: Driver Not Loaded")
