# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""A rolling driver upgrade, decided per node: is the loaded driver the wanted one, and may the
node be taken out of service for it now.

The wanted driver is what the nvidia_driver role installs (``target``: its settings
nvidia_driver_install, nvidia_driver_version, nvidia_driver_branch, nvidia_driver_package_state),
compared with the driver NVML reports loaded, by the same rule as the role's
``nvidia_driver_wanted_loaded``. A node that runs another driver goes through the rolling change,
which drains it whole, installs, reboots, checks the loaded driver and releases it; its progress is
the node label DRIVER_STATE_LABEL (the states of DRIVER_STATES, in the spirit of the GPU Operator's
nvidia.com/gpu-driver-upgrade-state).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

#: The node label that shows where a node is in its driver upgrade.
DRIVER_STATE_LABEL = "gpuops.io/driver-upgrade.state"
UPGRADE_REQUIRED = "upgrade-required"
DRAINING = "draining"
INSTALLING = "installing"
REBOOTING = "rebooting"
VALIDATING = "validating"
UPGRADE_DONE = "upgrade-done"
UPGRADE_FAILED = "upgrade-failed"
#: In the order a node goes through them; a failure at any step ends in UPGRADE_FAILED.
DRIVER_STATES = (UPGRADE_REQUIRED, DRAINING, INSTALLING, REBOOTING, VALIDATING, UPGRADE_DONE, UPGRADE_FAILED)
#: The states of an upgrade under way (a failure turns them into UPGRADE_FAILED).
IN_PROGRESS = (UPGRADE_REQUIRED, DRAINING, INSTALLING, REBOOTING, VALIDATING)


def _enabled(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "on", "1", "y", "t")
    return bool(value)


def managed(target: Optional[Mapping[str, Any]]) -> bool:
    """Whether the collection installs the node's driver: gpu_stack standalone, nvidia_driver_install
    true, a branch set and the packages wanted present (not ``absent``)."""
    target = target or {}
    return (str(target.get("gpu_stack") or "standalone") == "standalone" and _enabled(target.get("install", False))
            and bool(str(target.get("branch") or "")) and str(target.get("package_state") or "present") != "absent")


def wanted_text(target: Mapping[str, Any]) -> str:
    """The wanted driver as a message names it: the version, else the branch."""
    return str(target.get("version") or "") or "branch %s" % target.get("branch")


def wanted_loaded(loaded: Optional[str], target: Mapping[str, Any]) -> bool:
    """Whether the ``loaded`` driver is the wanted one: the version when one is set, else the branch.

    With ``package_state: latest`` a newer driver within the branch is not known here: the driver
    play asks the package manager, and a driver it updates waits for the rollout's drained reboot
    (nvidia_driver_reboot_pending). Only another branch is an upgrade planned here, so that a
    converged node is not rebooted by every run."""
    loaded = str(loaded or "")
    if not loaded:
        return False
    version = str(target.get("version") or "")
    if version:
        return loaded == version
    return loaded.split(".", maxsplit=1)[0] == str(target.get("branch"))


def driver_upgrade(loaded: Optional[str], target: Optional[Mapping[str, Any]]) -> Optional[dict[str, str]]:
    """``{"from": loaded, "to": wanted}`` when the node runs a loaded driver that is not the wanted
    one and the collection installs drivers; None otherwise (no driver loaded: a first install,
    which the driver play does; a driver another tool manages; the wanted one loaded)."""
    if not managed(target) or not loaded or wanted_loaded(loaded, target or {}):
        return None
    return {"from": str(loaded), "to": wanted_text(target or {})}


def held_back(node: Mapping[str, Any], taint_key: str, cordon_record: str, include_unavailable: bool) -> str:
    """Why the node is not upgraded now, '' when nothing holds it back: it is cordoned by someone
    else, or NotReady, before the rollout touched it (and ``include_unavailable`` is off). A node the
    rollout fenced before (its taint, or its own cordon recorded) is never held back: a re-run
    finishes what the last one began."""
    if include_unavailable:
        return ""
    name = (node.get("metadata") or {}).get("name") or "?"
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    taints = (node.get("spec") or {}).get("taints") or []
    if any((taint or {}).get("key") == taint_key for taint in taints):
        return ""
    if (node.get("spec") or {}).get("unschedulable") and annotations.get(cordon_record) != "false":
        return ("node %s is cordoned by someone else: its driver upgrade is left for later "
                "(mig_driver_upgrade_unavailable_nodes: true upgrades it anyway)" % name)
    # Imported here, not at the top: the mig filters import this module, and the Kubernetes client
    # that k8s.conditions brings in costs each templating worker about 0.2 s, on every task of every
    # host that uses one of those filters.
    from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.conditions import node_ready  # pylint: disable=import-outside-toplevel

    if node_ready(node) is not True:
        return ("node %s is NotReady: its driver upgrade is left for later "
                "(mig_driver_upgrade_unavailable_nodes: true upgrades it anyway)" % name)
    return ""


def unfinished(labels: Mapping[str, str]) -> bool:
    """Whether the node's label shows a driver upgrade under way or failed: the change that releases
    the node (its driver is then the wanted one, or the node would still be upgraded) finishes it."""
    return labels.get(DRIVER_STATE_LABEL) in IN_PROGRESS + (UPGRADE_FAILED,)


def failed_state(labels: Mapping[str, str]) -> dict[str, str]:
    """The driver state a failed node gets: UPGRADE_FAILED when an upgrade was under way, else nothing."""
    return {DRIVER_STATE_LABEL: UPGRADE_FAILED} if labels.get(DRIVER_STATE_LABEL) in IN_PROGRESS else {}
