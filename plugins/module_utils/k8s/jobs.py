# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""Wait for the jobs on fenced nodes to finish before their pods are evicted.

As the GPU Operator's upgrade controller (``waitForCompletion``: a pod selector and a timeout, 0 =
forever): once a node is tainted nothing new lands on it, and the pods a label selector picks are
given until the timeout to end on their own (phase Succeeded or Failed, or gone) before the
eviction. Past the timeout the rollout goes on and evicts them, as the operator does: the eviction
still honours PodDisruptionBudgets, and a site that must never interrupt a job sets the timeout to 0.

The wait is one list and watch of the selected pods for the whole batch, never a request per pod.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError, KubeClient
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.wait import ListWatch, wait_until

FINISHED_PHASES = ("Succeeded", "Failed")


def check_selector(selector: str | None) -> str | None:
    """The label selector, stripped; None (empty or not given) for no wait. Its syntax is the API
    server's to judge: a selector it refuses fails the first list, naming it."""
    if selector is None or not str(selector).strip():
        return None
    return str(selector).strip()


def jobs_deadline_seconds(timeout: float) -> float:
    """The seconds the wait may take: ``timeout``, where 0 means forever (as the operator's)."""
    if timeout < 0:
        raise K8sError("wait_for_jobs_timeout: must be 0 (forever) or more seconds, got {0}".format(timeout))
    return math.inf if timeout == 0 else float(timeout)


def is_finished(pod: Mapping[str, Any]) -> bool:
    return ((pod.get("status") or {}).get("phase")) in FINISHED_PHASES


def unfinished_jobs(pods: Iterable[Mapping[str, Any]], nodes: Iterable[str]) -> dict[str, list[str]]:
    """The selected pods still running (or pending) on each of ``nodes``, as ``namespace/name``,
    sorted; every node is a key, with an empty list when nothing runs on it."""
    wanted: dict[str, list[str]] = {name: [] for name in nodes}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node in wanted and not is_finished(pod):
            metadata = pod.get("metadata") or {}
            wanted[node].append("{0}/{1}".format(metadata.get("namespace"), metadata.get("name")))
    return {name: sorted(found) for name, found in wanted.items()}


def wait_for_jobs(client: KubeClient, nodes: list[str], selector: str, timeout: float, poll_interval: float,
                  check_mode: bool) -> dict[str, dict[str, Any]]:
    """Wait until no pod ``selector`` picks runs on any of ``nodes``, up to ``timeout`` (0: forever).

    Each node's outcome: ``waited_for`` (every selected pod seen running on it during the wait),
    ``left`` (those still running at the end: evicted next) and ``timed_out``. The batch is one
    watch, done when no node has a selected pod running. In check mode nothing is waited for:
    ``waited_for`` says what a real run would wait for.
    """
    seen: dict[str, set[str]] = {name: set() for name in nodes}
    latest: dict[str, list[str]] = {}

    def done(objects: dict[str, dict[str, Any]]) -> bool:
        latest.clear()
        latest.update(unfinished_jobs(objects.values(), nodes))
        for name, running in latest.items():
            seen[name].update(running)
        return not any(latest.values())

    deadline = client.retry.deadline(0 if check_mode else jobs_deadline_seconds(timeout))
    outcome = wait_until(ListWatch(client, "pods", label_selector=selector), done, deadline, client.retry, poll_interval)
    results = {}
    for name in nodes:
        left = [] if check_mode else latest.get(name, [])
        results[name] = {"waited_for": sorted(seen[name]), "left": left, "timed_out": bool(left) and not outcome.met}
    return results


def jobs_message(node: str, left: list[str], timeout: float) -> str:
    """The warning for a node whose jobs were still running at the timeout (they are evicted)."""
    return "node {0}: {1} job pod(s) still running after {2:g}s, evicted now: {3}".format(node, len(left), timeout, ", ".join(left))
