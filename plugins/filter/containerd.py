# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""containerd configurations written by other tools: what they hold, and what a new version would drop
(see module_utils/node_software.py)."""

from __future__ import annotations

from typing import Any, Dict, List

from ansible.errors import AnsibleFilterError

from ansible_collections.gpuops.nvidia.plugins.module_utils import node_software


def containerd_entries(text: Any) -> Dict[str, Any]:
    """Runtimes, default runtime, registry mirrors and registry config path of a containerd config's text."""
    if not isinstance(text, str):
        raise AnsibleFilterError("containerd_entries: expected the configuration's text, got {0}".format(type(text).__name__))
    try:
        return node_software.containerd_entries(text)
    except ValueError as exc:
        raise AnsibleFilterError("containerd_entries: {0}".format(exc)) from exc


def containerd_dropped_entries(before: Any, after: Any) -> List[str]:
    """The runtimes and registry mirrors of ``before`` (a config's text) that ``after`` no longer holds."""
    old, new = containerd_entries(before), containerd_entries(after)
    dropped = ["runtime " + name for name in sorted(old["runtimes"]) if name not in new["runtimes"]]
    dropped += ["registry mirror " + name for name in old["registry_mirrors"] if name not in new["registry_mirrors"]]
    if old["registry_config_path"] and old["registry_config_path"] != new["registry_config_path"]:
        dropped.append("registry config_path " + old["registry_config_path"])
    return dropped


class FilterModule:
    """Filters about containerd's configuration."""

    def filters(self):
        return {"containerd_entries": containerd_entries, "containerd_dropped_entries": containerd_dropped_entries}
