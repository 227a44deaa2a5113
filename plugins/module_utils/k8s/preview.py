# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet preview of a rollout run in check mode: batches in order, per node the layout before and
after, the pods it would evict and why, what would block or wait, and the capacity of each
``nvidia.com/*`` resource while each batch is fenced and at the end. Pure: the
gpuops.nvidia.mig_rollout callback feeds it the facts of the run and writes what it returns."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

PREVIEW_VERSION = 1
RESOURCE_PREFIX = "nvidia.com/"

# Why a pod is on the list, as the preview names it.
REASON_DEVICE = "device"
REASON_BEFORE_REBOOT = "before-reboot"
REASON_DEVICE_MAP_UNAVAILABLE = "device-map-unavailable"


def batch_sizes(serial: Any, total: int) -> list[int]:
    """Sizes of the serial batches Ansible makes of ``total`` hosts (``serial`` as in a play)."""
    steps = [serial] if not isinstance(serial, list) else list(serial) or [0]
    sizes: list[int] = []
    remaining = total
    index = 0
    while remaining > 0:
        step = steps[min(index, len(steps) - 1)]
        text = str(step if step is not None else "").strip()
        if text.endswith("%"):
            size = int(total * float(text[:-1]) / 100.0)
        else:
            size = int(text or 0)
        size = remaining if size <= 0 else max(1, min(size, remaining))
        sizes.append(size)
        remaining -= size
        index += 1
    return sizes


def gpu_resources(allocatable: Mapping[str, Any] | None) -> dict[str, int]:
    """The ``nvidia.com/*`` counts of an allocatable (or capacity) map, as integers."""
    counts: dict[str, int] = {}
    for key, value in (allocatable or {}).items():
        if not str(key).startswith(RESOURCE_PREFIX):
            continue
        try:
            counts[str(key)] = int(str(value))
        except ValueError:
            continue
    return counts


def _add(total: dict[str, int], counts: Mapping[str, int]) -> None:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value


def _pod(pod: Mapping[str, Any], kind: str, fallback: str) -> dict[str, Any]:
    return {"namespace": pod.get("namespace"), "name": pod.get("name"), "kind": kind,
            "reason": str(pod.get("reason") or fallback)}


def node_pods(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The pods a node's check-mode report says the run would evict, each with the kind of reason:
    ``device`` (it holds a device that changes, or is a GPU pod under the ``gpu`` or ``all`` scope),
    ``before-reboot`` (the drain before a reboot takes it) or ``device-map-unavailable`` (the kubelet
    could not say which pod holds which device, so every GPU pod of the node is a target). The pods
    of a node whose eviction a PodDisruptionBudget blocks are those it would evict once it allows."""
    device_map = report.get("device_map")
    blind = isinstance(device_map, dict) and not device_map.get("available", True)
    before_reboot = {(p.get("namespace"), p.get("name")) for p in report.get("would_evict_before_reboot") or []
                     if isinstance(p, Mapping)}
    listed = list(report.get("would_evict") or [])
    if report.get("pdb_shortfalls"):
        listed += list(report.get("remaining") or [])
    pods: list[dict[str, Any]] = []
    seen = set()
    for pod in listed:
        if not isinstance(pod, Mapping):
            continue
        key = (pod.get("namespace"), pod.get("name"))
        if key in seen:
            continue
        seen.add(key)
        if key in before_reboot:
            pods.append(_pod(pod, REASON_BEFORE_REBOOT, "before the reboot"))
        elif blind:
            # The pod's own reason says only that it is on the node; why it is a target is the map.
            pods.append(dict(_pod(pod, REASON_DEVICE_MAP_UNAVAILABLE, ""),
                             reason="which pod holds which device is unknown: " + str(device_map.get("reason") or "no reason given")))
        else:
            pods.append(_pod(pod, REASON_DEVICE, "a target of the node's eviction"))
    return pods


def node_blocks(report: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The PodDisruptionBudgets that would block the node's eviction (allowing 0 disruptions), and the
    other waits or refusals the check found (pods that cannot be evicted, jobs waited for before the
    eviction, a node left for a later run)."""
    pdbs = [{"namespace": entry.get("namespace"), "name": entry.get("name"),
             "disruptions_allowed": entry.get("disruptions_allowed"), "pods": list(entry.get("pods") or [])}
            for entry in report.get("pdb_shortfalls") or [] if isinstance(entry, Mapping)]
    waits = []
    for entry in report.get("refused") or []:
        if isinstance(entry, Mapping):
            waits.append("{0}/{1} cannot be evicted: {2}".format(
                entry.get("namespace"), entry.get("name"), "; ".join(str(p) for p in entry.get("problems") or []) or "refused"))
    for job in report.get("jobs") or []:
        waits.append("{0}: a job the fence waits for (mig_reconfigure_wait_for_jobs_selector) before the eviction".format(job))
    result = report.get("result")
    if result in ("deferred", "failed") and report.get("message") and not pdbs:
        waits.append("{0}: {1}".format(result, report.get("message")))
    return pdbs, waits


def build_preview(nodes: Iterable[Mapping[str, Any]], reports: Mapping[str, Mapping[str, Any]], serial: Any) -> dict[str, Any]:
    """The preview of the run.

    ``nodes``: one entry per GPU node of the validating play, in inventory order: ``host``, ``node``,
    ``before``, ``after``, ``pending`` (it goes through the rollout), ``skipped``, ``allocatable``
    (now) and ``expected_allocatable`` (after its change). ``reports``: the rollout's
    ``mig_reconfigure_report`` per host (check mode). ``serial``: the rollout play's ``serial``.
    """
    nodes = [dict(entry) for entry in nodes]
    pending = [entry for entry in nodes if entry.get("pending") and not entry.get("skipped")]
    pending_hosts = {entry["host"] for entry in pending}
    now: dict[str, int] = {}
    for entry in nodes:
        _add(now, gpu_resources(entry.get("allocatable")))

    def after_of(entry: Mapping[str, Any]) -> dict[str, int]:
        report = reports.get(entry["host"]) or {}
        if report.get("result") in ("deferred", "skipped"):
            return gpu_resources(entry.get("allocatable"))
        return gpu_resources(entry.get("expected_allocatable"))

    batches = []
    start = 0
    for number, size in enumerate(batch_sizes(serial, len(pending)), start=1):
        members = pending[start:start + size]
        start += size
        done = {entry["host"] for entry in pending[:start - size]}
        fenced = {entry["host"] for entry in members
                  if (reports.get(entry["host"]) or {}).get("result") not in ("deferred", "skipped")}
        capacity: dict[str, int] = {key: 0 for key in now}
        for entry in nodes:
            if entry["host"] in fenced:
                continue
            _add(capacity, after_of(entry) if entry["host"] in done else gpu_resources(entry.get("allocatable")))
        batch_nodes = []
        for entry in members:
            report = reports.get(entry["host"])
            pdbs, waits = node_blocks(report or {})
            if report is None:
                waits.append("not previewed: the check stopped before this batch")
            batch_nodes.append({
                "host": entry["host"], "node": entry.get("node") or entry["host"],
                "before": (report or {}).get("before") or entry.get("before") or "?",
                "after": (report or {}).get("after") or entry.get("after") or "?",
                "result": (report or {}).get("result") or "not previewed",
                "evict": node_pods(report or {}),
                "blocking_pdbs": pdbs,
                "waits": waits,
            })
        batches.append({"number": number, "nodes": batch_nodes, "capacity": capacity})

    end: dict[str, int] = {key: 0 for key in now}
    for entry in nodes:
        _add(end, after_of(entry) if entry["host"] in pending_hosts else gpu_resources(entry.get("allocatable")))
    evictions = sum(len(node["evict"]) for batch in batches for node in batch["nodes"])
    blocking = [dict(pdb, node=node["node"]) for batch in batches for node in batch["nodes"] for pdb in node["blocking_pdbs"]]
    changes = bool(pending)
    if changes:
        summary = "{0} node(s) change in {1} batch(es); {2} pod(s) would be evicted; {3} PodDisruptionBudget(s) would block".format(
            len(pending), len(batches), evictions, len(blocking))
    else:
        summary = "nothing changes: every node already runs and advertises its layout"
    return {
        "version": PREVIEW_VERSION,
        "changes": changes,
        "summary": summary,
        "batches": batches,
        "blocking_pdbs": blocking,
        "unchanged": [entry.get("node") or entry["host"] for entry in nodes if not entry.get("pending") and not entry.get("skipped")],
        "skipped": [entry.get("node") or entry["host"] for entry in nodes if entry.get("skipped")],
        "capacity": {"now": now, "end": end},
    }


def _capacity_text(counts: Mapping[str, int], reference: Mapping[str, int] | None = None) -> str:
    if not counts:
        return "none"
    parts = []
    for key in sorted(counts):
        text = "{0}={1}".format(key, counts[key])
        if reference is not None and reference.get(key, 0) != counts[key]:
            text += " ({0:+d})".format(counts[key] - reference.get(key, 0))
        parts.append(text)
    return ", ".join(parts)


def render_markdown(preview: Mapping[str, Any]) -> str:
    """The preview as Markdown: the summary, a section per batch, the capacity at the end."""
    lines = ["# MIG rollout preview", "", preview["summary"], ""]
    now = preview["capacity"]["now"]
    lines.append("Capacity now: " + _capacity_text(now))
    for batch in preview["batches"]:
        lines += ["", "## Batch {0}".format(batch["number"]), "",
                  "Capacity while fenced: " + _capacity_text(batch["capacity"], now), ""]
        for node in batch["nodes"]:
            lines.append("- **{0}**: {1} -> {2} ({3}); {4} pod(s) to evict".format(
                node["node"], node["before"], node["after"], node["result"], len(node["evict"])))
            for pod in node["evict"]:
                lines.append("  - evict {0}/{1} [{2}]: {3}".format(pod["namespace"], pod["name"], pod["kind"], pod["reason"]))
            for pdb in node["blocking_pdbs"]:
                lines.append("  - blocked by PodDisruptionBudget {0}/{1}: allows {2} disruption(s); covers {3}".format(
                    pdb["namespace"], pdb["name"], pdb["disruptions_allowed"], ", ".join(pdb["pods"])))
            for wait in node["waits"]:
                lines.append("  - wait: " + wait)
    if preview["unchanged"]:
        lines += ["", "Unchanged: " + ", ".join(preview["unchanged"])]
    if preview["skipped"]:
        lines += ["", "Skipped (gpuops.io/mig-reconfigure.skip): " + ", ".join(preview["skipped"])]
    lines += ["", "Capacity at the end: " + _capacity_text(preview["capacity"]["end"], now), ""]
    return "\n".join(lines)
