# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a device plugin DaemonSet found on a cluster advertises with: its config file, else its environment."""

from __future__ import annotations

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s import gpu_software as sw


def daemonset(env: list[dict], config_map: str | None = None) -> dict:
    volumes = [{"name": "available-configs", "configMap": {"name": config_map}}] if config_map else []
    return {"spec": {"template": {"spec": {"containers": [{"name": "nvidia-device-plugin-ctr", "env": env}], "volumes": volumes}}}}


def test_the_config_file_the_default_config_names_gives_the_strategy_and_replicas():
    configs = {"nvdp-configs": {"data": {
        "default": "version: v1\nflags:\n  migStrategy: single\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 4\n",
        "other": "version: v1\nflags:\n  migStrategy: mixed\n"}}}
    ds = daemonset([{"name": "DEFAULT_CONFIG", "value": "default"}], "nvdp-configs")
    assert sw.plugin_settings(ds, configs) == {"mig_strategy": "single", "time_slicing_replicas": 4}


def test_without_a_config_file_the_environment_gives_the_strategy():
    assert sw.plugin_settings(daemonset([{"name": "MIG_STRATEGY", "value": "mixed"}]), {}) == {"mig_strategy": "mixed"}
    assert sw.plugin_settings(daemonset([]), {}) == {}
