# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The event-driven mode with the real ansible-rulebook on a simulated cluster: pods that ask for
MIG devices the layout lacks make the gpu_pending_pods source fire once for the batch, the rulebook
runs mig-demand.yml, and the pods run; a pending pod that asks for no GPU fires nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from test_mig_demand import OPT_IN, start_configs, wait_unschedulable
from test_rollout import evictions, wait_running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

RULEBOOK = ROOT / "extensions" / "eda" / "rulebooks" / "mig_demand.yml"
WINDOW = 3
EVENT_MARK = "'type': 'gpu_pending_pods'"
RUN_MARK = "PLAY [Find the nodes opted in to demand partitioning]"


class Rulebook:
    """ansible-rulebook running the collection's rulebook, its output collected in a file."""

    def __init__(self, directory: Path, inventory: Path, variables: dict) -> None:
        self.log = directory / "ansible-rulebook.log"
        vars_file = directory / "rulebook-vars.yml"
        vars_file.write_text(yaml.safe_dump(variables))
        binary = Path(sys.executable).parent / "ansible-rulebook"
        if not binary.exists() or shutil.which("java") is None:
            pytest.fail("ansible-rulebook and a Java runtime are needed (make venv installs them; see requirements-eda.txt)")
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1",
                   ANSIBLE_DEPRECATION_WARNINGS="0", PATH=os.pathsep.join([str(binary.parent), os.environ.get("PATH", "")]))
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with
            [str(binary), "--rulebook", str(RULEBOOK), "--inventory", str(inventory), "--vars", str(vars_file)],
            cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, count: int = 1, timeout: float = 600.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            output = self.output()
            if output.count(text) >= count:
                return output
            if self.process.poll() is not None:
                raise AssertionError("ansible-rulebook exited (%s):\n%s" % (self.process.returncode, output[-6000:]))
            if time.monotonic() > deadline:
                raise AssertionError("no %r in ansible-rulebook's output within %ss:\n%s" % (text, timeout, output[-6000:]))
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


def pod_watches(cluster) -> list[dict]:
    return [r for r in cluster.requests() if r["verb"] == "watch" and r.get("resource") == "pods"]


def wait_watching(cluster, rulebook: Rulebook, timeout: float = 180.0) -> None:
    """The source has listed the pods and watches them (the JVM and the rule engine start first)."""
    deadline = time.monotonic() + timeout
    while not pod_watches(cluster):
        if rulebook.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("the event source never watched pods:\n%s" % rulebook.output()[-6000:])
        time.sleep(0.5)


@pytest.mark.acceptance
def test_pending_gpu_pods_fire_one_event_and_one_run_and_then_run(sim_cluster):
    cluster = sim_cluster(["a100:2:A100-40GB:1"])
    config = cluster.write_vars("configs.yml", start_configs())
    common = {"k8s_gpu_mig_strategy": "mixed", "mig_reconfigure_wait_timeout": 120}
    cluster.playbook("nvidia-gpu-operator.yml", "-e", json.dumps(common), "-e", "@%s" % config,
                     "-e", "mig_config_name=start", "-e", "mig_rollout_batch=100%")
    for node in cluster.nodes:
        cluster.store.patch("nodes", None, node, {"metadata": {"labels": OPT_IN}}, patch_type="merge")

    # The site's inventory holds the playbook's settings, as group_vars would.
    inventory = yaml.safe_load((cluster.directory / "inventory.yml").read_text())
    inventory["all"]["vars"].update(common)
    site_inventory = cluster.write_vars("site-inventory.yml", inventory)

    # A pod that cannot be scheduled but asks for no GPU.
    cluster.store.create("pods", "default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cpu-only", "namespace": "default"},
        "spec": {"nodeSelector": {"example.com/pool": "none"},
                 "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}]}})
    assert wait_unschedulable_pod(cluster, "cpu-only")

    cluster.clear_requests()
    rulebook = Rulebook(cluster.directory, site_inventory,
                        {"k8s_kubeconfig": str(cluster.directory / "kubeconfig"), "mig_demand_window": WINDOW})
    try:
        wait_watching(cluster, rulebook)
        # Nothing GPU-related is pending: no event and no run, for several windows.
        quiet_until = time.monotonic() + 3 * WINDOW
        while time.monotonic() < quiet_until:
            assert EVENT_MARK not in rulebook.output() and RUN_MARK not in rulebook.output()
            assert rulebook.process.poll() is None, rulebook.output()[-6000:]
            time.sleep(0.5)

        # Two pods ask for a profile the layout (7 x 1g.5gb per GPU) lacks.
        cluster.clear_requests()
        cluster.workload(name="train", resource="nvidia.com/mig-3g.20gb", count=2)
        assert len(wait_unschedulable(cluster, {"train"}, 2)) == 2
        output = rulebook.wait_for("PLAY RECAP")
        assert len(wait_running(cluster, "train", 2, timeout=300)) == 2
        assert not evictions(cluster.requests())
        # The pods' profile was made on free GPUs (the planner's choice of GPU is its own).
        assert sum(cluster.layout(node)[0].count("3g.20gb") for node in cluster.nodes) >= 2

        # One event for the batch, listing both pods and not the CPU pod; one run.
        output = rulebook.output()
        assert output.count(EVENT_MARK) == output.count("[event]") == 1, output[-6000:]
        assert output.count(RUN_MARK) == 1, output[-6000:]
        event_text = output[output.index("[event]"):output.index(EVENT_MARK)]
        assert event_text.count("'name': 'train-") == 2 and "cpu-only" not in output
        assert "failed=0" in output.split("PLAY RECAP", 1)[1]
    finally:
        rulebook.stop()
    assert rulebook.process.returncode is not None


def wait_unschedulable_pod(cluster, name: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = cluster.store.get("pods", "default", name)
        if any(c.get("reason") == "Unschedulable" for c in (pod.get("status") or {}).get("conditions") or []):
            return True
        time.sleep(0.5)
    return False
