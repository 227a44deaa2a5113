# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A first install on fresh GPU nodes (``cluster up --fresh``): no driver (NVML cannot be loaded and
nvidia-smi is not on PATH until a driver is installed and the node rebooted), a base Python without
the modules' libraries, and an unprivileged login user. The README's steps, with only an inventory and
its group_vars, install everything and converge; a second run changes nothing. Without the product's
own answers to each (become, node preparation) the run fails, naming why."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from test_first_install import STANDIN_DIR, site_inventory
from test_rollout import mutations

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SETTINGS = {"k8s_gpu_mig_strategy": "mixed", "mig_config_name": "all-1g.5gb",
            # The driver needs a reboot; the rollout reboots the node, drained.
            "mig_allow_reboot": True}


@pytest.fixture(scope="session")
def node_wheels() -> str:
    """requirements-node.txt as wheels for the nodes' Python (the controller's version): the offline
    directory of node_prepare_wheel_dir, downloaded once and kept under .tmp/ for later runs."""
    folder = os.path.join(ROOT, ".tmp", "node-wheels-py%d.%d" % sys.version_info[:2])
    if not os.path.isfile(os.path.join(folder, ".complete")):
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
                               "--dest", folder, "--requirement", os.path.join(ROOT, "requirements-node.txt")],
                              capture_output=True, text=True, timeout=240, check=False)
        if done.returncode != 0:
            pytest.skip("cannot download the nodes' wheels from the package index: %s" % done.stderr[-500:])
        open(os.path.join(folder, ".complete"), "w", encoding="utf-8").close()
    return folder


@pytest.fixture
def fresh_cluster(sim_cluster):
    cluster = sim_cluster(["a100:2:A100-40GB:2"], fresh=True)
    for node in cluster.nodes:
        state = cluster.nvml_state(node)
        assert state["driver_version"] is None
    return cluster


def test_the_readme_steps_install_everything_on_fresh_nodes_and_a_second_run_changes_nothing(fresh_cluster, node_wheels):
    cluster = fresh_cluster
    # As the example inventory's group_vars/gpu_nodes.yml: the interpreter node_prepare creates, which
    # does not exist yet on the first run.
    site = ["-i", str(cluster.write_vars("site.yml", {"all": {"vars": dict(SETTINGS, node_prepare_wheel_dir=node_wheels), "children": {
        "gpu_nodes": {"vars": {"ansible_python_interpreter": "{{ node_prepare_venv }}/bin/python"}},
        "gpuops_api": {"hosts": {"api": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}}}))]
    rehearsal = cluster.playbook("nvidia_gpu_operator.yml", *site, "--check", "--diff")
    assert all(cluster.nvml_state(node)["driver_version"] is None for node in cluster.nodes)
    run = cluster.playbook("nvidia_gpu_operator.yml", *site)
    for node in cluster.nodes:
        state = cluster.nvml_state(node)
        assert state["driver_version"] == "570.86.15" and "installed_driver_version" not in state
        labels = cluster.node(node)["metadata"]["labels"]
        assert labels["nvidia.com/mig.config.state"] == "success"
        assert cluster.node(node)["status"]["allocatable"]["nvidia.com/mig-1g.5gb"] == "14"
        root = cluster.cluster_root(node)
        assert os.access(os.path.join(root, "opt", "gpuops", "venv", "bin", "python"), os.X_OK)
        assert os.access(os.path.join(root, "usr", "bin", "nvidia-smi"), os.X_OK)
    again = cluster.playbook("nvidia_gpu_operator.yml", *site)
    assert again.changed == 0, again.output[-5000:]
    assert rehearsal.rc == 0 and run.rc == 0

    # An unplanned reboot: the boot-time applier, run by the prepared environment's Python, puts the
    # layout back before the kubelet starts.
    node = cluster.nodes[0]
    layout = cluster.layout(node)
    done = subprocess.run([sys.executable, "-m", "gpuops_sim", "node", "reboot", "--state", cluster.cluster.state_path(node)],
                          capture_output=True, text=True, check=True, cwd=ROOT, timeout=300)
    assert "kubelet up" in done.stdout and "failed: none" in done.stdout, done.stdout
    assert cluster.layout(node) == layout


@pytest.mark.acceptance
def test_with_the_operators_driver_the_readme_steps_converge_on_fresh_nodes_and_a_second_run_changes_nothing(
        fresh_cluster, node_wheels, monkeypatch, tmp_path):
    """gpu_stack=operator with its driver: the chart (helm stand-in) creates the ClusterPolicy, the
    simulated operator's driver pods load the driver (no reboot), and the rollout plans each node once
    its NVML opens."""
    monkeypatch.setenv("PATH", os.pathsep.join([STANDIN_DIR, os.environ.get("PATH", "")]))
    monkeypatch.setenv("GPUOPS_HELM_STANDIN_DIR", str(tmp_path / "helm"))
    cluster = fresh_cluster
    settings = {"k8s_gpu_mig_strategy": "mixed", "mig_config_name": "all-1g.5gb", "gpu_stack": "operator",
                "gpu_operator_driver_enabled": True, "node_prepare_wheel_dir": node_wheels}
    site = ["-i", str(cluster.write_vars("site.yml", {"all": {"vars": settings, "children": {
        "gpu_nodes": {"vars": {"ansible_python_interpreter": "{{ node_prepare_venv }}/bin/python"}},
        "gpuops_api": {"hosts": {"api": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}}}))]
    rehearsal = cluster.playbook("nvidia_gpu_operator.yml", *site, "--check", "--diff")
    assert all(cluster.nvml_state(node)["driver_version"] is None for node in cluster.nodes)
    run = cluster.playbook("nvidia_gpu_operator.yml", *site)
    assert rehearsal.rc == 0 and run.rc == 0
    policy = cluster.store.get("clusterpolicies", None, "cluster-policy")
    assert policy["spec"]["driver"]["enabled"] is True and policy["spec"]["migManager"]["enabled"] is False
    for node in cluster.nodes:
        state = cluster.nvml_state(node)
        assert state["driver_version"] == "570.86.15" and state["boot_count"] == 0
        labels = cluster.node(node)["metadata"]["labels"]
        assert labels["nvidia.com/mig.config.state"] == "success"
        assert cluster.node(node)["status"]["allocatable"]["nvidia.com/mig-1g.5gb"] == "14"
    again = cluster.playbook("nvidia_gpu_operator.yml", *site)
    assert again.changed == 0, again.output[-5000:]


def test_without_become_root_only_work_fails_naming_the_permission(fresh_cluster, node_wheels):
    cluster = fresh_cluster
    site = site_inventory(cluster, "site.yml", dict(SETTINGS, node_prepare_wheel_dir=node_wheels, gpuops_become=False))
    run = cluster.playbook("nvidia_gpu_operator.yml", *site, check=False)
    assert run.rc != 0
    assert "installing the NVIDIA driver: permission denied (running as %s, not root" % user_name() in run.output, run.output[-3000:]
    assert all(cluster.nvml_state(node).get("installed_driver_version") is None for node in cluster.nodes)


def test_without_node_preparation_the_missing_library_is_reported(fresh_cluster):
    cluster = fresh_cluster
    cluster.clear_requests()
    run = cluster.playbook("nvidia_gpu_operator.yml", *site_inventory(cluster, "site.yml", dict(SETTINGS, gpuops_node_prepare=False)),
                           check=False)
    assert run.rc != 0
    assert "Traceback" not in run.output
    # The validating play refuses, naming the library and the role, before anything changes.
    for node in cluster.nodes:
        assert ("Node %s: the Python library pynvml (PyPI nvidia-ml-py) is not installed in the Python Ansible uses on it"
                % node) in run.output, run.output[-3000:]
    assert "node_prepare role" in run.output
    assert "Install the NVIDIA driver" not in run.output
    assert not mutations(cluster.requests())


def test_with_the_operator_and_no_driver_of_its_own_a_fresh_node_is_refused(fresh_cluster):
    cluster = fresh_cluster
    cluster.clear_requests()
    run = cluster.playbook("nvidia_gpu_operator.yml", *site_inventory(cluster, "site.yml", dict(SETTINGS, gpu_stack="operator")),
                           check=False)
    assert run.rc != 0
    for node in cluster.nodes:
        assert "Node %s has no usable NVIDIA driver" % node in run.output, run.output[-3000:]
    assert "gpu_operator_driver_enabled=false installs none" in run.output
    assert not mutations(cluster.requests())


def user_name() -> str:
    from gpuops_sim.k8s.cluster import FRESH_NODE_USER  # pylint: disable=import-outside-toplevel
    return FRESH_NODE_USER
