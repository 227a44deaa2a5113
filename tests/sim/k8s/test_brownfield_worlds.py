# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Simulated clusters that already run NVIDIA software: helm's device plugin chart, the GPU Operator
with a MIG manager that writes its label back, DeepOps' mig-parted service."""

from __future__ import annotations

import time

import pytest

from gpuops_sim.k8s import brownfield
from gpuops_sim.k8s.agents import AgentSettings
from gpuops_sim.k8s.cluster import Cluster, ClusterOptions, parse_pool
from gpuops_sim.node import boot, systemd

POOL = [parse_pool("a100:1:A100-40GB:2")]


def wait(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_installed_by_needs_a_strategy_and_a_known_value():
    with pytest.raises(ValueError, match="installed_by"):
        ClusterOptions(pools=POOL, installed_by="helm").validate()
    with pytest.raises(ValueError, match="installed_by"):
        ClusterOptions(pools=POOL, strategy="single", installed_by="kustomize").validate()


def test_the_helm_chart_runs_release_named_daemons_in_its_namespace(tmp_path):
    options = ClusterOptions(pools=POOL, strategy="single", installed_by="helm", settings=AgentSettings(plugin_delay=0.05))
    with Cluster(str(tmp_path), options) as cluster:
        store = cluster.emulator.store
        wait(lambda: store.get("nodes", None, "gpu-node-1")["status"]["allocatable"].get("nvidia.com/gpu") == "2", "allocatable")
        names = sorted(p["metadata"]["name"].rsplit("-", 1)[0] for p in store.list("pods", brownfield.HELM_NAMESPACE))
        # The chart's node-feature-discovery subchart runs beside them (GFD's labels go through it).
        assert [n for n in names if not n.startswith("nfd-")] == ["nvdp-gpu-feature-discovery", "nvdp-nvidia-device-plugin"]
        ds = store.get("daemonsets", brownfield.HELM_NAMESPACE, "nvdp-nvidia-device-plugin")
        assert ds["metadata"]["annotations"]["meta.helm.sh/release-name"] == "nvdp"


def test_the_operators_mig_manager_writes_its_label_back_until_it_is_switched_off(tmp_path):
    options = ClusterOptions(pools=POOL, strategy="mixed", installed_by="gpu-operator", settings=AgentSettings(plugin_delay=0.05))
    with Cluster(str(tmp_path), options) as cluster:
        store = cluster.emulator.store

        def label():
            return store.get("nodes", None, "gpu-node-1")["metadata"]["labels"]["nvidia.com/mig.config"]
        store.patch("nodes", None, "gpu-node-1", {"metadata": {"labels": {"nvidia.com/mig.config": "all-1g.5gb"}}}, patch_type="merge")
        wait(lambda: cluster.mig_manager.reverted == [("gpu-node-1", "all-1g.5gb")] and label() == "all-disabled", "written back")
        store.patch("clusterpolicies", None, "cluster-policy", {"spec": {"migManager": {"enabled": False}}}, patch_type="merge")
        wait(lambda: not [d for d in store.list("daemonsets", "gpu-operator") if d["metadata"]["name"] == "nvidia-mig-manager"],
             "MIG manager removed")
        store.patch("nodes", None, "gpu-node-1", {"metadata": {"labels": {"nvidia.com/mig.config": "all-1g.5gb"}}}, patch_type="merge")
        cluster.agents.sync()
        assert label() == "all-1g.5gb"


def test_deepops_mig_parted_service_applies_its_config_at_boot_until_disabled(tmp_path):
    with Cluster(str(tmp_path), ClusterOptions(pools=POOL, mig_parted_config="all-3g.20gb")) as cluster:
        path = cluster.state_path("gpu-node-1")
        root = systemd.host(path)["root"]
        assert systemd.is_enabled(root, brownfield.MIG_PARTED_UNIT)
        result = boot.reboot(path)
        assert brownfield.MIG_PARTED_UNIT in result["started"]
        systemd.disable(root, brownfield.MIG_PARTED_UNIT)
        assert not systemd.is_enabled(root, brownfield.MIG_PARTED_UNIT)
        assert brownfield.MIG_PARTED_UNIT not in boot.reboot(path)["started"]
