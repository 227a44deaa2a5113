# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the nvidia_device_plugin role renders, checked without a cluster.

One ansible-playbook run renders every case (the role's settings.yml and render.yml); the objects
are then read the way the simulated kubelet reads them (gpuops_sim.k8s.agents_nvidia, an
independent model of NVIDIA's daemons), so a wrong object shows up as wrong resources.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from roles_helpers import GPU_INVENTORY, REPO, by_kind_name, dump_task, read_json, run_playbook

from gpuops_sim.k8s import agents_nvidia as daemons
from gpuops_sim.k8s.cluster import layout_node
from gpuops_sim.nvml import state as nvml_state

ROLE = "gpuops.nvidia.nvidia_device_plugin"
CASES: dict[str, dict[str, Any]] = {
    # The inventory's GPU hosts carry their own settings (roles_helpers.GPU_INVENTORY).
    "inventory_mixed": {"k8s_gpu_mig_strategy": "mixed"},
    "label_single_ts4": {"k8s_gpu_mig_strategy": "single", "device_plugin_time_slicing_replicas": 4,
                         "nvidia_device_plugin_node_source": "label"},
    "label_none_without_gfd": {"nvidia_device_plugin_node_source": "label", "nvidia_device_plugin_gfd_enabled": False},
    "explicit_map": {"nvidia_device_plugin_node_configs": {"gpu-node-7": {"mig_strategy": "mixed"}},
                     "nvidia_device_plugin_node_source": "label"},
    "node_feature_api": {"nvidia_device_plugin_node_source": "label", "nvidia_device_plugin_gfd_use_node_feature_api": True,
                         "nvidia_device_plugin_image_pull_secrets": ["mirror"], "nvidia_device_plugin_version": "v0.18.2",
                         "nvidia_device_plugin_extra_tolerations": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]},
}
# Node labels for the label-change case: a node switched off by a person, a node paused by a rollout.
FAKE_NODES = [
    {"metadata": {"name": "gpu-node-1", "labels": {"nvidia.com/gpu.deploy.device-plugin": "false"}}},
    {"metadata": {"name": "gpu-node-2", "labels": {
        "nvidia.com/gpu.deploy.device-plugin": "paused-for-mig-change",
        "nvidia.com/gpu.deploy.gpu-feature-discovery": "paused-for-mig-change",
        "nvidia.com/device-plugin.config": "single-ts4"}}},
    {"metadata": {"name": "gpu-node-9", "labels": {}}},
]


def render_play(name: str, variables: dict[str, Any], out: Path) -> dict[str, Any]:
    return {"name": name, "hosts": "localhost", "gather_facts": False, "vars": variables, "tasks": [
        {"name": "Settings", "ansible.builtin.include_role": {"name": ROLE, "tasks_from": "settings.yml"}},
        {"name": "Render", "ansible.builtin.include_role": {"name": ROLE, "tasks_from": "render.yml"}},
        dump_task(out, "{'settings': nvidia_device_plugin_settings, 'objects': nvidia_device_plugin_objects}"),
    ]}


def label_play(out: Path) -> dict[str, Any]:
    return {"name": "label changes", "hosts": "localhost", "gather_facts": False,
            "vars": {"k8s_gpu_mig_strategy": "mixed", "nvidia_device_plugin_nodes": {"resources": FAKE_NODES}}, "tasks": [
                {"name": "Settings", "ansible.builtin.include_role": {"name": ROLE, "tasks_from": "settings.yml", "public": True}},
                {"name": "Label changes", "ansible.builtin.set_fact": {"changes": "{{ lookup('ansible.builtin.template', '"
                 + str(REPO / "roles/nvidia_device_plugin/templates/label-changes.yml.j2") + "') | from_json }}"}},
                dump_task(out, "changes"),
            ]}


def failing_play(name: str, variables: dict[str, Any], out: Path) -> dict[str, Any]:
    """The whole role against an API that does not exist: it must stop at the settings check."""
    return {"name": name, "hosts": "localhost", "gather_facts": False,
            "vars": variables | {"k8s_kubeconfig": str(out.with_suffix(".kubeconfig"))}, "tasks": [
                {"name": "Role", "block": [{"name": "Apply", "ansible.builtin.include_role": {"name": ROLE}}],
                 "rescue": [dump_task(out, "{'task': ansible_failed_task.name, 'result': ansible_failed_result}")]},
            ]}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("device-plugin-render")
    plays = [render_play(name, variables, tmp / f"{name}.json") for name, variables in CASES.items()]
    plays.append(label_play(tmp / "labels.json"))
    failures = {
        "replicas_zero": {"device_plugin_time_slicing_replicas": 0},
        "node_replicas_text": {"nvidia_device_plugin_node_configs": {"gpu-node-5": {"time_slicing_replicas": "four"}}},
        "bad_strategy": {"k8s_gpu_mig_strategy": "all"},
    }
    plays += [failing_play(name, variables, tmp / f"{name}.json") for name, variables in failures.items()]
    run = run_playbook(tmp, plays, inventory=GPU_INVENTORY)
    assert run.returncode == 0, run.output
    return {path.stem: read_json(path) for path in tmp.glob("*.json")}


def daemonset(case: dict[str, Any], name: str) -> dict[str, Any]:
    return by_kind_name(case["objects"])[f"DaemonSet/{name}"]


def loaded_config(case: dict[str, Any], daemon: str, node_labels: dict[str, str]) -> daemons.PluginConfig:
    """The config the simulated daemon would load on a node with these labels."""
    objects = by_kind_name(case["objects"])
    name = {"device-plugin": "nvidia-device-plugin-daemonset", "gpu-feature-discovery": "gpu-feature-discovery"}[daemon]
    pod_spec = objects[f"DaemonSet/{name}"]["spec"]["template"]["spec"]
    container = daemons.pod_roles(pod_spec)[daemon]
    config_maps = {obj["metadata"]["name"]: obj["data"] for obj in case["objects"] if obj["kind"] == "ConfigMap"}
    return daemons.resolve_config(pod_spec, container, config_maps, node_labels)


def test_per_node_configs_come_from_the_inventory(rendered: dict[str, Any]) -> None:
    settings = rendered["inventory_mixed"]["settings"]
    assert settings["errors"] == []
    assert settings["default"] == "mixed"
    assert settings["nodes"] == {"gpu-node-1": "mixed", "gpu-node-2": "single-ts4", "gpu-node-3": "mixed-ts2-renamed"}
    assert set(settings["configs"]) == {"mixed", "single-ts4", "mixed-ts2-renamed"}


@pytest.mark.parametrize(("labels", "strategy", "sharing"), [
    ({"nvidia.com/device-plugin.config": "single-ts4"}, "single", (("nvidia.com/gpu", 4, ""),)),
    ({"nvidia.com/device-plugin.config": "mixed-ts2-renamed"}, "mixed", (("nvidia.com/gpu", 2, "nvidia.com/gpu.shared"),)),
    ({}, "mixed", ()),  # no label: DEFAULT_CONFIG
])
@pytest.mark.parametrize("daemon", ["device-plugin", "gpu-feature-discovery"])
def test_each_daemon_loads_the_config_its_node_label_names(
        rendered: dict[str, Any], daemon: str, labels: dict[str, str], strategy: str, sharing: tuple) -> None:
    config = loaded_config(rendered["inventory_mixed"], daemon, labels)
    assert config.mig_strategy == strategy
    assert tuple((s.name, s.replicas, s.rename) for s in config.time_slicing) == sharing


def test_the_daemonsets_follow_the_gpu_operator_conventions(rendered: dict[str, Any]) -> None:
    case = rendered["inventory_mixed"]
    for name, daemon in (("nvidia-device-plugin-daemonset", "device-plugin"), ("gpu-feature-discovery", "gpu-feature-discovery")):
        spec = daemonset(case, name)["spec"]["template"]["spec"]
        assert spec["nodeSelector"] == {f"nvidia.com/gpu.deploy.{daemon}": "true"}
        assert spec["priorityClassName"] == "system-node-critical"
        # The rollout taints the node it reconfigures; the daemons must stay and come back there.
        assert {"key": "gpuops.io/mig-reconfigure", "operator": "Exists"} in spec["tolerations"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        roles = daemons.pod_roles(spec)
        assert list(roles) == [daemon]
        assert roles[daemon]["image"] == "nvcr.io/nvidia/k8s-device-plugin:v0.19.3"
        # config-manager runs from the same image and is not taken for a daemon.
        assert [c["command"] for c in spec["containers"] if c is not roles[daemon]] == [["config-manager"]]
        assert spec["initContainers"][0]["command"] == ["config-manager"]
        assert "MIG_STRATEGY" not in {e["name"] for e in roles[daemon]["env"]}  # it would override per-node configs


def test_mig_needs_sys_admin_and_plain_gpus_drop_every_capability(rendered: dict[str, Any]) -> None:
    mig = daemonset(rendered["inventory_mixed"], "nvidia-device-plugin-daemonset")["spec"]["template"]["spec"]
    plain = daemonset(rendered["label_none_without_gfd"], "nvidia-device-plugin-daemonset")["spec"]["template"]["spec"]
    assert daemons.pod_roles(mig)["device-plugin"]["securityContext"] == {"capabilities": {"add": ["SYS_ADMIN"]}}
    assert daemons.pod_roles(plain)["device-plugin"]["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert {"name": "NVIDIA_MIG_MONITOR_DEVICES", "value": "all"} in daemons.pod_roles(mig)["device-plugin"]["env"]
    assert "NVIDIA_MIG_MONITOR_DEVICES" not in {e["name"] for e in daemons.pod_roles(plain)["device-plugin"]["env"]}


def test_rbac_is_read_only_on_nodes(rendered: dict[str, Any]) -> None:
    objects = by_kind_name(rendered["inventory_mixed"]["objects"])
    node_read = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]
    assert objects["ClusterRole/gpuops-nvidia-device-plugin"]["rules"] == node_read
    assert objects["ClusterRole/gpuops-gpu-feature-discovery"]["rules"] == node_read
    binding = objects["ClusterRoleBinding/gpuops-gpu-feature-discovery"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gpu-feature-discovery", "namespace": "nvidia-device-plugin"}]
    assert daemonset(rendered["inventory_mixed"], "gpu-feature-discovery")["spec"]["template"]["spec"]["serviceAccountName"] \
        == "gpu-feature-discovery"
    nfa = by_kind_name(rendered["node_feature_api"]["objects"])["ClusterRole/gpuops-gpu-feature-discovery"]["rules"]
    assert {"apiGroups": ["nfd.k8s-sigs.io"], "resources": ["nodefeatures"],
            "verbs": ["get", "list", "watch", "create", "update"]} in nfa
    assert all("patch" not in rule["verbs"] and "delete" not in rule["verbs"] for rule in nfa)


def test_without_gfd_only_the_plugin_is_rendered(rendered: dict[str, Any]) -> None:
    kinds = set(by_kind_name(rendered["label_none_without_gfd"]["objects"]))
    assert "DaemonSet/nvidia-device-plugin-daemonset" in kinds
    assert not {k for k in kinds if "gpu-feature-discovery" in k}


def test_knobs_reach_the_pod_template(rendered: dict[str, Any]) -> None:
    spec = daemonset(rendered["node_feature_api"], "gpu-feature-discovery")["spec"]["template"]["spec"]
    assert spec["imagePullSecrets"] == [{"name": "mirror"}]
    assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in spec["tolerations"]
    gfd = daemons.pod_roles(spec)["gpu-feature-discovery"]
    assert gfd["image"] == "nvcr.io/nvidia/k8s-device-plugin:v0.18.2"
    assert {"name": "USE_NODE_FEATURE_API", "value": "true"} in gfd["env"]


def test_label_source_uses_one_default_config_and_labels_no_node_config(rendered: dict[str, Any]) -> None:
    settings = rendered["label_single_ts4"]["settings"]
    assert settings["gpu_nodes_from"] == "label"
    assert settings["nodes"] == {}
    assert list(settings["configs"]) == ["single-ts4"]
    explicit = rendered["explicit_map"]["settings"]
    assert explicit["nodes"] == {"gpu-node-7": "mixed"}
    assert explicit["default"] == "none"


def test_a_changed_config_leaves_the_pod_template_alone(rendered: dict[str, Any]) -> None:
    """A new config reaches a node when the rolling reconfigure restarts that node's daemons, not
    through a DaemonSet rolling update of every node at once."""
    def template(case: str) -> Any:
        return daemonset(rendered[case], "nvidia-device-plugin-daemonset")["spec"]["template"]
    assert rendered["inventory_mixed"]["objects"] != rendered["label_single_ts4"]["objects"]
    assert template("inventory_mixed") == template("label_single_ts4")


@pytest.mark.parametrize(("layout", "labels", "expected"), [
    # A100-40GB x 8, all 1g.5gb: single → 56 nvidia.com/gpu; mixed → 56 nvidia.com/mig-1g.5gb.
    (["1g.5gb"] * 7, {"nvidia.com/device-plugin.config": "single-ts4"}, {"nvidia.com/gpu": 56 * 4}),
    (["1g.5gb"] * 7, {}, {"nvidia.com/mig-1g.5gb": 56}),
    # Whole GPUs time-sliced 2x and renamed.
    ([], {"nvidia.com/device-plugin.config": "mixed-ts2-renamed"}, {"nvidia.com/gpu.shared": 16}),
])
def test_a_node_advertises_what_its_config_implies(
        rendered: dict[str, Any], tmp_path: Path, layout: list[str], labels: dict[str, str], expected: dict[str, int]) -> None:
    path = tmp_path / "node.json"
    nvml_state.init_node(path, "A100-SXM4-40GB", 8, mig_enabled=bool(layout))
    if layout:
        layout_node(str(path), layout)
    config = loaded_config(rendered["inventory_mixed"], "device-plugin", labels)
    advertised = daemons.plugin_inventory(nvml_state.show(path), config)
    assert {name: len(ids) for name, ids in advertised.items()} == expected


def test_labels_never_override_a_pause_or_a_switch_off(rendered: dict[str, Any]) -> None:
    changes = rendered["labels"]
    assert changes["missing"] == ["gpu-node-3"]
    assert changes["labels"] == {"gpu-node-1": {"nvidia.com/gpu.deploy.gpu-feature-discovery": "true",
                                                "nvidia.com/device-plugin.config": "mixed"}}


@pytest.mark.parametrize(("case", "message"), [
    ("replicas_zero", "time_slicing_replicas must be null (off) or an integer >= 1, got 0"),
    ("node_replicas_text", "node gpu-node-5: time_slicing_replicas must be null or an integer >= 1, got four"),
    ("bad_strategy", "k8s_gpu_mig_strategy must be one of: none, single, mixed"),
])
def test_bad_settings_fail_before_any_change(rendered: dict[str, Any], case: str, message: str) -> None:
    failure = rendered[case]
    text = str(failure["result"].get("msg", "")) + str(failure["result"].get("argument_errors", ""))
    assert message in text
    if case == "replicas_zero":  # reported once, not again for every node that inherits it
        assert text.count("got 0") == 1
    # It stopped at validation, before any task that talks to the API.
    assert failure["task"] in ("Check the plugin settings",) or failure["task"].startswith("Validating arguments")
