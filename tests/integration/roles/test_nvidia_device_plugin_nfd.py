# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Node Feature Discovery options of nvidia_device_plugin, end to end on the API emulator:
`rule` needs NFD's CRD and then creates the NodeFeatureRule; `auto` (the default) applies NFD's own
manifests where the cluster has no NFD and leaves another NFD alone; `deploy` with
nvidia_device_plugin_nfd_install=helm installs the NFD chart through kubernetes.core.helm (the
recorded helm stand-in)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from roles_helpers import STANDIN_DIR, dump_task, read_json, run_playbook

from gpuops_sim.k8s import Emulator

ROLE = "gpuops.nvidia.nvidia_device_plugin"
NFD_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "nodefeaturerules.nfd.k8s-sigs.io"},
    "spec": {"group": "nfd.k8s-sigs.io", "scope": "Cluster",
             "names": {"kind": "NodeFeatureRule", "listKind": "NodeFeatureRuleList", "plural": "nodefeaturerules",
                       "singular": "nodefeaturerule"},
             "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    server = Emulator()
    server.start()
    try:
        path = tmp_path / "kubeconfig"
        server.write_kubeconfig(str(path))
        yield path
    finally:
        server.stop()


def role_play(name: str, variables: dict[str, Any], out: Path) -> dict[str, Any]:
    return {"name": name, "hosts": "localhost", "gather_facts": False,
            "vars": variables | {"nvidia_device_plugin_node_source": "label"}, "tasks": [
                {"name": "Role", "block": [{"name": "Apply", "ansible.builtin.include_role": {"name": ROLE}},
                                           dump_task(out, "{'ok': true}")],
                 "rescue": [dump_task(out, "{'failed_task': ansible_failed_task.name, 'msg': ansible_failed_result.msg}")]}]}


def k8s_task(definition: dict[str, Any], kubeconfig: Path) -> dict[str, Any]:
    return {"name": "Create", "kubernetes.core.k8s": {"kubeconfig": str(kubeconfig), "definition": definition}}


def read_task(kind: str, kubeconfig: Path, out: Path, api_version: str) -> list[dict[str, Any]]:
    read = {"kubeconfig": str(kubeconfig), "kind": kind, "api_version": api_version}
    return [{"name": "Read", "register": "found", "kubernetes.core.k8s_info": read}, dump_task(out, "found.resources")]


def test_rule_needs_the_crd_then_creates_the_rule(tmp_path: Path, kubeconfig: Path) -> None:
    base = {"k8s_kubeconfig": str(kubeconfig), "nvidia_device_plugin_nfd": "rule"}
    plays = [role_play("without_crd", base, tmp_path / "without_crd.json"),
             {"name": "crd", "hosts": "localhost", "gather_facts": False, "tasks": [k8s_task(NFD_CRD, kubeconfig)]},
             role_play("with_crd", base, tmp_path / "with_crd.json"),
             {"name": "read", "hosts": "localhost", "gather_facts": False,
              "tasks": read_task("NodeFeatureRule", kubeconfig, tmp_path / "rules.json", "nfd.k8s-sigs.io/v1alpha1")
              + read_task("DaemonSet", kubeconfig, tmp_path / "daemonsets.json", "apps/v1")}]
    run = run_playbook(tmp_path, plays)
    assert run.returncode == 0, run.output
    without = read_json(tmp_path / "without_crd.json")
    assert without["failed_task"] == "Check that Node Feature Discovery is installed"
    assert "nodefeaturerules.nfd.k8s-sigs.io" in without["msg"]
    assert read_json(tmp_path / "with_crd.json") == {"ok": True}
    (rule,) = read_json(tmp_path / "rules.json")
    match = rule["spec"]["rules"][0]
    assert match["labels"] == {"nvidia.com/gpu.present": "true"}
    assert match["matchFeatures"][0]["matchExpressions"]["vendor"] == {"op": "In", "value": ["10de"]}
    # The failed first run stopped before the DaemonSets; the second created them.
    assert sorted(ds["metadata"]["name"] for ds in read_json(tmp_path / "daemonsets.json")) == [
        "gpu-feature-discovery", "nvidia-device-plugin-daemonset"]


def test_deploy_installs_the_nfd_chart(tmp_path: Path, kubeconfig: Path) -> None:
    env = {"GPUOPS_HELM_STANDIN_DIR": str(tmp_path / "helm"), "PATH": os.pathsep.join([str(STANDIN_DIR), os.environ.get("PATH", "")])}
    plays = [role_play("deploy", {"k8s_kubeconfig": str(kubeconfig), "nvidia_device_plugin_nfd": "deploy",
                                  "nvidia_device_plugin_nfd_install": "helm"}, tmp_path / "deploy.json")]
    run = run_playbook(tmp_path, plays, extra_env=env)
    assert run.returncode == 0, run.output
    assert read_json(tmp_path / "deploy.json") == {"ok": True}
    release = read_json(tmp_path / "helm" / "releases.json")["node-feature-discovery"]
    assert (release["namespace"], release["chart"]) == ("node-feature-discovery", "node-feature-discovery-0.18.3")
    assert release["values"]["master"]["config"]["extraLabelNs"] == ["nvidia.com"]
    assert {"key": "gpuops.io/mig-reconfigure", "operator": "Exists"} in release["values"]["worker"]["tolerations"]
    calls = [json.loads(line) for line in (tmp_path / "helm" / "calls.jsonl").read_text(encoding="utf-8").splitlines()]
    upgrade = next(c for c in calls if "upgrade" in c["argv"])
    assert "--repo=https://kubernetes-sigs.github.io/node-feature-discovery/charts" in upgrade["argv"]
    assert upgrade["kubeconfig_content"]["clusters"][0]["cluster"]["server"].startswith("http://127.0.0.1:")


NODEFEATURE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "nodefeatures.nfd.k8s-sigs.io"},
    "spec": {"group": "nfd.k8s-sigs.io", "scope": "Namespaced",
             "names": {"kind": "NodeFeature", "listKind": "NodeFeatureList", "plural": "nodefeatures", "singular": "nodefeature"},
             "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}


def test_auto_with_helm_installs_the_chart_only_on_a_cluster_without_nfd(tmp_path: Path, kubeconfig: Path) -> None:
    env = {"GPUOPS_HELM_STANDIN_DIR": str(tmp_path / "helm"), "PATH": os.pathsep.join([str(STANDIN_DIR), os.environ.get("PATH", "")])}
    base = {"k8s_kubeconfig": str(kubeconfig), "nvidia_device_plugin_nfd": "auto", "nvidia_device_plugin_nfd_install": "helm"}
    plays = [role_play("without_nfd", base, tmp_path / "without_nfd.json")]
    run = run_playbook(tmp_path, plays, extra_env=env)
    assert run.returncode == 0, run.output
    assert read_json(tmp_path / "without_nfd.json") == {"ok": True}
    assert "node-feature-discovery" in read_json(tmp_path / "helm" / "releases.json")

    # A cluster that has NFD (its CRD): the chart is left alone, helm is not even asked.
    other = tmp_path / "other"
    other.mkdir()
    env["GPUOPS_HELM_STANDIN_DIR"] = str(other / "helm")
    plays = [{"name": "crd", "hosts": "localhost", "gather_facts": False, "tasks": [k8s_task(NODEFEATURE_CRD, kubeconfig)]},
             role_play("with_nfd", base, other / "with_nfd.json")]
    run = run_playbook(other, plays, extra_env=env)
    assert run.returncode == 0, run.output
    assert read_json(other / "with_nfd.json") == {"ok": True}
    assert not (other / "helm" / "calls.jsonl").exists()


def nfd_objects(kubeconfig: Path, out: Path) -> dict[str, Any]:
    """A play dumping what NFD objects the cluster holds."""
    reads = [("DaemonSet", "apps/v1"), ("Deployment", "apps/v1"), ("CustomResourceDefinition", "apiextensions.k8s.io/v1"),
             ("ClusterRole", "rbac.authorization.k8s.io/v1"), ("Role", "rbac.authorization.k8s.io/v1"), ("ConfigMap", "v1")]
    tasks = []
    for kind, api_version in reads:
        tasks.append({"name": "Read %s" % kind, "register": "read_%s" % kind.lower(),
                      "kubernetes.core.k8s_info": {"kubeconfig": str(kubeconfig), "kind": kind, "api_version": api_version}})
    found = "{" + ", ".join("'%s': read_%s.resources" % (kind, kind.lower()) for kind, _api_version in reads) + "}"
    return {"name": "read", "hosts": "localhost", "gather_facts": False, "tasks": tasks + [dump_task(out, found)]}


def names(objects: list[dict[str, Any]], namespace: str | None = None) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objects if namespace is None or o["metadata"].get("namespace") == namespace)


def test_auto_applies_nfds_manifests_once_without_helm_and_leaves_another_nfd_alone(tmp_path: Path, kubeconfig: Path) -> None:
    # The manifests go through the API: the run never asks for helm (the stand-in records every call).
    env = {"GPUOPS_HELM_STANDIN_DIR": str(tmp_path / "helm"), "PATH": os.pathsep.join([str(STANDIN_DIR), os.environ.get("PATH", "")])}
    base = {"k8s_kubeconfig": str(kubeconfig)}
    plays = [role_play("first", base, tmp_path / "first.json"), nfd_objects(kubeconfig, tmp_path / "objects.json")]
    run = run_playbook(tmp_path, plays, extra_env=env)
    assert not (tmp_path / "helm" / "calls.jsonl").exists()
    assert run.returncode == 0, run.output
    assert read_json(tmp_path / "first.json") == {"ok": True}
    found = read_json(tmp_path / "objects.json")
    assert names(found["DaemonSet"], "node-feature-discovery") == ["nfd-worker"]
    assert names(found["Deployment"], "node-feature-discovery") == ["nfd-gc", "nfd-master"]
    assert names(found["CustomResourceDefinition"]) == [
        "nodefeaturegroups.nfd.k8s-sigs.io", "nodefeaturerules.nfd.k8s-sigs.io", "nodefeatures.nfd.k8s-sigs.io"]
    (worker,) = [d for d in found["DaemonSet"] if d["metadata"]["name"] == "nfd-worker"]
    pod = worker["spec"]["template"]["spec"]
    assert {"key": "gpuops.io/mig-reconfigure", "operator": "Exists"} in pod["tolerations"]
    assert {"name": "features-d", "hostPath": {"path": "/etc/kubernetes/node-feature-discovery/features.d/"}} in pod["volumes"]
    (conf,) = [c for c in found["ConfigMap"] if c["metadata"]["name"] == "nfd-worker-conf"]
    assert "deviceLabelFields:\n    - vendor" in conf["data"]["nfd-worker.conf"]
    # Least privilege as upstream ships it: the worker writes NodeFeatures in its own namespace only.
    (role,) = [r for r in found["Role"] if r["metadata"]["name"] == "nfd-worker"]
    assert role["rules"][0] == {"apiGroups": ["nfd.k8s-sigs.io"], "resources": ["nodefeatures"],
                                "verbs": ["create", "get", "update", "delete"]}
    assert "nfd-worker" not in names(found["ClusterRole"])
    # GFD writes a feature file (the role's default) and says so: GFD v0.19 would use the API otherwise.
    (gfd,) = [d for d in found["DaemonSet"] if d["metadata"]["name"] == "gpu-feature-discovery"]
    assert {"name": "USE_NODE_FEATURE_API", "value": "false"} in gfd["spec"]["template"]["spec"]["containers"][-1]["env"]

    # The same run again: our own NFD is kept as it is, nothing changes.
    again = run_playbook(tmp_path, [role_play("again", base, tmp_path / "again.json")], name="again")
    assert again.returncode == 0, again.output
    install = again.output.split("Install Node Feature Discovery from its manifests]", 1)[1]
    assert install.split("\n")[1].startswith("ok: [localhost]"), again.output[-3000:]
    assert "changed=1 " in again.output, "only the test's own dump changed: " + again.output[-3000:]


def test_auto_leaves_an_nfd_it_did_not_install_alone(tmp_path: Path, kubeconfig: Path) -> None:
    other = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "nfd-worker", "namespace": "nfd-elsewhere"},
             "spec": {"selector": {"matchLabels": {"app": "w"}}, "template": {"metadata": {"labels": {"app": "w"}}, "spec": {
                 "containers": [{"name": "nfd-worker", "image": "registry.k8s.io/nfd/node-feature-discovery:v0.17.3",
                                 "command": ["nfd-worker"]}]}}}}
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "nfd-elsewhere"}}
    plays = [{"name": "existing", "hosts": "localhost", "gather_facts": False,
              "tasks": [k8s_task(NODEFEATURE_CRD, kubeconfig), k8s_task(namespace, kubeconfig), k8s_task(other, kubeconfig)]},
             role_play("with_nfd", {"k8s_kubeconfig": str(kubeconfig)}, tmp_path / "with_nfd.json"),
             nfd_objects(kubeconfig, tmp_path / "objects.json")]
    run = run_playbook(tmp_path, plays)
    assert run.returncode == 0, run.output
    assert read_json(tmp_path / "with_nfd.json") == {"ok": True}
    found = read_json(tmp_path / "objects.json")
    # No second NFD: only the existing worker, no master, no namespace of ours.
    assert [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in found["DaemonSet"] if "nfd" in d["metadata"]["name"]] == [
        ("nfd-elsewhere", "nfd-worker")]
    assert found["Deployment"] == []
    assert names(found["CustomResourceDefinition"]) == ["nodefeatures.nfd.k8s-sigs.io"]
