# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark-only callback: per host, how many task results ran a module and which actions; and
the wall time of each task, all hosts together.

Enabled by bench/sim.py through ANSIBLE_CALLBACK_PLUGINS / ANSIBLE_CALLBACKS_ENABLED; writes JSON
to the file named by BENCH_COUNTS_FILE when the playbook ends.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: bench_counts
type: aggregate
short_description: Count module runs per host (benchmarks only)
description:
  - Writes per-host counts of task results, and each task's wall time, to E(BENCH_COUNTS_FILE).
"""

# Actions that the controller completes itself: no module process is started on the host.
CONTROLLER_ONLY = frozenset({
    "set_fact", "assert", "debug", "fail", "meta", "include_role", "import_role", "include_tasks",
    "import_tasks", "include_vars", "add_host", "group_by", "set_stats", "validate_argument_spec",
    "end_play", "end_host", "end_batch", "pause",
})


def short_action(action: str) -> str:
    return action.rsplit(".", 1)[-1] if action.startswith("ansible.builtin.") or action.startswith("ansible.legacy.") else action


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_counts"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.modules = defaultdict(Counter)       # host -> action -> module runs
        self.controller = defaultdict(Counter)    # host -> action -> controller-only results
        self.skipped = Counter()
        # Task rounds: every task that reached a host (ran, was skipped or failed there), whatever
        # it did; each one costs Ansible its per-host, per-task overhead. host -> "play: task" list.
        self.rounds = defaultdict(list)
        self.changed = Counter()
        self.failed = Counter()
        # A task's time runs from its start to the next task's start (or the end): that includes
        # the controller's work on its results, which is what a fleet pays for per task.
        self.task_wall = Counter()            # "play: task" -> seconds, summed over the passes
        self.current = None
        self.started = 0.0

    def _close_task(self):
        if self.current is not None:
            self.task_wall[self.current] += time.monotonic() - self.started
        self.current = None

    def _open_task(self, task):
        self._close_task()
        play = task.get_play() if hasattr(task, "get_play") else None
        self.current = "{0}: {1}".format(play.get_name() if play else "", task.get_name())
        self.started = time.monotonic()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._open_task(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._open_task(task)

    def _round(self, result):
        play = result._task.get_play() if hasattr(result._task, "get_play") else None
        self.rounds[result._host.get_name()].append(
            "{0}: {1}".format(play.get_name() if play else "", result._task.get_name()))

    def _record(self, result, failed=False):
        host = result._host.get_name()
        self._round(result)
        action = short_action(result._task.action)
        target = self.controller if action in CONTROLLER_ONLY else self.modules
        # A loop runs the action once per item; the task's result carries them all.
        items = [r for r in result._result.get("results", []) if isinstance(r, dict) and not r.get("skipped")]
        target[host][action] += len(items) if "results" in result._result else 1
        if result._result.get("changed"):
            self.changed[host] += 1
        if failed:
            self.failed[host] += 1

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=not ignore_errors)

    def v2_runner_on_skipped(self, result):
        self.skipped[result._host.get_name()] += 1
        self._round(result)

    def v2_runner_on_unreachable(self, result):
        self._round(result)

    def v2_playbook_on_stats(self, stats):
        self._close_task()
        path = os.environ.get("BENCH_COUNTS_FILE")
        if not path:
            return
        document = {
            "modules": {host: dict(counts) for host, counts in self.modules.items()},
            "controller": {host: dict(counts) for host, counts in self.controller.items()},
            "skipped": dict(self.skipped),
            "rounds": dict(self.rounds),
            "changed": dict(self.changed),
            "failed": dict(self.failed),
            "task_wall_s": dict(self.task_wall),
        }
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
