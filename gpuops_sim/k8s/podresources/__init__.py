"""The simulated kubelet's PodResources v1 gRPC service, one unix socket per node.

A real ``grpc.server`` from the simulator's own copy of the generated stubs (``v1/``, made by
tools/gen_podresources.py from the kubelet's api.proto) answers ``List``,
``GetAllocatableResources`` and ``Get`` from what the simulated kubelet allocated: the device IDs
the simulated device plugin advertised (GPU and MIG UUIDs, ``<uuid>::<n>`` for time-sliced
replicas), per container and resource, exactly as a real kubelet reports them.

``source(node)`` returns ``(pods, allocatable)``: ``pods`` maps ``(namespace, name)`` to
``[(container, resource, [device ids])]`` and ``allocatable`` maps a resource to its device IDs.
It is called on gRPC's threads and must return data nobody mutates afterwards.
"""

from __future__ import annotations

import os
import threading
from concurrent import futures
from typing import Callable, Mapping, Sequence

import grpc

from gpuops_sim.k8s.podresources.v1 import api_pb2, api_pb2_grpc

#: sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH = 107

PodDevices = Mapping[tuple[str, str], Sequence[tuple[str, str, Sequence[str]]]]
Source = Callable[[str], tuple[PodDevices, Mapping[str, Sequence[str]]]]


def check_socket_path(path: str) -> None:
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise ValueError(f"PodResources socket path {path} is {size} bytes; a unix socket path holds at most "
                         f"{MAX_SOCKET_PATH}: use a shorter cluster directory")


def _pod_message(key: tuple[str, str], containers: Sequence[tuple[str, str, Sequence[str]]]) -> api_pb2.PodResources:
    by_container: dict[str, list[api_pb2.ContainerDevices]] = {}
    for container, resource, ids in containers:
        by_container.setdefault(container, []).append(
            api_pb2.ContainerDevices(resource_name=resource, device_ids=list(ids)))
    return api_pb2.PodResources(namespace=key[0], name=key[1], containers=[
        api_pb2.ContainerResources(name=name, devices=devices) for name, devices in by_container.items()])


class PodResourcesService(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, node: str, source: Source) -> None:
        self.node = node
        self.source = source

    def List(self, request, context):  # noqa: N802 - the gRPC method's name
        pods, _allocatable = self.source(self.node)
        return api_pb2.ListPodResourcesResponse(pod_resources=[_pod_message(key, pods[key]) for key in sorted(pods)])

    def GetAllocatableResources(self, request, context):  # noqa: N802
        _pods, allocatable = self.source(self.node)
        return api_pb2.AllocatableResourcesResponse(devices=[
            api_pb2.ContainerDevices(resource_name=name, device_ids=list(ids)) for name, ids in sorted(allocatable.items())])

    def Get(self, request, context):  # noqa: N802
        pods, _allocatable = self.source(self.node)
        key = (request.pod_namespace, request.pod_name)
        if key not in pods:
            context.abort(grpc.StatusCode.NOT_FOUND, f"pod {key[0]}/{key[1]} not found")
        return api_pb2.GetPodResourcesResponse(pod_resources=_pod_message(key, pods[key]))


class PodResourcesServers:
    """One gRPC server per node, on that node's socket; one thread pool for all of them."""

    def __init__(self, source: Source, socket_path: Callable[[str], str | None], workers: int = 4) -> None:
        self.source = source
        self.socket_path = socket_path
        self._executor = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sim-podresources")
        self._servers: dict[str, tuple[grpc.Server, str]] = {}
        self._lock = threading.Lock()

    def start(self, node: str) -> None:
        path = self.socket_path(node)
        if not path:
            return
        check_socket_path(path)
        with self._lock:
            if node in self._servers:
                return
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.exists(path):
                os.unlink(path)
            server = grpc.server(self._executor)
            api_pb2_grpc.add_PodResourcesListerServicer_to_server(PodResourcesService(node, self.source), server)
            server.add_insecure_port("unix://" + path)
            server.start()
            self._servers[node] = (server, path)

    def stop(self, node: str) -> None:
        with self._lock:
            entry = self._servers.pop(node, None)
        if entry is not None:
            entry[0].stop(grace=None).wait()
            if os.path.exists(entry[1]):
                os.unlink(entry[1])

    def stop_all(self) -> None:
        for node in list(self._servers):
            self.stop(node)
        self._executor.shutdown(wait=False)


def read_device_ids(path: str, timeout: float = 5.0) -> dict[tuple[str, str], list[str]]:
    """What a node's socket lists, ``(namespace, name) → device ids``, for `cluster status`; {} when it cannot be read."""
    if not os.path.exists(path):
        return {}
    with grpc.insecure_channel("unix://" + path) as channel:
        try:
            answer = api_pb2_grpc.PodResourcesListerStub(channel).List(api_pb2.ListPodResourcesRequest(), timeout=timeout)
        except grpc.RpcError:
            return {}
    return {(pod.namespace, pod.name): [i for c in pod.containers for d in c.devices for i in d.device_ids]
            for pod in answer.pod_resources}


__all__ = ["read_device_ids", "MAX_SOCKET_PATH", "PodResourcesServers", "PodResourcesService", "check_socket_path"]
