# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""A converged node confirmed from the Kubernetes API, without reading its GPUs again.

Once a run has read a node through NVML and found it converged, the node carries a record (the
annotation ``gpuops.io/converged``) of three things:

- ``settings``: a digest of everything the node's desired state depends on (the settings of the
  inventory that concern it, the collection's version and default configs);
- ``observed``: a digest of what the node's real publishers say about its GPUs: GPU Feature
  Discovery's labels (``nvidia.com/mig.*``, ``nvidia.com/mig-<profile>.*``, ``nvidia.com/gpu.*``,
  ``nvidia.com/cuda.driver.*``: every ``nvidia.com/`` label but ``nvidia.com/gfd.timestamp``, which
  GFD rewrites from NVML at each of its intervals) and the kubelet's ``nvidia.com/*``
  allocatable (which the device plugin reports from the devices it finds);
- ``read_at``: when the GPUs were read (seconds since the epoch).

A later run confirms the node from one Node list when the settings digest is the one its settings
give now, the observed digest is the one its labels and allocatable give now, the reading is younger
than the re-check bound, and nothing marks the node as being changed (the rollout's taint, a MIG
state other than success, the skip label). A layout changed by hand shows in GFD's labels within
GFD's interval; what the API does not show (files on the node, a service installed by hand) is
found when the record is older than the bound and the node is read again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping, Optional

ANNOTATION = "gpuops.io/converged"
STATE_LABEL = "nvidia.com/mig.config.state"
SKIP_LABEL = "gpuops.io/mig-reconfigure.skip"
#: The node labels GPU Feature Discovery derives from NVML (nvidia.com/mig.*, nvidia.com/mig-<profile>.*
#: under the mixed strategy, nvidia.com/gpu.*, nvidia.com/cuda.driver.*, ...), with the rollout's own
#: nvidia.com/mig.config*, nvidia.com/gpu.deploy.* labels: every nvidia.com/ label but GFD's timestamp,
#: which changes at each of GFD's runs without anything else changing.
OBSERVED_LABEL_PREFIX = "nvidia.com/"
UNOBSERVED_LABELS = ("nvidia.com/gfd.timestamp",)
OBSERVED_RESOURCE_PREFIX = "nvidia.com/"
#: The inventory variables a node's desired state depends on: the settings of every role of the
#: collection that reaches the node (names starting with these), and the node's name in Kubernetes.
SETTING_PREFIXES = ("mig_", "k8s_gpu_", "gpu_", "nvidia_", "device_plugin_", "dcgm_exporter_",
                    "existing_software_", "kubelet_")
SETTING_NAMES = ("k8s_node_name",)
#: Settings of the driver the collection installs: part of the digest only where it installs it.
DRIVER_PREFIX = "nvidia_driver_"
#: A record written this far in the future (seconds) is not trusted: the clocks disagree.
CLOCK_SKEW_S = 300


def digest(value: Any) -> str:
    """A stable digest of a JSON-like value (key order does not matter)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_setting(name: str) -> bool:
    """Whether the variable ``name`` is one a node's desired state depends on."""
    return name in SETTING_NAMES or name.startswith(SETTING_PREFIXES)


def node_settings(variables: Mapping[str, Any]) -> dict[str, Any]:
    """The settings among a host's variables; the driver's only with ``gpu_stack`` standalone and
    the driver installed by the collection (``nvidia_driver_install``, default true)."""
    settings = {name: value for name, value in variables.items() if is_setting(name)}
    installs_driver = (str(settings.get("gpu_stack") or "standalone") == "standalone"
                       and str(settings.get("nvidia_driver_install", True)).strip().lower() not in ("false", "no", "0", "off"))
    if not installs_driver:
        settings = {name: value for name, value in settings.items()
                    if not name.startswith(DRIVER_PREFIX) or name == "nvidia_driver_install"}
    return settings


def settings_digest(settings: Mapping[str, Any], shared: str = "") -> str:
    """The digest of a node's settings, with ``shared``: the digest of what every node's desired
    state depends on alike (the collection's version and default configs, the API host's settings)."""
    return digest({"node": dict(settings), "shared": shared})


def observed(node: Mapping[str, Any]) -> dict[str, Any]:
    """What the node's publishers say about its GPUs: GFD's labels and the nvidia.com/* allocatable."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    return {
        "labels": {key: value for key, value in labels.items()
                   if key.startswith(OBSERVED_LABEL_PREFIX) and key not in UNOBSERVED_LABELS},
        "allocatable": {key: value for key, value in allocatable.items() if key.startswith(OBSERVED_RESOURCE_PREFIX)},
    }


def record_text(settings: str, node: Mapping[str, Any], read_at: float) -> str:
    """The record's annotation value for a node read through NVML at ``read_at`` and found converged."""
    return json.dumps({"settings": settings, "observed": digest(observed(node)), "read_at": int(read_at)},
                      sort_keys=True, separators=(",", ":"))


def parse_record(text: Any) -> Optional[dict[str, Any]]:
    """The record from its annotation value; None when absent or not one (edited by hand)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if (not isinstance(record, dict) or not isinstance(record.get("settings"), str)
            or not isinstance(record.get("observed"), str)
            or not isinstance(record.get("read_at"), (int, float)) or isinstance(record.get("read_at"), bool)):
        return None
    return record


def node_record(node: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    return parse_record(((node.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION))


def in_change(node: Mapping[str, Any], taint_key: str) -> str:
    """Why the node is being changed or kept out of changes ('' when nothing says so)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    if labels.get(SKIP_LABEL) == "true":
        return "labelled %s=true" % SKIP_LABEL
    if any(taint.get("key") == taint_key for taint in (node.get("spec") or {}).get("taints") or []):
        return "tainted %s" % taint_key
    state = labels.get(STATE_LABEL)
    if state is not None and state != "success":
        return "%s=%s" % (STATE_LABEL, state)
    return ""


def unconfirmed_reason(node: Optional[Mapping[str, Any]], settings: str, now: float, recheck_interval: float,
                       taint_key: str) -> str:
    """Why the node must be read through NVML this run; '' when the API confirms it converged."""
    if recheck_interval <= 0:
        return "the re-check bound is 0: every node is read"
    if node is None:
        return "not found in the cluster"
    changing = in_change(node, taint_key)
    if changing:
        return changing
    record = node_record(node)
    if record is None:
        return "no record of a converged reading (annotation %s)" % ANNOTATION
    if record["settings"] != settings:
        return "its settings changed since it was found converged"
    if record["observed"] != digest(observed(node)):
        return "its GPU Feature Discovery labels or nvidia.com/* allocatable changed since it was found converged"
    age = now - record["read_at"]
    if age < -CLOCK_SKEW_S:
        return "its record was written %d s in the future (clocks disagree)" % -age
    if age >= recheck_interval:
        return "its GPUs were last read %d s ago, the re-check bound is %d s" % (age, recheck_interval)
    return ""


def record_update(node: Mapping[str, Any], settings: str, read_at: float, now: float, recheck_interval: float) -> Optional[str]:
    """The new record of a node found converged, or None where its record stands: same settings and
    observed digests, and younger than half the re-check bound (so that a run writes nothing to a
    node whose record is current, and a record is renewed before it expires)."""
    record = node_record(node)
    wanted = record_text(settings, node, read_at)
    if record is not None:
        fresh = json.loads(wanted)
        if (record["settings"] == fresh["settings"] and record["observed"] == fresh["observed"]
                and -CLOCK_SKEW_S <= now - record["read_at"] < recheck_interval / 2):
            return None
    return wanted


def confirm(nodes: Iterable[Mapping[str, Any]], wanted: Mapping[str, str], now: float, recheck_interval: float,
            taint_key: str) -> dict[str, Any]:
    """Split ``wanted`` (node name -> settings digest) into the nodes the API confirms converged and
    the others, each with the reason it must be read, from the cluster's ``nodes``."""
    by_name = {(node.get("metadata") or {}).get("name"): node for node in nodes}
    confirmed: list[str] = []
    unconfirmed: dict[str, str] = {}
    for name, settings in wanted.items():
        reason = unconfirmed_reason(by_name.get(name), settings, now, recheck_interval, taint_key)
        if reason:
            unconfirmed[name] = reason
        else:
            confirmed.append(name)
    return {"confirmed": confirmed, "unconfirmed": unconfirmed}


#: How a rollout pass ends on a node that is converged afterwards (its report's result).
CONVERGED_RESULTS = ("success", "unchanged", "recorded")


def found_converged(pending: bool, decided: bool, skipped: bool, result: Optional[str]) -> bool:
    """Whether a node still in the run was read through NVML and found converged: a node the
    validating play planned (``decided``) and did not send through the rollout, or one whose rollout
    pass ended in one of CONVERGED_RESULTS; never a node left out of the rollout (``skipped``)."""
    if not decided or skipped:
        return False
    return result in CONVERGED_RESULTS if pending else True
