# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What gpu_node_software_info finds on a node: mig-parted's service and the config it applies at
boot, a runfile driver, and containerd's runtimes and registry mirrors."""

from __future__ import annotations

import os

from hypothesis import given, settings, strategies as st

from ansible_collections.gpuops.nvidia.plugins.module_utils import node_software as ns

DEEPOPS_UNIT = """[Unit]
Description=Configure MIG on NVIDIA GPUs
Before=kubelet.service

[Service]
Type=oneshot
Environment="MIG_PARTED_CONFIG_FILE=/etc/nvidia-mig-manager/config.yml"
ExecStart=/usr/bin/nvidia-mig-manager.sh

[Install]
WantedBy=multi-user.target
"""

CONTAINERD = """version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
  runtime_type = "io.containerd.kata.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
  BinaryName = "/usr/bin/nvidia-container-runtime"
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["https://mirror.example"]
"""


def write(root, path, text):
    target = os.path.join(root, path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(text)


def test_a_deepops_mig_parted_service_with_its_drop_in_config_name(tmp_path):
    root = str(tmp_path)
    write(root, "etc/systemd/system/nvidia-mig-manager.service", DEEPOPS_UNIT)
    write(root, "etc/systemd/system/nvidia-mig-manager.service.d/override.conf",
          '[Service]\nEnvironment="MIG_PARTED_SELECTED_CONFIG=all-1g.5gb"\n')
    os.makedirs(os.path.join(root, "etc/systemd/system/multi-user.target.wants"))
    os.symlink("../nvidia-mig-manager.service", os.path.join(root, "etc/systemd/system/multi-user.target.wants/nvidia-mig-manager.service"))
    found = ns.read_node(root, "/etc/containerd/config.toml", lambda unit: None)
    [service] = found["mig_manager_services"]
    assert (service["name"], service["selected_config"], service["config_file"], service["enabled"]) == (
        "nvidia-mig-manager.service", "all-1g.5gb", "/etc/nvidia-mig-manager/config.yml", True)
    assert found["containerd"]["present"] is False and found["driver_runfile"] == []


def test_systemctl_answers_the_service_state_and_an_exec_option_names_the_config(tmp_path):
    root = str(tmp_path)
    write(root, "lib/systemd/system/mig-parted.service",
          "[Service]\nExecStart=/usr/bin/nvidia-mig-parted apply -f /etc/mig.yaml -c all-balanced\n")
    found = ns.read_node(root, "/etc/containerd/config.toml",
                         lambda unit: {"ActiveState": "inactive", "UnitFileState": "disabled"})
    [service] = found["mig_manager_services"]
    assert (service["selected_config"], service["config_file"], service["enabled"], service["active"]) == (
        "all-balanced", "/etc/mig.yaml", False, "inactive")


def test_a_runfile_driver_and_containerds_entries_are_reported(tmp_path):
    root = str(tmp_path)
    write(root, "usr/bin/nvidia-uninstall", "#!/bin/sh\n")
    write(root, "etc/containerd/config.toml", CONTAINERD)
    found = ns.read_node(root, "/etc/containerd/config.toml", lambda unit: None)
    assert found["driver_runfile"] == [os.path.join(root, "usr/bin/nvidia-uninstall")]
    containerd = found["containerd"]
    assert containerd["runtimes"] == {"runc": "", "kata": "", "nvidia": "/usr/bin/nvidia-container-runtime"}
    assert (containerd["default_runtime"], containerd["nvidia_runtimes"], containerd["registry_mirrors"]) == ("runc", ["nvidia"], ["docker.io"])


def test_the_header_scan_finds_the_same_runtimes_and_mirrors():
    found = ns._containerd_entries_by_headers(CONTAINERD)  # pylint: disable=protected-access
    assert sorted(found["runtimes"]) == ["kata", "nvidia", "runc"] and found["registry_mirrors"] == ["docker.io"]


def test_a_broken_containerd_config_is_a_warning(tmp_path):
    root = str(tmp_path)
    write(root, "etc/containerd/config.toml", "[plugins\n")
    found = ns.read_node(root, "/etc/containerd/config.toml", lambda unit: None)
    assert found["containerd"]["present"] and len(found["warnings"]) == 1


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_any_unit_or_config_text_is_read_without_raising(text):
    ns.mig_manager_service("x.service", [ns.parse_unit(text)])
    try:
        ns.containerd_entries(text)
    except ValueError:
        pass
    ns._containerd_entries_by_headers(text)  # pylint: disable=protected-access


def test_containerd_tables_of_the_wrong_type_count_as_absent():
    found = ns.containerd_entries('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\nruntimes = [1]\n'
                                  'default_runtime_name = 3\n[plugins."io.containerd.grpc.v1.cri"]\nregistry = "x"\n')
    assert found["runtimes"] == {} and found["default_runtime"] == "" and found["registry_mirrors"] == []


def test_a_new_config_that_drops_a_runtime_or_mirror_names_them():
    from ansible_collections.gpuops.nvidia.plugins.filter.containerd import containerd_dropped_entries  # pylint: disable=import-outside-toplevel
    registry = '[plugins."io.containerd.grpc.v1.cri".registry'
    without = CONTAINERD.replace("runtimes.kata]", "runtimes.other]").split(registry, maxsplit=1)[0]
    assert containerd_dropped_entries(CONTAINERD, without) == ["runtime kata", "registry mirror docker.io"]
    assert containerd_dropped_entries(CONTAINERD, CONTAINERD) == []
