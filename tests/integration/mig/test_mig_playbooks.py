# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A few true ansible-playbook runs: the action plugin (default configs, controller-side files),
check mode, idempotence and a clean failure, through real module processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gpuops_sim.nvml
from ansible_collections.gpuops.nvidia.plugins.filter.mig import mig_node_plan

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  environment: "{{ gpuops_environment | default({}) }}"
  vars:
    reset: ["%(python)s", "-m", "gpuops_sim", "nvml", "reset", "--state", "%(state)s", "--gpu", "{index}"]
  tasks:
    - name: Rehearse the shipped all-balanced config
      gpuops.nvidia.mig_config:
        config_name: all-balanced
        reset_command: "{{ reset }}"
      check_mode: true
      diff: true
      register: rehearsal

    - name: Rehearse it condensed, as a rollout keeps it
      gpuops.nvidia.mig_config:
        config_name: all-balanced
        node_plan:
          strategy: mixed
          node: node-1
      check_mode: true
      register: condensed

    - name: A node_plan option that does not exist fails, naming it
      gpuops.nvidia.mig_config:
        config_name: all-balanced
        node_plan:
          strategy: mixed
          labels: some
      check_mode: true
      register: bad_node_plan
      ignore_errors: true

    - name: Apply it
      gpuops.nvidia.mig_config:
        config_name: all-balanced
        reset_command: "{{ reset }}"
      register: applied

    - name: Apply it again
      gpuops.nvidia.mig_config:
        config_name: all-balanced
        reset_command: "{{ reset }}"
      register: again

    - name: A controller-side file, relative to the playbook's files/
      gpuops.nvidia.mig_config:
        config_file: custom.yaml
        config_name: halves
        reset_command: "{{ reset }}"
      register: from_file

    - name: An unknown named config fails
      gpuops.nvidia.mig_config:
        config_name: no-such-config
      register: unknown
      ignore_errors: true

    - name: Read the GPUs
      gpuops.nvidia.gpu_info:
      register: info

    - name: Check the outcomes
      ansible.builtin.assert:
        that:
          - rehearsal is changed
          - rehearsal.config_source is search('files/mig-configs/default.yaml$')
          - applied is changed
          - applied.changed_gpus | length == 2
          - again is not changed
          - from_file is changed
          - unknown is failed
          - bad_node_plan is failed
          - "'labels' in bad_node_plan.msg and 'some' in bad_node_plan.msg"
          - "'no-such-config' in unknown.msg"
          # A name the shipped document lacks gets the whole document, whose names the refusal lists.
          - "'all-1g.5gb' in unknown.msg"
          - info.gpus | length == 2

    - name: Hand the results to the test
      ansible.builtin.copy:
        content: "{{ {'rehearsal': rehearsal, 'condensed': condensed, 'applied': applied, 'again': again, 'info': info} | to_json }}"
        dest: "%(out)s"
"""

CUSTOM = """version: v1
mig-configs:
  halves:
    - devices: all
      mig-enabled: true
      mig-devices: {"3g.20gb": 2}
"""


def test_playbook_default_configs_check_idempotence_and_files(tmp_path):
    state = tmp_path / "node.json"
    gpuops_sim.nvml.init_node(state, "NVIDIA A100-SXM4-40GB", 2)
    out = tmp_path / "out.json"
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "custom.yaml").write_text(CUSTOM)
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK % {"python": sys.executable, "state": state, "out": out})
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), PATH="%s:%s" % (VENV_BIN, os.environ["PATH"]))
    env.pop("GPUOPS_NVML_SIMULATOR", None)
    extra = json.dumps({"ansible_python_interpreter": sys.executable, "gpuops_environment": {"GPUOPS_NVML_SIMULATOR": str(state)}})
    run = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(playbook), "-e", extra],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["rehearsal"]["diff"]["after"]
    # node_plan: the controller keeps the condensed plan only, made from the same reading and plan.
    condensed = results["condensed"]
    assert condensed["changed"] is True
    assert not {"observed", "plan", "mig_devices", "config"} & set(condensed)
    node_plan = condensed["node_plan"]
    assert node_plan == mig_node_plan(results["rehearsal"], strategy="mixed", node="node-1")
    assert node_plan["before"] == "2 GPU(s): MIG off"
    assert node_plan["gpu_count"] == 2 and node_plan["changed"] is True
    assert sorted(node_plan["changing_devices"]) == sorted(g["uuid"] for g in results["info"]["gpus"])
    assert node_plan["expected"]["errors"] == []
    assert node_plan["expected"]["labels"]["nvidia.com/mig.strategy"] == "mixed"
    shown = gpuops_sim.nvml.show(state)
    for gpu in shown["gpus"]:
        assert sorted(ci["profile"] for gi in gpu["gpu_instances"] for ci in gi["compute_instances"]) == ["3g.20gb", "3g.20gb"]
    uuids = {d["uuid"] for g in results["applied"]["mig_devices"] for d in g["devices"]}
    assert len(uuids) == 8
