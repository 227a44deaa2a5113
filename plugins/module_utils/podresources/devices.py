# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection: no compatibility promise outside gpuops.nvidia.
"""Which GPU and MIG devices each pod of a node holds: the kubelet's PodResources answer, resolved
through NVML. Pure: no gRPC, no NVML calls; ``client.py`` and ``nvml.py`` bring the data.

Device IDs are what the device plugin registered with the kubelet. NVIDIA's k8s-device-plugin
registers the device's NVML UUID: ``GPU-<uuid>`` for a whole GPU, ``MIG-<uuid>`` for a MIG device
(``MIG-GPU-<gpu uuid>/<gi>/<ci>`` on drivers before R470, as NVML named them then), and
``<id>::<n>`` for replica ``n`` of a time-sliced or MPS-shared device. Its ``deviceIDStrategy``
(``uuid`` or ``index``) only chooses what the container runtime is handed; other plugins register
indexes, so ``<gpu index>`` and ``<gpu index>:<mig index>`` (the MIG device's index on its GPU, as
``nvmlDeviceGetMigDeviceHandleByIndex`` counts) are resolved too.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

GPU_RESOURCE_PREFIX = "nvidia.com/"
REPLICA_SEPARATOR = "::"

_GPU_INDEX = re.compile(r"^[0-9]+$")
_MIG_INDEX = re.compile(r"^([0-9]+):([0-9]+)$")
_LEGACY_MIG = re.compile(r"^MIG-(GPU-[0-9A-Za-z-]+)/([0-9]+)/([0-9]+)$")


class UnresolvedDevice(Exception):
    """A device ID of a pod that names no GPU or MIG device of the node."""

    def __init__(self, pod: str, resource: str, device_id: str) -> None:
        super().__init__(
            "device ID {0!r} of {1} held by pod {2} is no GPU or MIG device of this node (NVML lists none "
            "by that UUID or index)".format(device_id, resource, pod))
        self.pod = pod
        self.resource = resource
        self.device_id = device_id


def split_replica(device_id: str) -> Tuple[str, Optional[int]]:
    """``<id>::<n>`` → (id, n); an ID without a replica suffix → (id, None).

    As the plugin's ``AnnotatedID.Split``: the first ``::`` separates, a replica that is not a
    number counts as 0.
    """
    base, sep, replica = device_id.partition(REPLICA_SEPARATOR)
    if not sep:
        return device_id, None
    return base, int(replica) if replica.isdigit() else 0


class DeviceTable:
    """The node's GPUs and MIG devices by every name a device plugin may give them.

    Built from ``Nvml.device_table()``: ``[{"index", "uuid", "migs": [{"index", "uuid", "gi_id",
    "ci_id"}]}]``. A lookup returns ``(device UUID, GPU UUID)``: for a whole GPU both are its UUID.
    """

    def __init__(self, gpus: Iterable[Mapping[str, Any]]) -> None:
        self.by_uuid: Dict[str, Tuple[str, str]] = {}
        self.by_index: Dict[str, Tuple[str, str]] = {}
        self.by_instance: Dict[Tuple[str, int, int], Tuple[str, str]] = {}
        for gpu in gpus:
            gpu_uuid = str(gpu["uuid"])
            self.by_uuid[gpu_uuid] = (gpu_uuid, gpu_uuid)
            self.by_index[str(gpu["index"])] = (gpu_uuid, gpu_uuid)
            for mig in gpu.get("migs") or ():
                entry = (str(mig["uuid"]), gpu_uuid)
                self.by_uuid[entry[0]] = entry
                self.by_index["{0}:{1}".format(gpu["index"], mig["index"])] = entry
                self.by_instance[(gpu_uuid, int(mig["gi_id"]), int(mig["ci_id"]))] = entry

    def resolve(self, device_id: str) -> Optional[Tuple[str, str]]:
        """(device UUID, GPU UUID) for a device ID as a device plugin registers it, or None."""
        base, _replica = split_replica(device_id.strip())
        found = self.by_uuid.get(base)
        if found is not None:
            return found
        legacy = _LEGACY_MIG.match(base)
        if legacy:
            return self.by_instance.get((legacy.group(1), int(legacy.group(2)), int(legacy.group(3))))
        if _GPU_INDEX.match(base) or _MIG_INDEX.match(base):
            return self.by_index.get(base)
        return None


def _pod_resources(pod: Mapping[str, Any]) -> Dict[str, List[str]]:
    """{resource: [device IDs]} of the pod's containers, ``nvidia.com/*`` resources only."""
    resources: Dict[str, List[str]] = {}
    for container in pod.get("containers") or ():
        for devices in container.get("devices") or ():
            name = str(devices.get("resource_name") or "")
            if not name.startswith(GPU_RESOURCE_PREFIX):
                continue
            ids = resources.setdefault(name, [])
            ids.extend(str(device_id) for device_id in devices.get("device_ids") or () if str(device_id) not in ids)
    return resources


def pod_device_map(listing: Iterable[Mapping[str, Any]], table: DeviceTable) -> List[Dict[str, Any]]:
    """Each pod that holds ``nvidia.com/*`` devices, with the GPU and MIG devices behind them.

    ``listing`` is the List answer as plain data (``[{"namespace", "name", "containers": [{"name",
    "devices": [{"resource_name", "device_ids"}]}]}]``). Raises UnresolvedDevice on an ID that
    names no device of the node: a map with a hole in it would let a pod on a changing device stay.
    """
    pods = []
    for pod in listing:
        resources = _pod_resources(pod)
        if not resources:
            continue
        label = "{0}/{1}".format(pod.get("namespace"), pod.get("name"))
        devices: List[str] = []
        gpus: List[str] = []
        parents: Dict[str, str] = {}
        for resource, ids in sorted(resources.items()):
            for device_id in ids:
                found = table.resolve(device_id)
                if found is None:
                    raise UnresolvedDevice(label, resource, device_id)
                if found[0] not in devices:
                    devices.append(found[0])
                if found[1] not in gpus:
                    gpus.append(found[1])
                if found[0] != found[1]:
                    parents[found[0]] = found[1]
        pods.append({
            "namespace": pod.get("namespace"),
            "name": pod.get("name"),
            "resources": {name: list(ids) for name, ids in sorted(resources.items())},
            "devices": devices,
            "gpus": gpus,
            "parents": parents,
        })
    return sorted(pods, key=lambda entry: (entry["namespace"] or "", entry["name"] or ""))


def allocatable_devices(devices: Iterable[Mapping[str, Any]]) -> Dict[str, List[str]]:
    """{resource: [device IDs]} of a GetAllocatableResources answer, ``nvidia.com/*`` only."""
    result: Dict[str, List[str]] = {}
    for entry in devices:
        name = str(entry.get("resource_name") or "")
        if name.startswith(GPU_RESOURCE_PREFIX):
            result.setdefault(name, []).extend(str(device_id) for device_id in entry.get("device_ids") or ())
    return {name: sorted(set(ids)) for name, ids in sorted(result.items())}


def unavailable(socket: str, error: str, reason: str) -> Dict[str, Any]:
    """The result when the map cannot be read: the caller falls back to every GPU pod."""
    return {"available": False, "error": error, "reason": reason, "socket": socket, "pods": [], "allocatable": {}}
