# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The controller side of mig_config: what it sends to the node from the shipped configs."""

from __future__ import annotations

from ansible_collections.gpuops.nvidia.plugins.action.mig_config import DEFAULT_CONFIG_FILE, ActionModule


def shipped():
    return ActionModule._read_document(None, DEFAULT_CONFIG_FILE)  # pylint: disable=protected-access


def test_the_shipped_document_is_cut_to_the_selected_config():
    document = shipped()
    cut = ActionModule._only_selected(document, "all-balanced")  # pylint: disable=protected-access
    assert cut == {"version": document["version"], "mig-configs": {"all-balanced": document["mig-configs"]["all-balanced"]}}
    assert len(document["mig-configs"]) == 81


def test_an_unknown_or_missing_name_keeps_the_whole_document():
    document = shipped()
    for name in ("no-such-config", None, ""):
        assert ActionModule._only_selected(document, name) is document  # pylint: disable=protected-access
