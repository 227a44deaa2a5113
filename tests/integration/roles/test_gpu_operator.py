# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gpu_operator role: the chart values it renders, checked against the keys the pinned chart
documents, and its Helm calls, run against the recorded helm stand-in (standin/helm) since no helm
binary or chart repository is reachable here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from roles_helpers import STANDIN_DIR, dump_task, read_json, run_playbook

ROLE = "gpuops.nvidia.gpu_operator"
KNOWN = yaml.safe_load((Path(__file__).parent / "fixtures" / "gpu-operator-v26.3.3-values-keys.yml").read_text(encoding="utf-8"))
VALUE_CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "single_ts4": {"k8s_gpu_mig_strategy": "single", "device_plugin_time_slicing_replicas": 4},
    "mixed_renamed_own_exporter": {
        "k8s_gpu_mig_strategy": "mixed", "device_plugin_time_slicing_replicas": "2", "device_plugin_time_slicing_rename_by_default": True,
        "dcgm_exporter_enabled": True, "gpu_operator_extra_tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu"}],
        "gpu_operator_values": {"driver": {"enabled": True, "version": "580.126.20"}, "operator": {"resources": {"limits": {"cpu": "1"}}}}},
}


def leaf_paths(values: Any, prefix: str = "") -> list[str]:
    if isinstance(values, dict) and values:
        return [path for key, value in values.items() for path in leaf_paths(value, f"{prefix}.{key}" if prefix else key)]
    return [prefix]


def documented(path: str) -> bool:
    """A key the chart documents, or content below one whose default is a free-form map or list."""
    keys = KNOWN["keys"]
    if path in keys:
        return True
    parts = path.split(".")
    return any(keys.get(".".join(parts[:i])) in ("map", "list") for i in range(1, len(parts)))


@pytest.fixture(scope="module")
def values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("gpu-operator-values")
    plays = [{"name": name, "hosts": "localhost", "gather_facts": False, "vars": variables, "tasks": [
        {"name": "Validate", "ansible.builtin.include_role": {"name": ROLE, "tasks_from": "validate.yml"}},
        {"name": "Values", "ansible.builtin.include_role": {"name": ROLE, "tasks_from": "values.yml"}},
        dump_task(tmp / f"{name}.json", "gpu_operator_release_values")]} for name, variables in VALUE_CASES.items()]
    run = run_playbook(tmp, plays)
    assert run.returncode == 0, run.output
    return {path.stem: read_json(path) for path in tmp.glob("*.json")}


@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_values_use_only_documented_chart_keys(values: dict[str, Any], case: str) -> None:
    assert KNOWN["version"] == "v26.3.3"
    unknown = [path for path in leaf_paths(values[case]) if not documented(path)]
    assert unknown == []


def test_defaults_leave_mig_to_the_collection(values: dict[str, Any]) -> None:
    rendered = values["defaults"]
    assert rendered["mig"] == {"strategy": "none"}
    assert rendered["migManager"] == {"enabled": False}
    assert rendered["driver"] == {"enabled": False}
    assert rendered["toolkit"] == {"enabled": True}
    assert rendered["dcgmExporter"] == {"enabled": True}
    assert "devicePlugin" not in rendered  # no time-slicing, no plugin config
    assert {"key": "gpuops.io/mig-reconfigure", "operator": "Exists"} in rendered["daemonsets"]["tolerations"]
    # Setting daemonsets.tolerations replaces the chart's list: its own entry must stay.
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in rendered["daemonsets"]["tolerations"]


def test_time_slicing_becomes_the_device_plugin_config(values: dict[str, Any]) -> None:
    config = values["single_ts4"]["devicePlugin"]["config"]
    assert values["single_ts4"]["mig"] == {"strategy": "single"}
    assert (config["create"], config["name"], config["default"]) == (True, "gpuops-device-plugin-config", "single-ts4")
    assert yaml.safe_load(config["data"]["single-ts4"]) == {
        "version": "v1", "flags": {"migStrategy": "single"},
        "sharing": {"timeSlicing": {"renameByDefault": False, "resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}}}


def test_own_exporter_extra_values_and_tolerations(values: dict[str, Any]) -> None:
    rendered = values["mixed_renamed_own_exporter"]
    assert rendered["dcgmExporter"] == {"enabled": False}  # the dcgm_exporter role runs one instead
    assert rendered["driver"] == {"enabled": True, "version": "580.126.20"}  # gpu_operator_values wins
    assert rendered["operator"] == {"resources": {"limits": {"cpu": "1"}}}
    assert {"key": "sku", "operator": "Equal", "value": "gpu"} in rendered["daemonsets"]["tolerations"]
    data = rendered["devicePlugin"]["config"]["data"]
    assert yaml.safe_load(data["mixed-ts2-renamed"])["sharing"]["timeSlicing"]["renameByDefault"] is True


# --- the Helm task against the stand-in --------------------------------------------------------

def helm_env(tmp: Path) -> dict[str, str]:
    import os
    return {"GPUOPS_HELM_STANDIN_DIR": str(tmp / "helm"), "PATH": os.pathsep.join([str(STANDIN_DIR), os.environ.get("PATH", "")])}


def operator_play(name: str, variables: dict[str, Any], out: Path) -> dict[str, Any]:
    return {"name": name, "hosts": "localhost", "gather_facts": False, "vars": variables, "tasks": [
        {"name": "Role", "block": [{"name": "Apply", "ansible.builtin.include_role": {"name": ROLE}},
                                   dump_task(out, "{'changed': gpu_operator_helm_result.changed, 'command': gpu_operator_helm_result.command}")],
         "rescue": [dump_task(out, "{'failed_task': ansible_failed_task.name, 'msg': ansible_failed_result.msg}")]}]}


def calls(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "helm" / "calls.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def deploy_calls(tmp: Path) -> list[dict[str, Any]]:
    return [c for c in calls(tmp) if "upgrade" in c["argv"] or "uninstall" in c["argv"]]


def test_helm_install_is_idempotent_checkable_and_upgrades_on_change(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "current-context": "sim",
                                          "clusters": [{"name": "sim", "cluster": {"server": "http://127.0.0.1:1"}}],
                                          "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "u"}}],
                                          "users": [{"name": "u", "user": {}}]}), encoding="utf-8")
    base = {"k8s_kubeconfig": str(kubeconfig), "k8s_gpu_mig_strategy": "single", "device_plugin_time_slicing_replicas": 4}
    env = helm_env(tmp_path)
    plays = [operator_play("install", base, tmp_path / "install.json"),
             operator_play("again", base, tmp_path / "again.json"),
             operator_play("mixed", base | {"k8s_gpu_mig_strategy": "mixed"}, tmp_path / "mixed.json")]
    run = run_playbook(tmp_path, plays, extra_env=env)
    assert run.returncode == 0, run.output
    assert read_json(tmp_path / "install.json")["changed"] is True
    assert read_json(tmp_path / "again.json")["changed"] is False
    assert read_json(tmp_path / "mixed.json")["changed"] is True

    install, upgrade = deploy_calls(tmp_path)
    argv = install["argv"]
    assert argv[:2] == ["--version=v26.3.3", "--repo=https://helm.ngc.nvidia.com/nvidia"]
    assert argv[2:4] == ["upgrade", "-i"]
    assert {"--create-namespace", "--wait", "--reset-values"} <= set(argv)
    assert argv[-2:] == ["gpu-operator", "gpu-operator"]
    assert install["namespace"] == "gpu-operator"
    assert install["kubeconfig_content"]["clusters"][0]["cluster"]["server"] == "http://127.0.0.1:1"
    (sent,) = install["values_files"].values()
    assert sent["mig"] == {"strategy": "single"} and sent["migManager"] == {"enabled": False}
    assert sent["devicePlugin"]["config"]["default"] == "single-ts4"
    (sent,) = upgrade["values_files"].values()
    assert sent["mig"] == {"strategy": "mixed"}

    releases = read_json(tmp_path / "helm" / "releases.json")
    assert releases["gpu-operator"]["revision"] == "2"
    assert releases["gpu-operator"]["chart"] == "gpu-operator-v26.3.3"

    # Check mode after the change predicts nothing and writes nothing.
    before = len(deploy_calls(tmp_path))
    check = run_playbook(tmp_path, [operator_play("check", base | {"k8s_gpu_mig_strategy": "mixed"}, tmp_path / "check.json")],
                         extra_env=env, check=True, name="check")
    assert check.returncode == 0, check.output
    assert read_json(tmp_path / "check.json")["changed"] is False
    # A change in check mode is predicted, and still nothing is written.
    predict = run_playbook(tmp_path, [operator_play("predict", base, tmp_path / "predict.json")], extra_env=env, check=True, name="predict")
    assert predict.returncode == 0, predict.output
    assert read_json(tmp_path / "predict.json")["changed"] is True
    assert len(deploy_calls(tmp_path)) == before


def test_bad_replicas_fail_without_helm_and_absent_uninstalls(tmp_path: Path) -> None:
    env = helm_env(tmp_path)
    plays = [operator_play("zero", {"device_plugin_time_slicing_replicas": 0}, tmp_path / "zero.json"),
             operator_play("unknown_version", {"gpu_operator_chart_version": "v1.0.0"}, tmp_path / "unknown_version.json"),
             operator_play("install", {}, tmp_path / "install.json"),
             operator_play("absent", {"gpu_operator_state": "absent"}, tmp_path / "absent.json"),
             operator_play("absent_again", {"gpu_operator_state": "absent"}, tmp_path / "absent_again.json")]
    run = run_playbook(tmp_path, plays, extra_env=env)
    assert run.returncode == 0, run.output
    zero = read_json(tmp_path / "zero.json")
    assert zero["failed_task"] == "Check the time-slicing replicas"
    assert "must be null (off) or an integer >= 1, got 0" in zero["msg"]
    assert 'chart "gpu-operator" version "v1.0.0" not found' in read_json(tmp_path / "unknown_version.json")["msg"]
    assert read_json(tmp_path / "absent.json")["changed"] is True
    assert read_json(tmp_path / "absent_again.json")["changed"] is False
    assert [c["argv"][0:3] for c in deploy_calls(tmp_path)] == [
        ["--version=v26.3.3", "--repo=https://helm.ngc.nvidia.com/nvidia", "upgrade"], ["uninstall", "--wait", "gpu-operator"]]
    assert read_json(tmp_path / "helm" / "releases.json") == {}
