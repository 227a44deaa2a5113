# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers to run the Kubernetes-object roles with ansible-playbook and read what they rendered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
STANDIN_DIR = Path(__file__).resolve().parent / "standin"

# The GPU nodes of the inventory the render tests use: one node with the play-wide settings, one
# with its own strategy and time-slicing, one whose Kubernetes name differs from its host name.
GPU_INVENTORY: dict[str, Any] = {
    "all": {
        "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}},
        "children": {"gpu_nodes": {"hosts": {
            "gpu-node-1": {},
            "gpu-node-2": {"k8s_gpu_mig_strategy": "single", "device_plugin_time_slicing_replicas": 4},
            "n3": {"k8s_node_name": "gpu-node-3", "device_plugin_time_slicing_replicas": "2",
                   "device_plugin_time_slicing_rename_by_default": True},
        }}},
    },
}
LOCAL_INVENTORY: dict[str, Any] = {
    "all": {"hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}},
}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_playbook(tmp_path: Path, plays: list[dict[str, Any]], inventory: dict[str, Any] | None = None,
                 extra_env: dict[str, str] | None = None, check: bool = False, name: str = "playbook") -> Run:
    """Write the plays and the inventory under tmp_path and run ansible-playbook from the repository."""
    playbook = tmp_path / f"{name}.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False), encoding="utf-8")
    inventory_file = tmp_path / f"{name}-inventory.yml"
    inventory_file.write_text(yaml.safe_dump(inventory or LOCAL_INVENTORY, sort_keys=False), encoding="utf-8")
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "PATH": os.pathsep.join([str(VENV_BIN), env.get("PATH", "")]),
    })
    env.update(extra_env or {})
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory_file), str(playbook)]
    if check:
        argv.append("--check")
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)
    return Run(done.returncode, done.stdout, done.stderr)


def dump_task(path: Path, expression: str) -> dict[str, Any]:
    """A task that writes the value of a Jinja expression to path as JSON (in check mode too)."""
    return {"name": f"Write {path.name}", "check_mode": False, "ansible.builtin.copy": {
        "dest": str(path), "mode": "0644", "content": "{{ " + expression + " | to_nice_json }}"}}


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def by_kind_name(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{obj['kind']}/{obj['metadata']['name']}": obj for obj in objects}
