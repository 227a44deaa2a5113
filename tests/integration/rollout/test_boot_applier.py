# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The boot-time applier the mig role installs, run as a real node runs it: by the node's boot.

A simulated node reboots as a real one does (gpuops_sim/node/boot.py): its pods die, NVML applies
its reboot semantics, the enabled units under the node's root run their ExecStart as written, and
the kubelet starts only when the units it requires succeeded. No playbook runs between the reboot
and the checks, so what the node holds afterwards is the applier's work alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpuops_sim import nvml

ROOT = Path(__file__).resolve().parents[3]
MIXED = ["-e", "k8s_gpu_mig_strategy=mixed", "-e", "mig_reconfigure_wait_timeout=120"]
APPLIER = "usr/local/sbin/gpuops-mig-apply"
UNIT = "etc/systemd/system/gpuops-mig-apply.service"
STATUS = "var/lib/gpuops/mig/boot-status.json"


def node_root(cluster, node: str) -> Path:
    return Path(cluster.directory) / "nodes" / f"{node}-root"


def reboot(cluster, node: str) -> subprocess.CompletedProcess:
    """An unplanned reboot of the node, as an operator (or a power cut) causes one."""
    return subprocess.run([sys.executable, "-m", "gpuops_sim", "node", "reboot", "--state", cluster.cluster.state_path(node)],
                          capture_output=True, text=True, check=True, cwd=ROOT, timeout=300)


def systemctl(cluster, node: str, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, GPUOPS_NVML_SIMULATOR=cluster.cluster.state_path(node))
    return subprocess.run([str(ROOT / "gpuops_sim" / "nvml" / "bin" / "systemctl"), *argv], capture_output=True, text=True,
                          check=False, env=env, timeout=120)


def ready(cluster, node: str) -> bool:
    conditions = cluster.node(node)["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_for(condition, timeout: float = 30.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes (the agents react on their own thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def mig_allocatable(cluster, node: str) -> dict:
    allocatable = cluster.node(node)["status"].get("allocatable") or {}
    return {k: v for k, v in allocatable.items() if k.startswith("nvidia.com/mig-") and v not in ("0", 0)}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["A100-40GB", pytest.param("H100", marks=pytest.mark.acceptance)], ids=["ampere", "hopper"])
def test_unplanned_reboot_comes_back_with_its_layout_from_the_boot_applier_alone(sim_cluster, model):
    cluster = sim_cluster(["pool:1:%s:2" % model])
    node = cluster.nodes[0]
    state = cluster.cluster.state_path(node)
    cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "mig_config_name=all-balanced")
    layout = cluster.layout(node)
    assert all(layout)
    advertised = mig_allocatable(cluster, node)
    assert advertised
    cluster.workload(name="infer", resource="nvidia.com/mig-1g.10gb" if model == "H100" else "nvidia.com/mig-1g.5gb",
                     count=2, node=node)
    assert wait_for(lambda: sum(1 for p in cluster.pods("default") if p["status"].get("phase") == "Running") == 2)
    on_node = {p["metadata"]["name"] for p in cluster.pods() if p["spec"].get("nodeName") == node}
    boot_id = (node_root(cluster, node) / "proc/sys/kernel/random/boot_id").read_text()
    boots = nvml.read_state(state)["boot_count"]
    cluster.clear_requests()

    done = reboot(cluster, node)

    # NVML's reboot semantics, then the applier: Ampere kept its MIG mode but lost its instances,
    # Hopper came back with MIG off; the applier put both back, before the kubelet started.
    after = nvml.read_state(state)
    assert after["boot_count"] == boots + 1
    assert cluster.layout(node) == layout
    assert all(gpu["mig"]["current"] for gpu in cluster.nvml(node)["gpus"])
    journal = (node_root(cluster, node) / "var/log/journal/gpuops-mig-apply.service.log").read_text()
    assert "applied MIG config all-balanced to GPUs 0, 1" in journal
    status = json.loads((node_root(cluster, node) / STATUS).read_text())
    assert status["result"] == "applied" and status["exit_code"] == 0 and status["config_name"] == "all-balanced"
    new_boot_id = (node_root(cluster, node) / "proc/sys/kernel/random/boot_id").read_text()
    assert new_boot_id != boot_id and status["boot_id"] == new_boot_id.strip()
    assert "kubelet up" in done.stdout

    # The pods died with the node: deleted by its kubelet, never evicted.
    requests = cluster.requests()
    kills = [r for r in requests if r["method"] == "DELETE" and r["resource"] == "pods"]
    assert {r["name"] for r in kills} == on_node
    assert all("kubelet" in (r["user_agent"] or "") for r in kills)
    assert not [r for r in requests if r["subresource"] == "eviction"]
    assert [r for r in requests if r["resource"] == "nodes" and r["subresource"] == "status"
            and "kubelet" in (r["user_agent"] or "")]

    # The node is Ready again and its device plugin advertises the restored layout.
    assert ready(cluster, node)
    assert wait_for(lambda: mig_allocatable(cluster, node) == advertised)

    # A playbook run afterwards finds nothing to do.
    again = cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "mig_config_name=all-balanced")
    assert again.changed == 0


@pytest.mark.slow
def test_a_failed_boot_apply_holds_the_kubelet_back_and_the_next_run_fixes_it(sim_cluster):
    cluster = sim_cluster(["pool:1:A100-40GB:1"])
    node = cluster.nodes[0]
    state = cluster.cluster.state_path(node)
    cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "mig_config_name=all-1g.5gb")
    layout = cluster.layout(node)
    nvml.add_fault(state, "nvmlDeviceCreateGpuInstanceWithPlacement", "INSUFFICIENT_RESOURCES", count=0)

    done = reboot(cluster, node)

    # The layout is not in place, and the node does not advertise anything: it stays NotReady,
    # saying which unit held its kubelet back.
    assert "kubelet held back" in done.stdout
    assert cluster.layout(node) != layout
    assert not ready(cluster, node)
    condition = next(c for c in cluster.node(node)["status"]["conditions"] if c["type"] == "Ready")
    assert "gpuops-mig-apply.service failed" in condition["message"]
    status = json.loads((node_root(cluster, node) / STATUS).read_text())
    assert status["result"] == "failed" and status["exit_code"] == 1
    assert "Insufficient" in status["reason"] or "INSUFFICIENT" in status["reason"].upper()
    shown = systemctl(cluster, node, "status", "gpuops-mig-apply.service")
    assert shown.returncode == 3
    assert "Active: failed" in shown.stdout and "status=1/FAILURE" in shown.stdout
    assert systemctl(cluster, node, "is-active", "kubelet.service").returncode == 3
    # The node is still reachable for a fix: its commands run.
    assert systemctl(cluster, node, "is-enabled", "gpuops-mig-apply.service").stdout.strip() == "enabled"

    # Once the cause is gone, the next playbook run reports the failure, applies the layout and
    # starts the unit and the kubelet again.
    nvml.clear_faults(state)
    run = cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "mig_config_name=all-1g.5gb")
    assert "The boot-time MIG apply on %s failed" % node in run.output
    assert "Insufficient" in run.output or "INSUFFICIENT" in run.output.upper()
    assert cluster.layout(node) == layout
    assert ready(cluster, node)
    assert json.loads((node_root(cluster, node) / STATUS).read_text())["result"] == "applied"
    assert cluster.node(node)["metadata"]["labels"]["nvidia.com/mig.config.state"] == "success"


@pytest.mark.slow
def test_edited_boot_applier_files_are_found_and_replaced(sim_cluster):
    cluster = sim_cluster(["pool:1:A100-40GB:1"])
    node = cluster.nodes[0]
    cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "mig_config_name=all-1g.5gb")
    root = node_root(cluster, node)
    library = root / "usr/local/lib/gpuops-mig/ansible_collections/gpuops/nvidia/plugins/module_utils/mig/apply.py"
    originals = {path: path.read_bytes() for path in (root / APPLIER, root / UNIT, library)}
    assert (root / APPLIER).read_bytes() == (ROOT / "roles/mig/files/gpuops-mig-apply").read_bytes()
    assert library.read_bytes() == (ROOT / "plugins/module_utils/mig/apply.py").read_bytes()
    for path in originals:
        assert path.stat().st_uid == 0 and path.stat().st_gid == 0
    # The record on the node is left as it was: only the installed code and unit are edited.
    (root / APPLIER).write_text((root / APPLIER).read_text() + "\nimport os; os.system('id')\n")
    library.write_bytes(library.read_bytes().replace(b"def apply_plan", b"def apply_plan_", 1))
    (root / UNIT).write_text((root / UNIT).read_text().replace("ExecStart=", "ExecStart=/bin/true ", 1))

    run = cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "mig_config_name=all-1g.5gb")
    for task in ("Install the boot-time applier", "Install the boot-time service"):
        assert "TASK [gpuops.nvidia.mig : %s] *" % task in run.output
    assert {path: path.read_bytes() for path in originals} == originals
    assert cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "mig_config_name=all-1g.5gb").changed == 0


@pytest.mark.slow
def test_a_changed_config_is_recorded_by_the_apply_and_a_disabled_service_enabled_again(sim_cluster):
    cluster = sim_cluster(["pool:1:A100-40GB:1"])
    node = cluster.nodes[0]
    root = node_root(cluster, node)
    record = root / "etc/gpuops/mig/config.json"
    cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "mig_config_name=all-1g.5gb")
    assert json.loads(record.read_text())["config_name"] == "all-1g.5gb"

    # A new config on a node whose service files are current: mig_config writes the record in the
    # run that applies; neither the record's copy nor the enabling runs.
    run = cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "mig_config_name=all-balanced")
    assert json.loads(record.read_text())["config_name"] == "all-balanced"
    assert oct(record.stat().st_mode & 0o777) == "0o644"
    for task in ("Record the config the node must run at boot", "Enable the boot-time service",
                 "Install the boot-time applier"):
        assert "TASK [gpuops.nvidia.mig : %s] *" % task not in run.output
    assert systemctl(cluster, node, "is-enabled", "gpuops-mig-apply.service").stdout.strip() == "enabled"

    # Disabled by hand: the next run, with nothing else to do, finds it and enables it again.
    assert systemctl(cluster, node, "disable", "gpuops-mig-apply.service").returncode == 0
    assert systemctl(cluster, node, "is-enabled", "gpuops-mig-apply.service").stdout.strip() == "disabled"
    again = cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "mig_config_name=all-balanced")
    assert again.changed == 1
    assert systemctl(cluster, node, "is-enabled", "gpuops-mig-apply.service").stdout.strip() == "enabled"
    assert cluster.playbook("nvidia-gpu-operator.yml", *MIXED, "-e", "mig_config_name=all-balanced").changed == 0
