# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""nvidia_device_plugin in a rehearsal (check mode) on the API emulator: on a cluster without the
role's namespace, the API server cannot compare the objects of that namespace (it answers NotFound,
a dry run included), so the rehearsal reports them as to be created, creates nothing, and does not
fail; once they exist, a rehearsal compares them as usual."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from roles_helpers import dump_task, read_json, run_playbook

from gpuops_sim.k8s import Emulator

ROLE = "gpuops.nvidia.nvidia_device_plugin"
NAMESPACE = "nvidia-device-plugin"


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    server = Emulator()
    server.start()
    try:
        path = tmp_path / "kubeconfig"
        server.write_kubeconfig(str(path))
        yield path
    finally:
        server.stop()


def plays(kubeconfig: Path, out: Path) -> list[dict[str, Any]]:
    variables = {"k8s_kubeconfig": str(kubeconfig), "nvidia_device_plugin_nfd": "none",
                 "nvidia_device_plugin_node_source": "label", "nvidia_device_plugin_namespace": NAMESPACE}
    read = {"kubeconfig": str(kubeconfig), "kind": "Namespace", "name": NAMESPACE}
    return [{"name": "Role", "hosts": "localhost", "gather_facts": False, "vars": variables, "tasks": [
        {"name": "Apply", "ansible.builtin.include_role": {"name": ROLE}},
        {"name": "Read", "register": "found", "check_mode": False, "kubernetes.core.k8s_info": read},
        dump_task(out, "found.resources | length")]}]


def changed_tasks(output: str) -> list[str]:
    """The tasks that reported changed, but the test's own file dump."""
    return [task.split("]")[0] for task in output.split("TASK [")[1:]
            if "changed: [localhost]" in task and not task.startswith("Write ")]


def test_a_rehearsal_on_a_cluster_without_the_namespace_reports_what_a_run_creates(tmp_path: Path, kubeconfig: Path) -> None:
    rehearsal = run_playbook(tmp_path, plays(kubeconfig, tmp_path / "rehearsal.json"), check=True, name="rehearsal")
    assert rehearsal.returncode == 0, rehearsal.output
    assert read_json(tmp_path / "rehearsal.json") == 0, "the rehearsal created the namespace"
    assert "Would create in namespace %s:" % NAMESPACE in rehearsal.output
    assert "DaemonSet/nvidia-device-plugin-daemonset" in rehearsal.output
    assert "%s : Report the objects a run creates in the new namespace" % ROLE in changed_tasks(rehearsal.output)

    run = run_playbook(tmp_path, plays(kubeconfig, tmp_path / "run.json"), name="run")
    assert run.returncode == 0, run.output
    assert read_json(tmp_path / "run.json") == 1

    again = run_playbook(tmp_path, plays(kubeconfig, tmp_path / "again.json"), check=True, name="again")
    assert again.returncode == 0, again.output
    assert "Would create in namespace" not in again.output
    assert changed_tasks(again.output) == [], again.output
