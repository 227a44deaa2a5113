"""The simulator's connection plugin (gpuops_sim_node): runs on the controller like `local`, but
ansible.builtin.reboot reboots through it with the node's own commands instead of refusing."""

from __future__ import annotations

import getpass
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ANSIBLE = os.path.join(os.path.dirname(sys.executable), "ansible")


def run_reboot(tmp_path, connection: str, env: dict | None = None) -> tuple[int, dict]:
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("1\n")
    reboot = tmp_path / "reboot.py"
    reboot.write_text(f"import pathlib\np = pathlib.Path({str(boot_id)!r})\np.write_text(str(int(p.read_text()) + 1))\n")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"node": {
        "ansible_connection": connection, "ansible_python_interpreter": sys.executable}}}}))
    argv = [ANSIBLE, "node", "-i", str(inventory), "-m", "ansible.builtin.reboot", "-a",
            json.dumps({"reboot_command": f"{sys.executable} {reboot}", "boot_time_command": f"cat {boot_id}",
                        "reboot_timeout": 30})]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120, cwd=str(tmp_path),
                          env=dict(os.environ, ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_NOCOLOR="1", **(env or {})))
    text = done.stdout
    try:
        result = json.JSONDecoder().raw_decode(text, text.index("{"))[0]
    except ValueError:
        result = {}
    return done.returncode, dict(result, boot_id=boot_id.read_text().strip(), output=text + done.stderr)


def test_reboot_goes_through_the_simulated_node_connection(tmp_path):
    # Outside the clone (cwd is tmp_path, no ansible.cfg there): found through ANSIBLE_CONNECTION_PLUGINS.
    plugins = os.path.join(REPO, "gpuops_sim", "ansible_plugins", "connection")
    rc, result = run_reboot(tmp_path, "gpuops_sim_node", {"ANSIBLE_CONNECTION_PLUGINS": plugins})
    assert rc == 0, result["output"]
    assert result["rebooted"] is True and result["changed"] is True
    assert result["boot_id"] == "2"


def test_the_local_connection_is_still_refused(tmp_path):
    rc, result = run_reboot(tmp_path, "local")
    assert rc != 0
    assert "would reboot the control node" in result["output"]
    assert result["boot_id"] == "1"


def test_the_clone_ansible_cfg_finds_the_plugin():
    cfg = open(os.path.join(REPO, "ansible.cfg"), encoding="utf-8").read()
    assert "connection_plugins = ./gpuops_sim/ansible_plugins/connection" in cfg
    from gpuops_sim.ansible_plugins.connection.gpuops_sim_node import Connection  # pylint: disable=import-outside-toplevel
    assert Connection.transport == "gpuops_sim_node"


def mitogen_env() -> dict:
    pytest.importorskip("ansible_mitogen", reason="Mitogen for Ansible (requirements-mitogen.txt) is not installed")
    from gpuops_sim.ansible_plugins import strategy_env  # pylint: disable=import-outside-toplevel
    plugins = os.path.join(REPO, "gpuops_sim", "ansible_plugins", "connection")
    return dict(strategy_env("mitogen_linear"), ANSIBLE_CONNECTION_PLUGINS=plugins)


def test_reboot_goes_through_the_simulated_node_connection_under_mitogen(tmp_path):
    rc, result = run_reboot(tmp_path, "gpuops_sim_node", mitogen_env())
    assert rc == 0, result["output"]
    assert result["rebooted"] is True and result["changed"] is True
    assert result["boot_id"] == "2"


def test_under_mitogen_each_node_has_an_interpreter_of_its_own_and_become_to_its_login_is_no_sudo(tmp_path):
    """Mitogen's own local connection would share one interpreter among all hosts with the same
    Python; a simulated node is a host of its own. Its login is the controller's user, so become
    (root, here the login) adds no sudo step: the stack is the node's interpreter alone."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {name: {
        "ansible_connection": "gpuops_sim_node", "ansible_python_interpreter": sys.executable,
        "ansible_become_user": getpass.getuser()} for name in ("node-a", "node-b")}}}))
    # mitogen_get_stack: Mitogen's own action plugin, which returns the connection stack a task would use.
    argv = [ANSIBLE, "all", "-i", str(inventory), "-b", "-m", "mitogen_get_stack"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120, cwd=str(tmp_path),
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json", **mitogen_env()))
    assert done.returncode == 0, done.stdout + done.stderr
    stacks = {}
    for heading in re.finditer(r"^(\S+) \| \w+ => ", done.stdout, re.M):
        stacks[heading.group(1)] = json.JSONDecoder().raw_decode(done.stdout, heading.end())[0]["result"]
    assert set(stacks) == {"node-a", "node-b"}, done.stdout
    for name, stack in stacks.items():
        assert [hop["method"] for hop in stack] == ["local"], stack
        assert stack[0]["kwargs"]["remote_name"] == f"gpuops-sim-node:{name}"
        assert stack[0]["kwargs"]["python_path"] == [sys.executable]


def test_under_mitogen_a_nodes_commands_run_from_its_own_interpreter(tmp_path):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {name: {
        "ansible_connection": "gpuops_sim_node", "ansible_python_interpreter": sys.executable} for name in ("node-a", "node-b")}}}))
    # The command's parent is the process that ran the module: the node's Mitogen interpreter.
    argv = [ANSIBLE, "all", "-i", str(inventory), "-m", "ansible.builtin.shell", "-a", "ps -o args= -p $PPID"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120, cwd=str(tmp_path),
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1", **mitogen_env()))
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("node-a", "node-b"):
        assert re.search(rf"^{name} \| CHANGED \| rc=0 >>\n.*\(mitogen:gpuops-sim-node:{name}\)", done.stdout, re.M), done.stdout


def test_each_command_run_on_a_node_logs_the_cpu_it_used_when_asked(tmp_path):
    # A module that burns a measurable amount of CPU on the node; the log gets one line per command.
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"node": {
        "ansible_connection": "gpuops_sim_node", "ansible_python_interpreter": sys.executable}}}}))
    log = tmp_path / "node-cpu.log"
    plugins = os.path.join(REPO, "gpuops_sim", "ansible_plugins", "connection")
    argv = [ANSIBLE, "node", "-i", str(inventory), "-m", "ansible.builtin.command", "-a",
            f"{sys.executable} -c 'sum(range(3 * 10 ** 7))'"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120, cwd=str(tmp_path),
                          env=dict(os.environ, ANSIBLE_CONNECTION_PLUGINS=plugins, GPUOPS_SIM_NODE_CPU_LOG=str(log)))
    assert done.returncode == 0, done.stdout + done.stderr
    used = [float(line) for line in log.read_text().split()]
    assert used, "no command was logged"
    # The module's Python and the command it ran (summing 30 million numbers) are the node's work.
    assert sum(used) > 0.2
