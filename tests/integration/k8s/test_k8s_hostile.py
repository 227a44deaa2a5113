# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile input and drain safety for the k8s modules, against the API emulator.

Each test reproduces a way the modules were once made to over-reach, crash, or lose data, and
asserts the clear refusal, the requests (none where input is refused) and the cluster left.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

REPO = Path(__file__).resolve().parents[3]
GPU = {"nvidia.com/gpu": "1"}
K8S_MODULES = ("k8s_node_evacuate", "k8s_node_label", "k8s_node_taint", "k8s_node_wait")
TAINT = {"key": "gpuops.io/mig-reconfigure", "value": "x", "effect": "NoSchedule"}


class ModuleExit(Exception):
    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result.get("msg", ""))
        self.result = result


def run_module(module: str, args: dict[str, Any], check: bool = False) -> dict[str, Any]:
    """gpuops.nvidia.<module>'s main() in-process; its result (``failed`` set on failure)."""
    target = importlib.import_module("ansible_collections.gpuops.nvidia.plugins.modules." + module)

    def exit_json(_self: Any, **result: Any) -> None:
        raise ModuleExit(result)

    def fail_json(_self: Any, msg: str = "", **result: Any) -> None:
        result.update(failed=True, msg=msg)
        raise ModuleExit(result)

    with patch_module_args(dict(args, _ansible_check_mode=check)), pytest.MonkeyPatch.context() as patch:
        patch.setattr(basic.AnsibleModule, "exit_json", exit_json)
        patch.setattr(basic.AnsibleModule, "fail_json", fail_json)
        patch.setattr(basic.AnsibleModule, "warn", lambda _self, text: None)
        try:
            target.main()
        except ModuleExit as done:
            return done.result
    raise AssertionError("module returned without exit_json/fail_json")


def minimal_args(module: str) -> dict[str, Any]:
    return {
        "k8s_node_evacuate": {"scope": "all", "timeout": 5, "wait_timeout": 5, "poll_interval": 0.05},
        "k8s_node_label": {"labels": {"a": "b"}},
        "k8s_node_taint": {"taints": [TAINT], "cordon": True},
        "k8s_node_wait": {"ready": True, "timeout": 2},
    }[module]


def unscheduled_pod(kube, name: str, namespace: str) -> None:
    kube.namespace(namespace)
    kube.core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "controller": True,
                                          "uid": "00000000-0000-0000-0000-000000000009"}]},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}})


def writes(kube) -> list[dict[str, Any]]:
    return [r for r in kube.requests() if r["verb"] not in ("get", "list", "watch")]


# --- item 1: an empty or malformed node name ---------------------------------------------------


@pytest.mark.parametrize("module", K8S_MODULES)
@pytest.mark.parametrize("name", ["", "Gpu-Node", "gpu-node-1\n", "-x", "a" * 254, "node/../x", "gpu node"])
def test_a_malformed_node_name_is_refused_before_any_request(kube, module, name):
    kube.node()
    unscheduled_pod(kube, "pending-0", "team-a")
    kube.clear_requests()
    for check in (True, False):
        result = run_module(module, dict(minimal_args(module), name=name, kubeconfig=str(kube.kubeconfig)), check=check)
        assert result["failed"] and not result.get("changed")
        assert result["msg"].startswith("name: ") and "RFC 1123" in result["msg"]
    assert kube.requests() == []
    assert kube.core.read_namespaced_pod("pending-0", "team-a").metadata.name == "pending-0"


@pytest.mark.parametrize("module", K8S_MODULES)
def test_an_empty_name_in_a_batch_is_refused_before_any_request(kube, module):
    kube.node()
    kube.clear_requests()
    result = run_module(module, dict(minimal_args(module), nodes=[{"name": "gpu-node-1"}, {"name": ""}],
                                     kubeconfig=str(kube.kubeconfig)))
    assert result["failed"] and not result.get("changed") and result["msg"].startswith("nodes[1].name: ")
    assert kube.requests() == []


def test_evacuate_with_an_empty_name_evicts_nothing_of_the_pending_pods_of_the_cluster(kube):
    """The reported case: ``name: ""`` read the node list and evicted every pending pod."""
    for namespace in ("team-a", "team-b"):
        unscheduled_pod(kube, "pending", namespace)
    kube.clear_requests()
    result = run_module("k8s_node_evacuate", dict(minimal_args("k8s_node_evacuate"), name="", kubeconfig=str(kube.kubeconfig)))
    assert result["failed"] and not result.get("changed")
    assert kube.requests(subresource="eviction") == [] and kube.requests() == []
    assert sorted(p.metadata.namespace for p in kube.core.list_pod_for_all_namespaces().items) == ["team-a", "team-b"]


# --- item 6: keys and values the API server refuses --------------------------------------------


@pytest.mark.parametrize("labels", [{"a\n": "b"}, {"a": "b\n"}, {"example.com/\n": "b"}, {"Example.com/a": "b"},
                                    {"a": "x" * 64}, {"a/b/c": "d"}, {"": "b"}])
def test_label_keys_and_values_with_a_trailing_newline_or_bad_shape_are_refused(kube, labels):
    kube.node()
    kube.clear_requests()
    result = run_module("k8s_node_label", {"name": "gpu-node-1", "labels": labels, "kubeconfig": str(kube.kubeconfig)})
    assert result["failed"] and not result.get("changed") and result["msg"].startswith("labels")
    assert writes(kube) == []
    assert "a" not in (kube.read_node()["metadata"].get("labels") or {})


@pytest.mark.parametrize("taint", [dict(TAINT, key="gpuops.io/x\n"), dict(TAINT, value="x\n"), dict(TAINT, effect="NoSchedule\n"),
                                   dict(TAINT, value={"nested": 1})])
def test_taint_keys_and_values_with_a_trailing_newline_are_refused(kube, taint):
    kube.node()
    kube.clear_requests()
    result = run_module("k8s_node_taint", {"name": "gpu-node-1", "taints": [taint], "kubeconfig": str(kube.kubeconfig)})
    assert result["failed"] and not result.get("changed")
    assert result["msg"].startswith("taints[0]") or "effect" in result["msg"]
    assert writes(kube) == []
    assert not kube.read_node()["spec"].get("taints")


# --- items 3 and 7: a malformed host fails at once, in every module ------------------------------


@pytest.mark.parametrize("module", K8S_MODULES)
@pytest.mark.parametrize("host", ["http://[::1", "not a url", "ftp://127.0.0.1:6443", "https://", "http://h:99999",
                                  "http://h/\n", "//127.0.0.1"])
def test_a_malformed_host_is_a_configuration_error_not_retried(kube, module, host):
    kube.node()
    kube.clear_requests()
    result = run_module(module, dict(minimal_args(module), name="gpu-node-1", host=host, api_key="t0ken-value"))
    assert result["failed"] and not result.get("changed")
    assert result["msg"].startswith("option host: ") and "attempt" not in result["msg"]
    assert kube.requests() == []


def test_a_malformed_host_from_the_environment_names_the_variable(kube, monkeypatch):
    monkeypatch.setenv("K8S_AUTH_HOST", "ftp://example.com")
    result = run_module("k8s_node_label", {"name": "gpu-node-1", "labels": {"a": "b"}, "api_key": "t0ken-value"})
    assert result["failed"] and result["msg"].startswith("environment variable K8S_AUTH_HOST: 'ftp://example.com'")


# --- item 9: proxy environment variables are not read ------------------------------------------


def test_proxy_environment_variables_are_not_read(kube, monkeypatch):
    # A proxy that answers nothing: were it used, every request would fail.
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    kube.node()
    result = run_module("k8s_node_label", {"name": "gpu-node-1", "labels": {"a": "b"}, "kubeconfig": str(kube.kubeconfig)})
    assert not result.get("failed"), result["msg"]
    assert result["changed"] and kube.read_node()["metadata"]["labels"]["a"] == "b"


# --- item 8: drain safety -----------------------------------------------------------------------


def pod(kube, name: str, owner: bool = True, emptydir: bool = False, labels: dict[str, str] | None = None,
        phase: str = "Running") -> None:
    metadata: dict[str, Any] = {"name": name, "namespace": "default", "labels": dict(labels or {"app": name})}
    if owner:
        metadata["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "controller": True,
                                        "uid": "00000000-0000-0000-0000-000000000001"}]
    spec: dict[str, Any] = {"nodeName": "gpu-node-1",
                            "containers": [{"name": "main", "image": "busybox", "resources": {"limits": GPU, "requests": GPU}}]}
    if emptydir:
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    kube.namespace("default")
    kube.core.create_namespaced_pod("default", {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
    conditions = [{"type": "Ready", "status": "True"}] if phase == "Running" else []
    kube.core.patch_namespaced_pod_status(name, "default", {"status": {"phase": phase, "conditions": conditions}})


def evacuate(kube, check: bool = False, **options: Any) -> dict[str, Any]:
    args = {"name": "gpu-node-1", "kubeconfig": str(kube.kubeconfig), "timeout": 2, "wait_timeout": 10, "poll_interval": 0.05}
    args.update(options)
    return run_module("k8s_node_evacuate", args, check=check)


def pod_names(kube) -> list[str]:
    return [name.split("/", 1)[1] for name in kube.pod_names()]


def test_bare_emptydir_and_pdb_blocked_pods_are_refused_together_evicting_nothing(kube):
    """The acceptance scenario: by default nothing is evicted and the message names all three."""
    kube.node(unschedulable=True)
    pod(kube, "bare", owner=False)
    pod(kube, "scratch", emptydir=True)
    pod(kube, "serve", labels={"app": "serve"})
    pod(kube, "train")
    kube.pdb("serve-pdb", {"app": "serve"})
    kube.clear_requests()
    for check in (True, False):
        result = evacuate(kube, check=check)
        assert result["failed"] and result["changed"] is False
        assert "1 bare pod(s), which no controller re-creates (delete_bare_pods allows them): default/bare;" in result["msg"]
        assert ("1 pod(s) with emptyDir volumes, whose data would be deleted (delete_emptydir_data allows them): "
                "default/scratch (scratch)") in result["msg"]
        assert "default/serve blocked by PodDisruptionBudget serve-pdb: it allows 0 disruption(s) and 1 of its pods" in result["msg"]
        assert [entry["name"] for entry in result["refused"]] == ["bare", "scratch"]
        assert [entry["name"] for entry in result["pdb_shortfalls"]] == ["serve-pdb"]
        assert result["evicted"] == []
    assert kube.requests(subresource="eviction") == [] and writes(kube) == []
    assert pod_names(kube) == ["bare", "scratch", "serve", "train"]

    # With the opt-ins the first two are no longer refused, but the budget still blocks before
    # any eviction: the node is not half drained.
    result = evacuate(kube, delete_bare_pods=True, delete_emptydir_data=True)
    assert result["failed"] and result["changed"] is False and result["refused"] == []
    assert "bare" not in result["msg"] and "serve-pdb" in result["msg"]
    assert kube.requests(subresource="eviction") == [] and pod_names(kube) == ["bare", "scratch", "serve", "train"]

    # Once the budget allows it, all of them move.
    kube.policy.delete_namespaced_pod_disruption_budget("serve-pdb", "default")
    result = evacuate(kube, delete_bare_pods=True, delete_emptydir_data=True)
    assert not result.get("failed"), result["msg"]
    assert sorted(entry["name"] for entry in result["evicted"]) == ["bare", "scratch", "serve", "train"]
    assert pod_names(kube) == []
    assert kube.requests(verb="delete", resource="pods") == []


def test_ended_bare_pods_are_no_loss_and_are_evicted(kube):
    kube.node(unschedulable=True)
    pod(kube, "job-done", owner=False, emptydir=True, phase="Succeeded")
    result = evacuate(kube)
    assert not result.get("failed"), result["msg"]
    assert [entry["name"] for entry in result["evicted"]] == ["job-done"]


def test_a_budget_that_covers_the_nodes_pods_lets_them_all_go(kube):
    kube.node(unschedulable=True)
    pod(kube, "serve-0", labels={"app": "serve"})
    pod(kube, "serve-1", labels={"app": "serve"})
    kube.pdb("serve-pdb", {"app": "serve"}, max_unavailable=2)
    result = evacuate(kube)
    assert not result.get("failed"), result["msg"]
    assert sorted(entry["name"] for entry in result["evicted"]) == ["serve-0", "serve-1"]


def test_a_budget_that_allows_no_disruption_blocks_before_the_first_eviction(kube):
    kube.node(unschedulable=True)
    pod(kube, "serve-0", labels={"app": "serve"})
    pod(kube, "serve-1", labels={"app": "serve"})
    pod(kube, "other", labels={"app": "other"})
    kube.pdb("serve-pdb", {"app": "serve"}, max_unavailable=0)
    kube.clear_requests()
    result = evacuate(kube)
    assert result["failed"] and "it allows 0 disruption(s) and 2 of its pods" in result["msg"]
    assert kube.requests(subresource="eviction") == []


def test_a_budget_that_allows_one_disruption_lets_the_drain_start(kube):
    # As kubectl drain: the first pod goes, and the second once the budget allows it again.
    kube.node(unschedulable=True)
    pod(kube, "serve-0", labels={"app": "serve"})
    pod(kube, "serve-1", labels={"app": "serve"})
    kube.pdb("serve-pdb", {"app": "serve"}, max_unavailable=1)
    result = evacuate(kube)
    assert not result.get("failed"), result["msg"]
    assert result["pdb_shortfalls"] == [] and result["refused"] == []
    assert sorted(entry["name"] for entry in result["evicted"]) == ["serve-0", "serve-1"]


# --- item 5: secrets of a kubeconfig dictionary never shown --------------------------------------


@pytest.mark.parametrize("labels", [{"a": "b"}, ["not", "a", "dictionary"]], ids=["run", "invalid-argument"])
def test_kubeconfig_dictionary_secrets_are_masked_in_verbose_output(kube, tmp_path, labels):
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": kube.emulator.url}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": "/nonexistent/get-token",
            "args": ["--role-arn", "arn:aws:iam::123456789012:role/s3cr3t-role"],
            "env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "s3cr3t-env-value"}]},
            "auth-provider": {"name": "oidc", "config": {"client-secret": "s3cr3t-client", "id-token": "s3cr3t-idt"}}}}],
    }
    # An invalid argument fails in AnsibleModule's own validation, which prints the invocation too.
    args = {"name": "gpu-node-1", "labels": labels, "kubeconfig": kubeconfig}
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "local"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "remote"))
    done = subprocess.run([str(Path(sys.executable).parent / "ansible"), "localhost", "-vvv", "-m", "gpuops.nvidia.k8s_node_label",
                           "-a", json.dumps(args), "-e", "ansible_python_interpreter=" + sys.executable],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)
    output = done.stdout + done.stderr
    assert "module_args" in output, output
    for secret in ("s3cr3t-role", "s3cr3t-env-value", "s3cr3t-client", "s3cr3t-idt"):
        assert secret not in output


def test_kubeconfig_secrets_are_known_before_the_invocation_is_logged(monkeypatch):
    """AnsibleModule logs the invocation to the journal before the module runs: the secrets are
    registered as soon as the parameters are read."""
    from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.module import K8sModule, argument_spec

    logged = []
    monkeypatch.setattr(basic.AnsibleModule, "log", lambda _self, msg, log_args=None: logged.append(msg))
    kubeconfig = {"users": [{"name": "u", "user": {"exec": {"command": "x", "args": ["--token", "s3cr3t-arg"],
                                                            "env": [{"name": "T", "value": "s3cr3t-env"}]}}}]}
    with patch_module_args({"name": "gpu-node-1", "kubeconfig": kubeconfig}):
        module = K8sModule(argument_spec=argument_spec())
    assert {"s3cr3t-arg", "s3cr3t-env"} <= module.no_log_values
    assert logged and all("s3cr3t" not in message for message in logged)


# --- generated options through the real modules --------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

MODULE_CASES = max(10, settings.default.max_examples // 4)
TEXTISH = st.one_of(st.sampled_from(["a", "gpu-node-1", "example.com/a", "", "a\n", "A", "-a", "a" * 64, "x/y/z", "é"]),
                    st.text(alphabet=st.sampled_from(list("az09-._/\n ")), max_size=12))
VALUEISH = st.one_of(TEXTISH, st.none(), st.booleans(), st.integers(-2, 2), st.just(["x"]))


def node_view(kube) -> Any:
    node = kube.read_node()
    return (node["metadata"].get("labels"), node["metadata"].get("annotations"), node["spec"].get("taints"),
            node["spec"].get("unschedulable"))


@settings(max_examples=MODULE_CASES)
@given(module=st.sampled_from(["k8s_node_label", "k8s_node_taint"]), name=st.one_of(st.just("gpu-node-1"), TEXTISH),
       labels=st.dictionaries(TEXTISH, VALUEISH, max_size=2), taints=st.lists(st.fixed_dictionaries(
           {"key": TEXTISH}, optional={"value": VALUEISH, "effect": st.sampled_from(["NoSchedule", "NoExecute", "x"])}), max_size=2),
       check=st.booleans(), host=st.sampled_from([None, None, "ftp://x", "http://[::1"]))
def test_generated_options_through_the_modules(kube, module, name, labels, taints, check, host):
    kube.emulator.reset()
    kube.node()
    before = node_view(kube)
    kube.clear_requests()
    args: dict[str, Any] = {"name": name, "kubeconfig": str(kube.kubeconfig)}
    if host:
        args["host"] = host
    if module == "k8s_node_label":
        args["labels"] = labels
    else:
        args.update(taints=taints, labels=labels)
    result = run_module(module, args, check=check)  # a traceback would escape here and fail the test
    after = node_view(kube)
    if result.get("failed") or check:
        assert after == before and writes(kube) == []
    if not result.get("failed"):
        assert bool(result["changed"]) == (after != before) or check
    assert len(result.get("msg", "")) < 1000
