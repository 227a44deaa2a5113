# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The node_prepare role, run against a bare interpreter of the test's own (a virtual environment
without any library) standing in for a GPU node's Python, with a local wheel directory (offline
install): the modules' libraries import afterwards with the interpreter it sets, a rehearsal changes
nothing, and a second run reports nothing changed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from roles_helpers import REPO, dump_task, read_json, run_playbook

ROLE_VARS = yaml.safe_load((REPO / "roles" / "node_prepare" / "vars" / "main.yml").read_text(encoding="utf-8"))


def recap(output: str, host: str) -> dict[str, int]:
    found = re.search(r"^%s\s*:\s*(.*)$" % re.escape(host), output, re.MULTILINE)
    assert found, output
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", found.group(1))}


def test_requirements_node_txt_holds_the_roles_ranges() -> None:
    lines = [line.strip() for line in (REPO / "requirements-node.txt").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines == ["%s>=%s,<%s" % (lib["name"], lib["min"], lib["max"]) for lib in ROLE_VARS["node_prepare_libraries"]]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nodes' requirements as wheels, downloaded once (the offline directory a site would carry)."""
    folder = tmp_path_factory.mktemp("wheels")
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
                           "--dest", str(folder), "--requirement", str(REPO / "requirements-node.txt")],
                          capture_output=True, text=True, timeout=240, check=False)
    if done.returncode != 0:
        pytest.skip("cannot download the nodes' wheels from the package index: %s" % done.stderr[-500:])
    return folder


def test_installs_offline_into_a_bare_interpreter_then_reports_ok(tmp_path: Path, wheels: Path) -> None:
    base = tmp_path / "base"
    subprocess.run([sys.executable, "-m", "venv", str(base)], check=True, timeout=120)
    base_python = str(base / "bin" / "python")
    venv = tmp_path / "opt" / "venv"
    role_vars: dict[str, Any] = {
        "node_prepare_python": base_python, "node_prepare_venv": str(venv), "node_prepare_distribution_packages": {},
        "node_prepare_system_site_packages": False, "node_prepare_wheel_dir": str(wheels),
        "node_prepare_wheel_dest": str(tmp_path / "opt" / "wheels")}
    inventory = {"all": {"hosts": {"node1": {"ansible_connection": "local", "ansible_python_interpreter": base_python}}}}
    prepare = [{"name": "Prepare", "hosts": "node1", "gather_facts": False, "become": True,
                "roles": [{"role": "gpuops.nvidia.node_prepare", "vars": role_vars}],
                "tasks": [dump_task(tmp_path / "interpreter.json", "ansible_python_interpreter")]}]
    after = [dict(prepare[0], tasks=prepare[0]["tasks"] + [
        # The module runs with the interpreter the role set: pynvml imports, and no libnvidia-ml is found here.
        {"name": "Read the GPUs", "gpuops.nvidia.gpu_info": {}, "register": "info", "environment": {"LD_LIBRARY_PATH": "/nonexistent"}},
        {"name": "Import every library", "ansible.builtin.command": {
            "argv": ["{{ ansible_python_interpreter }}", "-c", "import pynvml, yaml, grpc, google.protobuf; print('ok')"]},
         "register": "imports", "changed_when": False},
        dump_task(tmp_path / "after.json", "{'interpreter': ansible_python_interpreter, 'info': info, 'imports': imports.stdout}"),
    ])]

    # A rehearsal on the bare node: it says what it would do and leaves nothing behind.
    rehearsal = run_playbook(tmp_path, prepare, inventory, check=True, name="rehearsal")
    assert rehearsal.returncode == 0, rehearsal.output
    assert recap(rehearsal.output, "node1")["changed"] > 0 and not venv.exists()
    # The rest of a rehearsal runs with the node's own Python: there is no environment yet.
    assert read_json(tmp_path / "interpreter.json") == base_python

    first = run_playbook(tmp_path, after, inventory, name="first")
    assert first.returncode == 0, first.output
    result = read_json(tmp_path / "after.json")
    assert result["interpreter"] == str(venv / "bin" / "python") and result["imports"] == "ok"
    assert result["info"]["gpus"] == [] and "NVML" in result["info"]["nvml_unavailable"]
    assert (venv / "gpuops-requirements.txt").read_text(encoding="utf-8").splitlines()[1:] == [
        line for line in (REPO / "requirements-node.txt").read_text(encoding="utf-8").splitlines() if not line.startswith("#")]

    # Converged: one task looks, finds everything, and the run changes nothing (in check mode too).
    second = run_playbook(tmp_path, prepare, inventory, name="second")
    assert second.returncode == 0, second.output
    # The arguments' check, the look, the interpreter for the run (the inventory names the bare one), the dump.
    assert recap(second.output, "node1")["changed"] == 0 and recap(second.output, "node1")["ok"] == 5
    assert read_json(tmp_path / "interpreter.json") == str(venv / "bin" / "python")
    rehearsed = run_playbook(tmp_path, prepare, inventory, check=True, name="rehearsal-converged")
    assert rehearsed.returncode == 0 and recap(rehearsed.output, "node1")["changed"] == 0, rehearsed.output


def test_an_interpreter_that_has_the_libraries_already_costs_one_task(tmp_path: Path) -> None:
    """The interpreter Ansible uses has them all (as the test's own does): the arguments' check and one
    look, and nothing else runs (the role ends there by the controller's decision, no skipped task)."""
    inventory = {"all": {"hosts": {"node1": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}
    plays = [{"name": "Prepare", "hosts": "node1", "gather_facts": False, "roles": [{"role": "gpuops.nvidia.node_prepare", "vars": {
        "node_prepare_venv": str(tmp_path / "never")}}]}]
    run = run_playbook(tmp_path, plays, inventory)
    assert run.returncode == 0, run.output
    assert recap(run.output, "node1") == {"ok": 2, "changed": 0, "unreachable": 0, "failed": 0, "skipped": 0, "rescued": 0, "ignored": 0}
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("deep", [False, True])
def test_the_check_names_a_missing_library_and_one_out_of_range(deep: bool) -> None:
    libraries = [{"name": "PyYAML", "import": "yaml", "min": "99", "max": "100"},
                 {"name": "no-such-dist", "import": "no_such_module", "min": "1", "max": "2"},
                 {"name": "pytest", "import": "pytest", "min": "1", "max": "1000"}]
    argv = [sys.executable, "-c", ROLE_VARS["node_prepare_check_script"], json.dumps(libraries)] + (["import"] if deep else [])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert "PyYAML %s (wanted >=99,<100)" % yaml.__version__ in done.stderr
    assert "no-such-dist (" in done.stderr and "pytest" not in done.stderr
    ok = subprocess.run(argv[:3] + [json.dumps(libraries[2:])], capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"python": sys.executable}
