# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: mig_rollout
type: aggregate
short_description: Progress and summary of a rolling MIG reconfiguration
version_added: 0.1.0
description:
  - Follows plays that run the P(gpuops.nvidia.mig_reconfigure#role) role and prints, as the
    rollout goes, the batch being worked on (batch N of M) and each node's outcome with the
    running count of nodes done and failed.
  - At the end of the run it prints one line per node, failed nodes included, with the MIG
    layout before and after, the pods evicted, the time the node took, and the result or the
    reason of the failure.
  - When a node's kubelet could not say which pod holds which GPU or MIG device (the PodResources
    socket missing, permission denied, a kubelet without the API), every GPU pod of that node was
    evicted; its line says so and why, and lists those pods.
  - In check mode (C(--check)) each node's line is followed by the pods it would lose, each with the
    reason it was selected.
  - A node labelled C(gpuops.io/mig-reconfigure.skip=true) is kept out of the rollout; its line says
    C(skipped) (from the C(mig_reconfigure_skipped) fact the validating play sets once for the run).
  - The data comes from the C(mig_reconfigure_report) fact the role sets on every exit path.
  - In check mode the run ends with the fleet preview (banner C(MIG ROLLOUT PREVIEW)), which lists the
    rollout's batches in order, per node the layout before and after, the pods it would evict with
    the reason, the PodDisruptionBudgets that would block (allowing 0 disruptions) and other waits,
    and the capacity per C(nvidia.com/*) resource while each batch is fenced and at the end. A fleet
    that needs nothing says that nothing changes. See the Preview section of
    docs/rolling-reconfigure.md for its format.
options:
  preview_path:
    description:
      - Where the check-mode preview is written, as C(<preview_path>.json) and C(<preview_path>.md)
        (a C(.json) or C(.md) suffix of the setting is dropped first). Nothing is written when unset.
      - The extra variable C(mig_rollout_preview_path) (C(-e mig_rollout_preview_path=...))
        takes precedence over this setting.
    type: path
    env:
      - name: GPUOPS_MIG_ROLLOUT_PREVIEW_PATH
    ini:
      - section: gpuops_mig_rollout
        key: preview_path
requirements:
  - enable it with C(callbacks_enabled = gpuops.nvidia.mig_rollout) in C(ansible.cfg) or
    E(ANSIBLE_CALLBACKS_ENABLED).
"""

import json
import os

from ansible.plugins.callback import CallbackBase

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.preview import batch_sizes, build_preview, render_markdown

ROLE_NAME = "mig_reconfigure"
REPORT_FACT = "mig_reconfigure_report"
# Set once (run_once) by the validating play: the reports of the nodes labelled to be skipped.
SKIPPED_FACT = "mig_reconfigure_skipped"
# Set once (run_once, check mode) by the validating play: every GPU node as the preview needs it.
PREVIEW_FACT = "mig_reconfigure_preview_nodes"
PREVIEW_VARIABLE = "mig_rollout_preview_path"


def preview_files(path: str) -> tuple[str, str]:
    """The JSON and Markdown files of the preview for the ``preview_path`` setting."""
    base = str(path)
    for suffix in (".json", ".md"):
        if base.endswith(suffix):
            base = base[:-len(suffix)]
    return base + ".json", base + ".md"


def summary_lines(reports: dict[str, dict], failures: dict[str, str], check_mode: bool = False) -> list[str]:
    """One line per node: name, layout before → after, pods evicted, seconds, result.

    The pods themselves follow, with why each was selected, in check mode and when the node's pod →
    device map was unavailable (every GPU pod of the node was then a target)."""
    lines = []
    hosts = sorted(set(reports) | set(failures))
    for host in hosts:
        report = reports.get(host, {})
        node = report.get("node") or host
        result = report.get("result") or ("failed" if host in failures else "unknown")
        before = report.get("before") or "?"
        after = report.get("after") or before
        # In check mode nothing is evicted: the pods listed are those the run would evict.
        evicted = (report.get("would_evict") or []) if check_mode else (report.get("evicted") or [])
        seconds = report.get("seconds")
        timing = f"{float(seconds):.1f}s" if seconds not in (None, "") else "-"
        moved = f"{len(evicted)} pod(s) to evict" if check_mode else f"{len(evicted)} pod(s) evicted"
        line = f"{node}: {before} -> {after}; {moved}; {timing}; {result}"
        message = report.get("message") or failures.get(host)
        if result in ("failed", "skipped", "deferred") and message:
            line += f": {message}"
        device_map = report.get("device_map")
        blind = isinstance(device_map, dict) and not device_map.get("available", True)
        if blind:
            line += ("; which pod holds which device was unknown, so every GPU pod of the node was a target: "
                     f"{device_map.get('reason') or 'no reason given'}")
        lines.append(line)
        if check_mode or blind:
            verb = "would evict" if check_mode else "evicted"
            for pod in evicted:
                if isinstance(pod, dict):
                    # The node's line already says why its map was unavailable.
                    why = "its devices are unknown" if blind else (pod.get("reason") or "-")
                    lines.append(f"  {verb} {pod.get('namespace')}/{pod.get('name')}: {why}")
    return lines


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "gpuops.nvidia.mig_rollout"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reports: dict[str, dict] = {}
        self._failures: dict[str, str] = {}
        self._play_uuid = None
        self._batch = 0
        self._batches = 0
        self._total = 0
        self._in_rollout = False
        self._preview_nodes = None
        self._serial = None
        self._preview_path = None

    def v2_playbook_on_play_start(self, play):
        manager = play.get_variable_manager()
        extra = getattr(manager, "extra_vars", None) or {}
        if extra.get(PREVIEW_VARIABLE):
            self._preview_path = str(extra[PREVIEW_VARIABLE])
        roles = {role.get_name(include_role_fqcn=False) for role in play.get_roles()}
        self._in_rollout = ROLE_NAME in roles
        if not self._in_rollout:
            return
        if play._uuid != self._play_uuid:
            self._play_uuid = play._uuid
            self._batch = 0
            manager = play.get_variable_manager()
            inventory = getattr(manager, "_inventory", None)
            hosts = inventory.get_hosts(play.hosts, ignore_restrictions=True) if inventory else []
            self._total = len(hosts)
            serial = play.serial
            if inventory is not None and hosts:
                from ansible.template import Templar

                templar = Templar(loader=play._loader, variables=manager.get_vars(play=play))
                serial = templar.template(serial)
            self._serial = serial
            self._batches = len(batch_sizes(serial, self._total)) if self._total else 0
        self._batch += 1
        self._display.display(
            f"MIG rollout: batch {self._batch} of {self._batches or '?'}"
            f" ({self._done()} of {self._total} nodes done, {len(self._failed_hosts())} failed)"
        )

    def _done(self) -> int:
        return sum(1 for r in self._reports.values() if r.get("result") in ("success", "unchanged", "recorded"))

    def _failed_hosts(self) -> set[str]:
        failed = {h for h, r in self._reports.items() if r.get("result") == "failed"}
        return failed | set(self._failures)

    def v2_runner_on_ok(self, result):
        facts = result._result.get("ansible_facts") or {}
        for skipped in facts.get(SKIPPED_FACT) or []:
            # A node skipped in the validating play: reported unless the rollout reports it itself.
            if isinstance(skipped, dict) and skipped.get("host"):
                self._reports.setdefault(skipped["host"], skipped)
        if isinstance(facts.get(PREVIEW_FACT), list):
            self._preview_nodes = facts[PREVIEW_FACT]
        report = facts.get(REPORT_FACT)
        if not isinstance(report, dict) or not self._in_rollout:
            return
        host = result._host.get_name()
        self._reports[host] = report
        evicted = report.get("evicted") or []
        self._display.display(
            f"MIG rollout: {report.get('node') or host} {report.get('result')}"
            f" ({len(evicted)} pod(s) evicted) - {self._done()} of {self._total} done,"
            f" {len(self._failed_hosts())} failed"
        )

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if ignore_errors or not self._in_rollout:
            return
        host = result._host.get_name()
        self._failures.setdefault(host, str(result._result.get("msg", "failed")))

    def v2_runner_on_unreachable(self, result):
        if self._in_rollout:
            self._failures.setdefault(result._host.get_name(), "unreachable")

    def v2_playbook_on_stats(self, stats):
        from ansible import context  # pylint: disable=import-outside-toplevel

        check_mode = bool((context.CLIARGS or {}).get("check"))
        if check_mode and self._preview_nodes is not None:
            self._show_preview()
        if not self._reports and not self._failures:
            return
        self._display.banner("MIG ROLLOUT SUMMARY")
        for line in summary_lines(self._reports, self._failures, check_mode=check_mode):
            self._display.display(line)

    def _show_preview(self):
        reports = dict(self._reports)
        for host, message in self._failures.items():
            reports.setdefault(host, {"result": "failed", "message": message})
        preview = build_preview(self._preview_nodes, reports, self._serial if self._serial is not None else 1)
        markdown = render_markdown(preview)
        self._display.banner("MIG ROLLOUT PREVIEW")
        for line in markdown.splitlines():
            if line:
                self._display.display(line)
        path = self._preview_path or self.get_option("preview_path")
        if not path:
            return
        json_file, markdown_file = preview_files(os.path.expanduser(path))
        try:
            folder = os.path.dirname(json_file)
            if folder:
                os.makedirs(folder, exist_ok=True)
            with open(json_file, "w", encoding="utf-8") as handle:
                json.dump(preview, handle, indent=2, sort_keys=True)
                handle.write("\n")
            with open(markdown_file, "w", encoding="utf-8") as handle:
                handle.write(markdown)
        except OSError as error:
            self._display.warning("the MIG rollout preview could not be written to {0}: {1}".format(path, error))
            return
        self._display.display("MIG rollout preview written to {0} and {1}".format(json_file, markdown_file))
