# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection: no compatibility promise outside gpuops.nvidia.
"""The kubelet's PodResources v1 service over its unix socket: the I/O edge of gpu_pod_devices.

``read_pod_resources`` answers plain data or raises ``PodResourcesUnavailable`` whose ``error`` is
one short key and whose ``reason`` says exactly what happened (the path, the OS error, the gRPC
status code), for a caller that must fall back and say why.
"""

from __future__ import annotations

import errno
import os
import socket as socketlib
import stat
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.gpuops.nvidia.plugins.module_utils.podresources.devices import (
    GPU_RESOURCE_PREFIX, DeviceTable, UnresolvedDevice, allocatable_devices, pod_device_map, unavailable,
)

try:
    import grpc
    from ansible_collections.gpuops.nvidia.plugins.module_utils.podresources.v1 import api_pb2, api_pb2_grpc
    HAS_GRPC = True
    GRPC_IMPORT_ERROR = None
except Exception as _exc:  # pylint: disable=broad-except  # ImportError, or protobuf's VersionError
    grpc = None
    api_pb2 = api_pb2_grpc = None
    HAS_GRPC = False
    GRPC_IMPORT_ERROR = _exc

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"


class PodResourcesUnavailable(Exception):
    def __init__(self, error: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


def check_socket(path: str, timeout: float) -> None:
    """Connect once without gRPC, to name the OS's own answer (gRPC folds them all into UNAVAILABLE)."""
    where = "the kubelet's PodResources socket " + path
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise PodResourcesUnavailable("socket_missing", where + " does not exist (a kubelet without the PodResources "
                                      "API, or one whose root directory is elsewhere: set kubelet_pod_resources_socket)")
    except PermissionError as exc:
        raise PodResourcesUnavailable("permission_denied", "{0}: permission denied ({1}); reading it needs root on "
                                      "the node (become: true)".format(where, exc.strerror))
    if not stat.S_ISSOCK(mode):
        raise PodResourcesUnavailable("not_a_socket", where + " is not a unix socket")
    probe = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
    except PermissionError as exc:
        raise PodResourcesUnavailable("permission_denied", "{0}: permission denied ({1}); reading it needs root on "
                                      "the node (become: true)".format(where, exc.strerror))
    except socketlib.timeout:
        raise PodResourcesUnavailable("timeout", "{0}: no connection within {1:g}s".format(where, timeout))
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, "OSError")
        raise PodResourcesUnavailable("connect_failed", "{0}: cannot connect ({1}: {2}); is the kubelet running?".format(
            where, name, exc.strerror))
    finally:
        probe.close()


def _rpc_failure(method: str, path: str, timeout: float, exc: Any) -> PodResourcesUnavailable:
    code = exc.code() if hasattr(exc, "code") else None
    name = getattr(code, "name", "UNKNOWN")
    details = exc.details() if hasattr(exc, "details") else str(exc)
    where = "the kubelet at {0} answered PodResources v1 {1} with gRPC {2}".format(path, method, name)
    if name == "DEADLINE_EXCEEDED":
        return PodResourcesUnavailable("timeout", "the kubelet at {0} did not answer PodResources v1 {1} within {2:g}s "
                                       "(gRPC DEADLINE_EXCEEDED)".format(path, method, timeout))
    if name == "UNIMPLEMENTED":
        return PodResourcesUnavailable("unimplemented", where + ": this kubelet does not serve the v1 API ({0})".format(details))
    return PodResourcesUnavailable("grpc_" + name.lower(), "{0}: {1}".format(where, details))


def _listing(response: Any) -> List[Dict[str, Any]]:
    return [
        {
            "namespace": pod.namespace,
            "name": pod.name,
            "containers": [
                {"name": container.name,
                 "devices": [{"resource_name": d.resource_name, "device_ids": list(d.device_ids)} for d in container.devices]}
                for container in pod.containers
            ],
        }
        for pod in response.pod_resources
    ]


def read_pod_resources(path: str, timeout: float) -> Tuple[List[Dict[str, Any]], Optional[List[Dict[str, Any]]]]:
    """(List answer, GetAllocatableResources answer or None when the kubelet lacks it), as plain data."""
    if not HAS_GRPC:
        raise PodResourcesUnavailable("library_missing", "the Python libraries grpcio and protobuf (requirements.txt) "
                                      "cannot be imported on the node: {0}".format(GRPC_IMPORT_ERROR))
    check_socket(path, timeout)
    channel = grpc.insecure_channel("unix://" + os.path.abspath(path))
    try:
        stub = api_pb2_grpc.PodResourcesListerStub(channel)
        try:
            listing = _listing(stub.List(api_pb2.ListPodResourcesRequest(), timeout=timeout))
        except grpc.RpcError as exc:
            raise _rpc_failure("List", path, timeout, exc)
        try:
            answer = stub.GetAllocatableResources(api_pb2.AllocatableResourcesRequest(), timeout=timeout)
            allocatable: Optional[List[Dict[str, Any]]] = [
                {"resource_name": d.resource_name, "device_ids": list(d.device_ids)} for d in answer.devices]
        except grpc.RpcError:
            allocatable = None  # before Kubernetes 1.28 a feature gate; the map does not need it
        return listing, allocatable
    finally:
        channel.close()


def device_map(path: str, timeout: float, read_table: Callable[[], List[Dict[str, Any]]]) -> Dict[str, Any]:
    """The module's result: each pod's ``nvidia.com/*`` devices resolved through ``read_table``
    (``Nvml.device_table``), or ``available: false`` with the reason the map cannot be had."""
    try:
        listing, allocatable = read_pod_resources(path, timeout)
    except PodResourcesUnavailable as exc:
        return unavailable(path, exc.error, exc.reason)
    held = [pod for pod in listing if any(
        str(d.get("resource_name") or "").startswith(GPU_RESOURCE_PREFIX) for c in pod["containers"] for d in c["devices"])]
    try:
        table = DeviceTable(read_table() if held else ())
        pods = pod_device_map(held, table)
    except UnresolvedDevice as exc:
        return unavailable(path, "unresolved_device", str(exc))
    except DeviceTableUnavailable as exc:
        return unavailable(path, "nvml", "the GPUs of the node cannot be read through NVML to resolve the device IDs: "
                           + str(exc))
    return {"available": True, "error": None, "reason": None, "socket": path, "pods": pods,
            "allocatable": allocatable_devices(allocatable or ())}


class DeviceTableUnavailable(Exception):
    """NVML could not list the node's devices (the module turns its errors into this)."""
