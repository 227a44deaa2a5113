# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""A validation pod on each changed node, before the rollout lets pods back on it.

After the node advertises its new resources and while it still carries the rollout's taint, one
short pod per node, pinned to it (``nodeName``), tolerating that taint, ``restartPolicy: Never``,
asks for one of each ``nvidia.com/*`` resource the node advertises and runs a CUDA image's
``nvidia-smi -L``: the device plugin must hand out every kind of device, and each must open. The
node is released only when the pod Succeeded; Failed, or not done by the timeout, fails the node
with the pod's name and its reason and exit code.

The pod is deleted afterwards either way: its outcome (reason, exit code, the tail of its log as
the termination message, ``FallbackToLogsOnError``) is in the node's failure message, and a pod
left behind would be one more object for the next run to clean up. The pods of a batch are waited
for with one list and watch.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError, KubeClient, api_status
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.wait import ListWatch, wait_until

#: The label every validation pod carries (its value the node), by which a batch's pods are watched.
VALIDATION_LABEL = "gpuops.io/rollout-validation"
POD_PREFIX = "gpuops-validate-"
RESOURCE_PREFIX = "nvidia.com/"
DEFAULT_IMAGE = "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04"
DEFAULT_COMMAND = ("nvidia-smi", "-L")
#: Longest pod name (a DNS subdomain).
MAX_NAME = 253


class ValidationSettings:
    """How the validation pods are made and waited for, checked before anything is written."""

    def __init__(self, enabled: bool = False, image: str = DEFAULT_IMAGE, command: Iterable[str] = DEFAULT_COMMAND,
                 namespace: str = "default", timeout: float = 300) -> None:
        self.enabled = bool(enabled)
        self.image = str(image or "").strip()
        self.command = [str(word) for word in command or []]
        self.namespace = str(namespace or "").strip()
        self.timeout = timeout
        if not self.enabled:
            return
        if not self.image:
            raise K8sError("validation_image: an image is required with validation, got {0!r}".format(image))
        if not self.command:
            raise K8sError("validation_command: a command is required with validation, got {0!r}".format(command))
        if not self.namespace:
            raise K8sError("validation_namespace: a namespace is required with validation, got {0!r}".format(namespace))
        if timeout is None or timeout <= 0:
            raise K8sError("validation_timeout: must be more than 0 seconds, got {0}".format(timeout))


def pod_name(node: str) -> str:
    return (POD_PREFIX + node)[:MAX_NAME].rstrip(".-")


def validation_resources(allocatable: Mapping[str, Any]) -> dict[str, str]:
    """One of each ``nvidia.com/*`` resource the node advertises (a count above 0)."""
    wanted = {}
    for name, quantity in (allocatable or {}).items():
        if not str(name).startswith(RESOURCE_PREFIX):
            continue
        try:
            count = int(str(quantity))
        except ValueError:
            continue
        if count > 0:
            wanted[str(name)] = "1"
    return dict(sorted(wanted.items()))


def validation_pod(node: str, resources: Mapping[str, str], settings: ValidationSettings, taint_key: str) -> dict[str, Any]:
    """The pod that validates ``node``: pinned to it, tolerating the rollout's taint, ending on its own."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(node),
            "namespace": settings.namespace,
            "labels": {VALIDATION_LABEL: node[:63].rstrip(".-_"), "app.kubernetes.io/managed-by": "gpuops.nvidia"},
        },
        "spec": {
            # Bound by the kubelet directly: the scheduler would never place a pod on a fenced node.
            "nodeName": node,
            "restartPolicy": "Never",
            "activeDeadlineSeconds": int(math.ceil(settings.timeout)),
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"key": taint_key, "operator": "Exists"}],
            "containers": [{
                "name": "validate",
                "image": settings.image,
                "command": list(settings.command),
                "resources": {"limits": dict(resources)},
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }],
        },
    }


def pod_outcome(pod: Mapping[str, Any] | None) -> tuple[str, str]:
    """``(phase, why)`` of a validation pod: why it is where it is, its containers' reason, exit
    code and last output for a pod that ended, or what it waits for."""
    if pod is None:
        return "Missing", "the pod is gone"
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    details = []
    if status.get("reason"):
        details.append("reason {0}".format(status["reason"]))
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        ended = state.get("terminated")
        waiting = state.get("waiting")
        if ended:
            details.append("container {0} exited {1} ({2})".format(container.get("name"), ended.get("exitCode"), ended.get("reason") or "no reason"))
            if ended.get("message"):
                details.append(str(ended["message"]).strip()[-500:])
        elif waiting:
            details.append("container {0} waiting ({1})".format(container.get("name"), waiting.get("reason") or "no reason"))
    if status.get("message"):
        details.append(str(status["message"]).strip()[-500:])
    return phase, "; ".join(details) or "no reason given"


def _delete(client: KubeClient, settings: ValidationSettings, node: str, timeout: float) -> None:
    """Delete the node's validation pod, if there is one (a 404 is what we want)."""
    def delete() -> None:
        # Not found means it is gone already; the retry classifies every other error.
        try:
            client.delete_pod(settings.namespace, pod_name(node), None, 0)
        except Exception as error:  # noqa: BLE001 - classified just below
            if api_status(error) != 404:
                raise
    client.retry.run(delete, client.retry.deadline(timeout), "deleting pod {0}/{1}".format(settings.namespace, pod_name(node)))


def validate_nodes(client: KubeClient, nodes: Mapping[str, Mapping[str, Any]], settings: ValidationSettings, taint_key: str,
                   timeout: float, poll_interval: float, check_mode: bool) -> dict[str, dict[str, Any]]:
    """Run one validation pod on each of ``nodes`` (name → what the node advertises) and wait for them.

    Each node's result: ``pod`` (namespace/name), ``resources``, ``phase``, ``passed`` and ``msg``.
    A node that advertises no ``nvidia.com/*`` resource is not validated (``passed``, with a msg
    saying so). In check mode nothing is created: the result says which pod would run.
    ``timeout`` bounds each write; the wait is ``settings.timeout``.
    """
    results: dict[str, dict[str, Any]] = {}
    running = []
    for node, allocatable in nodes.items():
        resources = validation_resources(allocatable)
        result = {"pod": "{0}/{1}".format(settings.namespace, pod_name(node)), "resources": resources,
                  "phase": None, "passed": True, "msg": ""}
        results[node] = result
        if not resources:
            result["msg"] = "the node advertises no nvidia.com/* resource: nothing to validate"
        elif not check_mode:
            running.append(node)
    for node in running:
        # A pod left by an interrupted run is replaced: its outcome may be of another layout.
        _delete(client, settings, node, timeout)
        body = validation_pod(node, results[node]["resources"], settings, taint_key)
        client.retry.run(lambda body=body: client.create_pod(settings.namespace, body), client.retry.deadline(timeout),
                         "creating pod {0}".format(results[node]["pod"]))
    if not running:
        return results
    names = {pod_name(node): node for node in running}
    seen: dict[str, Mapping[str, Any]] = {}

    def ended(objects: dict[str, dict[str, Any]]) -> bool:
        seen.clear()
        for pod in objects.values():
            metadata = pod.get("metadata") or {}
            if metadata.get("namespace") == settings.namespace and metadata.get("name") in names:
                seen[names[metadata["name"]]] = pod
        return all(pod_outcome(seen.get(node))[0] in ("Succeeded", "Failed") for node in running)

    selector = VALIDATION_LABEL
    outcome = wait_until(ListWatch(client, "pods", label_selector=selector), ended,
                         client.retry.deadline(settings.timeout), client.retry, poll_interval)
    for node in running:
        phase, why = pod_outcome(seen.get(node))
        result = results[node]
        result["phase"] = phase
        if phase != "Succeeded":
            result["passed"] = False
            waited = "" if outcome.met or phase == "Failed" else " after {0:g}s".format(settings.timeout)
            result["msg"] = "validation pod {0} {1}{2}: {3}".format(result["pod"], phase, waited, why)
    for node in running:
        _delete(client, settings, node, timeout)
    return results
