# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``ansible-galaxy collection build`` → install into a fresh path → use it from there."""

from __future__ import annotations

import json
import re
import shutil
import sys
import tarfile
from pathlib import Path
from typing import List

import pytest

from packaging_helpers import BIN, ROOT as ROOT_DIR, Installed, run  # pylint: disable=import-error

# What a user of the collection needs, and what only the repository's developers need.
MUST_SHIP = [
    "MANIFEST.json",
    "plugins/modules/mig_config.py",
    "plugins/module_utils/mig/plan.py",
    "roles/mig_reconfigure/tasks/main.yml",
    "playbooks/mig-reconfigure.yml",
    "playbooks/mig_reconfigure.yml",
    "playbooks/mig-demand.yml",
    "playbooks/mig_demand.yml",
    "plugins/modules/mig_demand_plan.py",
    # The event-driven mode: ansible-rulebook finds these in the installed collection.
    "extensions/eda/plugins/event_source/gpu_pending_pods.py",
    "extensions/eda/rulebooks/mig_demand.yml",
    "requirements-eda.txt",
    "playbooks/nvidia-gpu-operator.yml",
    "playbooks/nvidia_gpu_operator.yml",
    "roles/node_prepare/tasks/main.yml",
    "inventories/example/hosts.yml",
    "inventories/example/group_vars/all.yml",
    "inventories/example/group_vars/gpu_nodes.yml",
    "requirements-node.txt",
    "files/mig-configs/default.yaml",
    "meta/runtime.yml",
    "meta/execution-environment.yml",
    "meta/ee-requirements.txt",
    "meta/ee-bindep.txt",
    "requirements.yml",
    "requirements.txt",
    # The simulator ships so users can rehearse a rollout without GPUs (pip install it from here).
    "gpuops_sim/__main__.py",
    "gpuops_sim/nvml/library.py",
    "pyproject.toml",
]
MUST_NOT_SHIP_PREFIXES = [
    "tests/", "bench/", "molecule/", ".venv/", ".tmp/", ".collections/", ".git/", ".ci/", ".pytest_cache/",
]


def members(tarball: Path) -> List[str]:
    with tarfile.open(tarball) as archive:
        return [name.removeprefix("./") for name in archive.getnames()]


def test_tarball_ships_the_collection_and_the_simulator(installed_collection: Installed) -> None:
    names = set(members(installed_collection.tarball))
    missing = [path for path in MUST_SHIP if path not in names]
    assert not missing, f"missing from the tarball: {missing}"


def test_tarball_leaves_out_development_files_and_simulator_state(installed_collection: Installed) -> None:
    names = members(installed_collection.tarball)
    leaked = [
        name for name in names
        if any(name.startswith(prefix) or name == prefix.rstrip("/") for prefix in MUST_NOT_SHIP_PREFIXES)
        or "__pycache__" in name or ".egg-info" in name or name.endswith((".pyc", ".tar.gz"))
        # the simulator's runtime state (cluster up --dir, node state files)
        or Path(name).name in {"kubeconfig", "cluster.pid", "cluster.json", "cluster.log"}
    ]
    assert not leaked, f"development files in the tarball: {leaked[:20]}"


def test_manifest_declares_kubernetes_core(installed_collection: Installed) -> None:
    manifest = json.loads((installed_collection.collection_root / "MANIFEST.json").read_text())
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"]) == ("gpuops", "nvidia")
    assert "kubernetes.core" in info["dependencies"]


def test_ansible_doc_reads_the_installed_copy(installed_collection: Installed) -> None:
    listing = run([str(BIN / "ansible-doc"), "-l", "gpuops.nvidia", "--json"], installed_collection.workdir,
                  installed_collection.env)
    modules = json.loads(listing.stdout)
    assert {"gpuops.nvidia.mig_config", "gpuops.nvidia.gpu_info", "gpuops.nvidia.k8s_node_evacuate"} <= set(modules)

    doc = run([str(BIN / "ansible-doc"), "--json", "gpuops.nvidia.mig_config"], installed_collection.workdir,
              installed_collection.env)
    entry = json.loads(doc.stdout)["gpuops.nvidia.mig_config"]
    assert entry["doc"]["filename"].startswith(str(installed_collection.collection_root))
    assert "config_name" in entry["doc"]["options"] or "config" in entry["doc"]["options"]

    roles = run([str(BIN / "ansible-doc"), "-t", "role", "--json", "gpuops.nvidia.mig_reconfigure"],
                installed_collection.workdir, installed_collection.env)
    assert "main" in json.loads(roles.stdout)["gpuops.nvidia.mig_reconfigure"]["entry_points"]


def test_a_module_runs_from_the_installed_copy(installed_collection: Installed, tmp_path: Path) -> None:
    gpuops_sim_nvml = pytest.importorskip("gpuops_sim.nvml")
    state = tmp_path / "node.json"
    gpuops_sim_nvml.init_node(state, "A100-SXM4-40GB", 2)
    env = dict(installed_collection.env, GPUOPS_NVML_SIMULATOR=str(state))
    proc = run([str(BIN / "ansible"), "localhost", "-m", "gpuops.nvidia.gpu_info", "-e",
                f"ansible_python_interpreter={sys.executable}", "-c", "local", "-o"],
               installed_collection.workdir, env)
    assert "SUCCESS" in proc.stdout
    assert '"uuid": "GPU-' in proc.stdout or "GPU-" in proc.stdout


def test_the_readmes_commands_run_the_playbooks_from_the_installed_copy(installed_collection: Installed) -> None:
    """README: copy the example inventory out of the installed collection and run the playbooks by
    their collection names (a playbook name must be an identifier there)."""
    readme = (ROOT_DIR / "README.md").read_text(encoding="utf-8")
    assert "cp -r ~/.ansible/collections/ansible_collections/gpuops/nvidia/inventories/example inventories/site" in readme
    assert "ansible-playbook -i inventories/site gpuops.nvidia.nvidia_gpu_operator --check --diff" in readme
    site = installed_collection.workdir / "inventories" / "site"
    shutil.copytree(installed_collection.collection_root / "inventories" / "example", site)
    playbook = [str(BIN / "ansible-playbook"), "-i", str(site)]
    for name in ("gpuops.nvidia.nvidia_gpu_operator", "gpuops.nvidia.mig_reconfigure", "gpuops.nvidia.mig_demand"):
        run(playbook + [name, "--syntax-check"], installed_collection.workdir, installed_collection.env)
    hosts = run(playbook + ["gpuops.nvidia.nvidia_gpu_operator", "--list-hosts"], installed_collection.workdir,
                installed_collection.env).stdout
    members = {}
    for block in hosts.split("  play #")[1:]:
        name = re.match(r"\d+ \([^)]*\): (.*?)\tTAGS", block).group(1)
        members[name] = set(re.findall(r"^      (\S+)$", block, re.M))
    # The node plays run on the GPU nodes; the API plays on the gpuops_api group's first host, not localhost.
    assert members["Validate the settings and every node's MIG plan before anything changes"] == {
        "gpu01.example.com", "gpu02.example.com", "gpu03.example.com"}, hosts
    api_plays = [name for name in members if name.startswith("Deploy")]
    assert len(api_plays) == 2 and all(members[name] == {"cp01.example.com"} for name in api_plays), hosts
