# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection: no compatibility promise outside gpuops.nvidia.
"""The argument spec of mig_config's ``node_plan``: the options of what a node must advertise.

The module declares it and its action plugin validates it; the controller then condenses the
module's result with the mig_node_plan filter, which takes these options. Kept apart from
resources.py so that the module does not carry that code to the node for a spec.

An unknown strategy or replica count is not refused by the spec: the filter reports it in the
plan's ``expected.errors``, where the caller refuses it naming its own setting.
"""

from __future__ import annotations

from typing import Any, Dict

NODE_PLAN_ARGUMENT_SPEC: Dict[str, Dict[str, Any]] = {
    "strategy": {"type": "str", "default": "none"},
    "time_slicing_replicas": {"type": "raw"},
    "time_slicing_rename_by_default": {"type": "bool", "default": False},
    "node": {"type": "str"},
    "labels": {"type": "str", "default": "essential", "choices": ["essential", "all"]},
}
