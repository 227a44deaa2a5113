# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rollout driven by ansible-runner (the engine of AWX and Automation Platform), from the
collection as installed from its tarball, on a one-node simulated cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from packaging_helpers import BIN, ROOT, Installed  # pylint: disable=import-error

ansible_runner = pytest.importorskip("ansible_runner")
cluster_module = pytest.importorskip("gpuops_sim.k8s.cluster")
from gpuops_sim.k8s.agents import AgentSettings  # noqa: E402  pylint: disable=wrong-import-position

STATE = "nvidia.com/mig.config.state"


@pytest.fixture
def one_node_cluster(tmp_path: Path):
    options = cluster_module.ClusterOptions(
        pools=[cluster_module.parse_pool("a100:1:A100-40GB:1")],
        settings=AgentSettings(plugin_delay=0.1, gfd_interval=3600),
    )
    cluster = cluster_module.Cluster(str(tmp_path / "cluster"), options)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.mark.slow
def test_mig_reconfigure_runs_through_ansible_runner(installed_collection: Installed, one_node_cluster, tmp_path: Path):
    cluster = one_node_cluster
    (node,) = cluster.nodes
    private = tmp_path / "runner"
    private.mkdir()
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\nretry_files_enabled = false\n")
    playbook = installed_collection.collection_root / "playbooks" / "mig-reconfigure.yml"

    result = ansible_runner.run(
        private_data_dir=str(private),
        playbook=str(playbook),
        inventory=str(Path(cluster.directory) / "inventory.yml"),
        extravars={"k8s_gpu_mig_strategy": "mixed", "mig_config_name": "all-1g.5gb",
                   "mig_rollout_batch": "10%", "mig_reconfigure_wait_timeout": 120},
        envvars={
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_COLLECTIONS_PATH": str(installed_collection.collections_path),
            "ANSIBLE_CALLBACKS_ENABLED": "gpuops.nvidia.mig_rollout",
            # The simulator's connection to its nodes lives in the clone, not in the collection.
            "ANSIBLE_CONNECTION_PLUGINS": str(ROOT / "gpuops_sim" / "ansible_plugins" / "connection"),
            "ANSIBLE_NOCOLOR": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        },
        quiet=True,
        timeout=600,
    )
    stdout = result.stdout.read()
    assert (result.status, result.rc) == ("successful", 0), stdout[-6000:]
    assert "MIG ROLLOUT SUMMARY" in stdout

    # What AWX stores: one event per task result, with the module that ran and where it came from.
    ran = {event["event_data"].get(key) for event in result.events if event["event"] == "runner_on_ok"
           for key in ("task_action", "resolved_action")}
    assert {"gpuops.nvidia.mig_config", "gpuops.nvidia.k8s_node_rollout"} <= ran
    assert not result.stats["failures"]

    obj = cluster.emulator.store.get("nodes", None, node)
    assert obj["metadata"]["labels"][STATE] == "success"
    assert obj["metadata"]["labels"]["nvidia.com/mig.config"] == "all-1g.5gb"
    assert obj["status"]["allocatable"]["nvidia.com/mig-1g.5gb"] == "7"
    assert not [t for t in obj["spec"].get("taints") or [] if t["key"] == "gpuops.io/mig-reconfigure"]
