"""``python -m gpuops_sim demo``: the main job of gpuops.nvidia, on a simulated cluster.

1. start a simulated cluster: four GPU nodes of two models (A100 40GB and H100 80GB);
2. install the stack with ``playbooks/nvidia-gpu-operator.yml`` (mixed strategy, all-balanced);
3. run a GPU workload on MIG devices, with a PodDisruptionBudget;
4. change the geometry to all-1g.10gb and run the same playbook again: the rolling reconfigure;
5. run it a third time: nothing left to change;
6. stop the cluster.

Each step prints what a person would look at (per node: MIG layout, advertised nvidia.com/*
resources, taints), and the demo exits non-zero as soon as a step fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = ROOT / "playbooks" / "nvidia-gpu-operator.yml"


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="install the GPU stack on a simulated cluster and roll out a MIG change")
    parser.add_argument("--dir", default=str(ROOT / ".tmp" / "demo"), help="cluster directory (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="leave the simulated cluster running at the end")
    parser.set_defaults(func=run)


def banner(text: str) -> None:
    print("\n" + "=" * 100 + "\n" + text + "\n" + "=" * 100, flush=True)


def sim(*args: str) -> str:
    command = [sys.executable, "-m", "gpuops_sim", *args]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s%s" % (" ".join(command), completed.returncode, completed.stdout, completed.stderr))
    return completed.stdout


def playbook(directory: str, *extra: str) -> str:
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"), "-i", os.path.join(directory, "inventory.yml"),
        str(PLAYBOOK), "-e", "k8s_gpu_mig_strategy=mixed", *extra,
    ]
    print("$ " + " ".join(command[1:]), flush=True)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    output = completed.stdout + completed.stderr
    # The play recap and the rollout summary are what a person reads; the whole log is kept.
    with open(os.path.join(directory, "ansible.log"), "a", encoding="utf-8") as log:
        log.write(output)
    summary = output[output.find("MIG ROLLOUT SUMMARY") - 10:] if "MIG ROLLOUT SUMMARY" in output else output[output.rfind("PLAY RECAP"):]
    print(summary.rstrip(), flush=True)
    if completed.returncode != 0:
        print(output[-6000:], file=sys.stderr)
        raise RuntimeError("ansible-playbook failed (%d); the full log is %s/ansible.log" % (completed.returncode, directory))
    return output


def changed_total(output: str) -> int:
    return sum(int(n) for n in re.findall(r"\bchanged=(\d+)", output[output.rfind("PLAY RECAP"):]))


def run(args) -> int:
    directory = os.path.abspath(args.dir)
    if os.path.exists(directory):
        sim("cluster", "down", "--dir", directory)
        shutil.rmtree(directory)
    os.makedirs(directory)
    try:
        banner("1. A simulated cluster: 2 x A100-SXM4-40GB nodes and 2 x H100 80GB nodes, 4 GPUs each")
        print(sim("cluster", "up", "--dir", directory, "--pool", "a100:2:NVIDIA A100-SXM4-40GB:4",
                  "--pool", "h100:2:NVIDIA H100 80GB HBM3:4", "--plugin-delay", "0.5", "--detach"))
        print(sim("cluster", "status", "--dir", directory))

        banner("2. Install the stack: k8s_gpu_mig_strategy=mixed, mig_config_name=all-balanced")
        playbook(directory, "-e", "mig_config_name=all-balanced", "-e", "mig_rollout_batch=2")
        print(sim("cluster", "status", "--dir", directory))

        # The workload asks for a profile both geometries offer, so its evicted pods find room on the
        # nodes already reconfigured; a profile the new geometry drops would strand them Pending and
        # its PodDisruptionBudget would then (rightly) stop the rollout.
        banner("3. A GPU workload on the 1g.10gb devices of the H100 nodes, behind a PodDisruptionBudget")
        print(sim("cluster", "workload", "--dir", directory, "--name", "inference", "--resource",
                  "nvidia.com/mig-1g.10gb", "--count", "6", "--pdb-max-unavailable", "2"))
        print(sim("cluster", "status", "--dir", directory))

        banner("4. Change the geometry to all-1g.10gb and run the same playbook: a rolling reconfigure, one node per batch")
        playbook(directory, "-e", "mig_config_name=all-1g.10gb", "-e", "mig_rollout_batch=1",
                 "-e", "mig_reconfigure_evacuate_timeout=180")
        print(sim("cluster", "status", "--dir", directory))

        banner("5. Run it again: every node already runs what it should")
        output = playbook(directory, "-e", "mig_config_name=all-1g.10gb", "-e", "mig_rollout_batch=1")
        changed = changed_total(output)
        print("changed tasks on the second run: %d" % changed)
        if changed:
            raise RuntimeError("the re-run changed %d task(s); it must change nothing" % changed)
    finally:
        if not args.keep:
            banner("6. Stop the simulated cluster")
            print(sim("cluster", "down", "--dir", directory))
    return 0
