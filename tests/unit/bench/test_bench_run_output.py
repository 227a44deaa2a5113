# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The benchmark harness reads an ansible-playbook run's output: recap and the failures a size reports."""

from __future__ import annotations

from bench.sim import AnsibleRun

OUTPUT = """
PLAY [Reconfigure MIG, one batch at a time] ************************************

TASK [gpuops.nvidia.mig_reconfigure : Wait for the node to advertise its new layout] ***
ok: [node-0001]
fatal: [node-0042]: FAILED! => {"changed": false, "msg": "node-0042: nvidia.com/mig-2g.10gb is 0, want 24 (timed out after 180 s)"}

TASK [gpuops.nvidia.mig_config : Apply] ****************************************
failed: [node-0043] (item=0) => {"ansible_loop_var": "item", "msg": "NVML_ERROR_IN_USE"}
fatal: [node-0044]: UNREACHABLE! => {"changed": false, "msg": "Failed to connect", "unreachable": true}
fatal: [node-0045]: FAILED! => not json at all

PLAY RECAP *********************************************************************
node-0001                  : ok=12   changed=3    unreachable=0    failed=0    skipped=4    rescued=0    ignored=0
node-0042                  : ok=10   changed=2    unreachable=0    failed=1    skipped=4    rescued=0    ignored=0
"""


def test_failures_name_task_host_and_message() -> None:
    run = AnsibleRun(rc=2, output=OUTPUT, wall_s=1.0, cpu_s=1.0)
    assert run.failures() == [
        {"task": "gpuops.nvidia.mig_reconfigure : Wait for the node to advertise its new layout", "host": "node-0042",
         "message": "node-0042: nvidia.com/mig-2g.10gb is 0, want 24 (timed out after 180 s)"},
        {"task": "gpuops.nvidia.mig_config : Apply", "host": "node-0043", "message": "NVML_ERROR_IN_USE"},
        {"task": "gpuops.nvidia.mig_config : Apply", "host": "node-0044", "message": "Failed to connect"},
        {"task": "gpuops.nvidia.mig_config : Apply", "host": "node-0045", "message": "not json at all"},
    ]
    assert len(run.failures(count=2)) == 2
    assert run.failed == 1 and run.recap()["node-0001"]["changed"] == 3


def test_a_failed_run_without_a_failed_task_reports_the_end_of_its_output() -> None:
    run = AnsibleRun(rc=-9, output="PLAY [x] ***\n\n[bench] stopped after the 600 s budget\n", wall_s=600.0, cpu_s=1.0)
    assert run.failures() == [{"task": "", "host": "", "message": "PLAY [x] ***\n\n[bench] stopped after the 600 s budget"}]


def test_a_successful_run_has_no_failures() -> None:
    assert not AnsibleRun(rc=0, output=OUTPUT.split("fatal", maxsplit=1)[0], wall_s=1.0, cpu_s=1.0).failures()


def test_task_rounds_count_every_task_that_reached_a_host() -> None:
    rounds = {"node-1": ["prepare: check", "prepare: look", "validate: read"], "node-2": ["validate: read"]}
    run = AnsibleRun(rc=0, output="", wall_s=1.0, cpu_s=1.0, counts={"rounds": rounds})
    counted = run.task_rounds(["node-1", "node-2", "node-3"])
    assert counted["per_node"] == round(4 / 3, 2)
    assert (counted["min"], counted["max"]) == (0, 3)
    assert counted["fewest_node_tasks"] == []


def test_the_report_shows_each_strategy_side_by_side() -> None:
    from bench.report import render  # pylint: disable=import-outside-toplevel

    document = {"generated": "now", "environment": {"cpus": 2, "python": "3.11"}, "total_wall_s": 1, "figures": [
        {"figure": "noop_overhead", "nodes": 20, "ratio": 1.4, "target": "<= 1.5 (any strategy)", "by_strategy": {
            "linear": {"ratio": 2.5, "task_rounds": {"per_node": 9.0, "fewest_node_tasks": ["a: b"] * 9}},
            "mitogen_linear": {"ratio": 1.4, "task_rounds": {"per_node": 9.0}}}},
        {"figure": "rollout_scaling", "growth_exponent_wall": {"linear": None, "mitogen_linear": None}, "sizes": [
            {"nodes": 10, "strategy": "linear", "finished": True, "wall_s": 60.0, "controller_cpu_per_node_s": 2.5},
            {"nodes": 10, "strategy": "mitogen_linear", "finished": True, "wall_s": 40.0, "controller_cpu_per_node_s": 1.0}]},
    ]}
    text = render(document)
    assert "linear 2.5 (9.0 task rounds per node), mitogen_linear 1.4 (9.0 task rounds per node)" in text
    assert "linear: – (one size) (largest finished: 10 nodes, 60.0 s, 2.5 CPU s per node)" in text
    assert "mitogen_linear: – (one size) (largest finished: 10 nodes, 40.0 s, 1.0 CPU s per node)" in text
    assert "| by_strategy.linear.task_rounds.fewest_node_tasks | 9 tasks |" in text


def test_a_fleet_whose_mitogen_interpreters_do_not_fit_is_not_run_under_mitogen(monkeypatch) -> None:
    import bench.sim  # pylint: disable=import-outside-toplevel

    monkeypatch.setattr(bench.sim, "memory_available_bytes", lambda: 24 * 2**30)
    assert bench.sim.strategy_does_not_fit("linear", 1000) is None
    assert bench.sim.strategy_does_not_fit("mitogen_linear", 100) is None
    why = bench.sim.strategy_does_not_fit("mitogen_linear", 1000)
    assert why and "1000 simulated nodes under mitogen_linear need about 78 GiB" in why


def test_the_driver_rollout_figure_reports_wall_and_cpu_per_node_or_why_it_did_not_run(tmp_path) -> None:
    from bench import driver_rollout  # pylint: disable=import-outside-toplevel
    from bench.common import Options  # pylint: disable=import-outside-toplevel
    from bench.report import render  # pylint: disable=import-outside-toplevel

    # No room left in the budget: not started, and the figure says why.
    skipped = driver_rollout.run(Options(quick=False, workdir=tmp_path, out=tmp_path, deadline=0.0))
    assert skipped["not_run"] is True and skipped["nodes"] == driver_rollout.NODES and "budget" in skipped["reason"]
    document = {"generated": "now", "environment": {"cpus": 2, "python": "3.11"}, "total_wall_s": 1, "figures": [
        {"figure": "driver_rollout", "nodes": 100, "finished": True, "wall_s": 900.0, "controller_cpu_per_node_s": 4.2,
         "nodes_upgraded": 100}]}
    assert "900.0 s / 4.2 s (100 upgraded)" in render(document)
