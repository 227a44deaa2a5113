# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Generated hostile options for the k8s module_utils entry points (fast, in-process).

Every input is accepted as the API server would accept it, or refused with a K8sError whose
message names the field and quotes a short excerpt; nothing else is ever raised, and a refused
input makes no request (the fake cluster records every call).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import (
    K8sError, is_retryable, kubeconfig_secrets, resolve_auth,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.evict import (
    EvacuationRequest, drain_refusals, evacuate, pdb_shortfalls,
)
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.module import validate_names
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.node import (
    key_problem, label_value_problem, node_name_problem, normalize_metadata_changes, normalize_taints,
)
from k8s_unit_helpers import make_node, make_pod

MESSAGE_LIMIT = 600
# The API server's own rules (k8s.io/apimachinery validation), written independently of node.py.
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")

NAMEISH = st.one_of(
    st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?", fullmatch=True),
    st.text(alphabet=st.sampled_from(list("aZ09-._/ \n\t\x00é") + ["\u2028"]), max_size=30),
    st.text(max_size=20),
    st.integers(0, 4).map(lambda n: "a" * (250 + n)),
    st.sampled_from(["", "\n", "gpu-node-1\n", "-x", "x-", "a..b", "Gpu-Node", "node/../x", "example.com/", "/x"]),
)
VALUES = st.one_of(NAMEISH, st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def refused_or_accepted(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except K8sError as error:
        # A drain refusal names every pod at fault: its length grows with them, nothing else's does.
        pods = len(error.details.get("remaining") or ())
        assert len(error.msg) <= MESSAGE_LIMIT + 40 * pods, error.msg[:300]
        return error


def api_server_accepts_key(key):
    if not isinstance(key, str) or not key:
        return False
    prefix, _slash, name = key.rpartition("/")
    if "/" in key and not (prefix and len(prefix) <= 253 and DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and bool(QUALIFIED_NAME.fullmatch(name))


@given(NAMEISH)
def test_node_names_are_checked_as_the_api_server_does(name):
    expected = isinstance(name, str) and 0 < len(name) <= 253 and DNS1123_SUBDOMAIN.fullmatch(name) is not None
    assert (node_name_problem(name) is None) == expected, repr(name)
    outcome = refused_or_accepted(validate_names, {"name": name, "nodes": None})
    assert isinstance(outcome, K8sError) != expected
    batch = refused_or_accepted(validate_names, {"nodes": [{"name": "ok"}, {"name": name}]})
    assert isinstance(batch, K8sError) != expected
    if not expected:
        assert batch.msg.startswith("nodes[1].name: ")


@given(st.dictionaries(NAMEISH, VALUES, max_size=4), st.booleans())
def test_label_and_annotation_changes_are_checked_as_the_api_server_does(changes, is_label):
    outcome = refused_or_accepted(normalize_metadata_changes, "labels" if is_label else "annotations", changes, is_label)
    if isinstance(outcome, K8sError):
        assert outcome.msg.startswith("labels" if is_label else "annotations")
        return
    for key, value in outcome.items():
        assert api_server_accepts_key(key), repr(key)
        if is_label and value is not None:
            assert len(value) <= 63 and LABEL_VALUE.fullmatch(value), repr(value)


EFFECTS = st.one_of(st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute", "NoSchedule\n", "noschedule", ""]), VALUES)


@given(st.lists(st.fixed_dictionaries({"key": NAMEISH}, optional={"value": VALUES, "effect": EFFECTS}), max_size=3),
       st.sampled_from(["present", "absent"]))
def test_taints_are_checked_as_the_api_server_does(taints, state):
    outcome = refused_or_accepted(normalize_taints, taints, state)
    if isinstance(outcome, K8sError):
        assert outcome.msg.startswith("taints")
        return
    for taint in outcome:
        assert api_server_accepts_key(taint["key"])
        assert "value" not in taint or (len(taint["value"]) <= 63 and LABEL_VALUE.fullmatch(taint["value"]))
        assert taint.get("effect", "NoSchedule") in ("NoSchedule", "PreferNoSchedule", "NoExecute")


URLISH = st.one_of(
    st.builds(lambda scheme, host, port: "%s://%s%s" % (scheme, host, port),
              st.sampled_from(["http", "https", "ftp", "HTTPS", "", "file", "socks5"]),
              st.sampled_from(["127.0.0.1", "[::1]", "[::1", "k8s.example.com", "", "a b", "h\n"]),
              st.sampled_from(["", ":6443", ":0", ":99999", ":x", "/", "/api?x=1", "#f"])),
    st.text(max_size=40),
)


@given(URLISH, st.booleans())
def test_hosts_are_refused_at_once_when_malformed(host, from_environment):
    params = {} if from_environment else {"host": host, "api_key": "t0ken"}
    environ = {"K8S_AUTH_HOST": host, "K8S_AUTH_API_KEY": "t0ken"} if from_environment else {}
    outcome = refused_or_accepted(resolve_auth, params, environ)
    if isinstance(outcome, K8sError):
        assert outcome.msg.startswith("environment variable K8S_AUTH_HOST: " if from_environment else "option host: ")
    elif host:
        assert outcome["host"].split("://", 1)[0].lower() in ("http", "https")


def test_url_errors_are_not_retried_as_transient():
    import urllib3

    assert not is_retryable(urllib3.exceptions.LocationValueError("No host specified."))
    assert not is_retryable(urllib3.exceptions.LocationParseError("http://[::1"))
    assert not is_retryable(urllib3.exceptions.ProxySchemeUnknown("ftp"))
    assert not is_retryable(ValueError("Invalid IPv6 URL"))
    assert is_retryable(urllib3.exceptions.NewConnectionError(None, "refused"))
    assert is_retryable(urllib3.exceptions.ReadTimeoutError(None, "/", "timed out"))
    assert is_retryable(ConnectionRefusedError())


@given(st.recursive(st.one_of(st.text(max_size=12), st.integers(), st.none()),
                    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(
                        st.sampled_from(["user", "exec", "args", "env", "value", "name", "token", "auth-provider", "config",
                                         "client-key-data", "command", "users"]), inner, max_size=4)), max_leaves=20))
def test_kubeconfig_secret_search_never_fails(kubeconfig):
    secrets = kubeconfig_secrets(kubeconfig)
    assert all(isinstance(secret, str) and secret for secret in secrets)


# --- evacuation: option validation and drain safety, before any request ------------------------


@given(NAMEISH, st.sampled_from(["all", "gpu", "devices", "GPU", ""]), st.lists(NAMEISH, max_size=2),
       st.one_of(st.none(), st.integers(-5, 5)), st.integers(-5, 5), st.booleans())
def test_evacuation_requests_are_validated_before_any_request(name, scope, uuids, grace, timeout, force):
    outcome = refused_or_accepted(EvacuationRequest, name, scope=scope, device_uuids=uuids, grace_period=grace, timeout=timeout,
                                  wait_timeout=1, force=force, force_reason="r" if force else None)
    if not isinstance(outcome, K8sError):
        assert node_name_problem(name) is None and outcome.field_selector == "spec.nodeName=" + name


POD_SHAPES = st.fixed_dictionaries({"owner": st.booleans(), "emptydir": st.booleans(), "app": st.sampled_from(["serve", "train"]),
                                    "phase": st.sampled_from(["Running", "Running", "Succeeded", "Pending"])})


@given(st.lists(POD_SHAPES, min_size=1, max_size=5), st.integers(0, 3), st.booleans(), st.booleans())
def test_drain_safety_refuses_before_the_first_eviction(fake_kube, shapes, allowed, bare_ok, emptydir_ok):
    pods = []
    for index, shape in enumerate(shapes):
        pod = make_pod("p%d" % index, gpus={"nvidia.com/gpu": "1"}, labels={"app": shape["app"]})
        if not shape["owner"]:
            pod["metadata"].pop("ownerReferences", None)
        if shape["emptydir"]:
            pod["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
        pod["status"] = {"phase": shape["phase"], "conditions": [{"type": "Ready", "status": "True"}]}
        pods.append(pod)
    pdb = {"metadata": {"name": "serve-pdb", "namespace": "default"}, "spec": {"selector": {"matchLabels": {"app": "serve"}}},
           "status": {"disruptionsAllowed": allowed}}
    kube = fake_kube(nodes=[make_node(unschedulable=True)], pods=pods, pdbs=[pdb])
    targets = [{"namespace": "default", "name": p["metadata"]["name"], "uid": p["metadata"]["uid"], "pod": p} for p in pods]
    refused = drain_refusals(targets, bare_ok, emptydir_ok)
    shortfalls = pdb_shortfalls(targets, [pdb])
    request = EvacuationRequest("gpu-node-1", scope="gpu", timeout=0, wait_timeout=5, delete_bare_pods=bare_ok,
                                delete_emptydir_data=emptydir_ok)
    outcome = refused_or_accepted(evacuate, kube, request, False)
    if refused or shortfalls:
        assert isinstance(outcome, K8sError) and outcome.msg.startswith("nothing was evicted from node gpu-node-1")
        assert kube.count("evict_pod") == 0 and kube.count("delete_pod") == 0
        assert outcome.details["changed"] is False
    else:
        assert not isinstance(outcome, K8sError), outcome.msg
        assert outcome["changed"] is True and kube.count("evict_pod") == len(pods)
    for entry in refused:
        shape = shapes[int(entry["name"][1:])]
        assert shape["phase"] != "Succeeded"
        assert (not shape["owner"] and not bare_ok) or (shape["emptydir"] and not emptydir_ok)


@pytest.mark.parametrize("value", ["x" * 300000])
def test_an_annotation_value_over_the_api_servers_limit_is_refused(value):
    assert isinstance(refused_or_accepted(normalize_metadata_changes, "annotations", {"a": value}, False), K8sError)


def test_key_and_value_rules_use_the_whole_string():
    assert key_problem("a\n") and key_problem("example.com/a\n") and key_problem("example.com\n/a")
    assert label_value_problem("v\n") and label_value_problem("\n")
    assert node_name_problem("gpu-node-1\n") and node_name_problem("")


@pytest.mark.parametrize("allowed, blocks", [(0, True), (1, False), (2, False)])
def test_only_a_budget_that_allows_no_disruption_blocks_the_drain_up_front(allowed, blocks):
    # Two replicas of a Deployment on the node behind a maxUnavailable: 1 budget: kubectl drain evicts one,
    # then the other once its replacement is ready, and so does the evacuation; only a budget that allows
    # nothing at all stops it before the first eviction.
    pods = [make_pod("serve-%d" % index, gpus={"nvidia.com/gpu": "1"}, labels={"app": "serve"}) for index in range(2)]
    for pod in pods:
        pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    pdb = {"metadata": {"name": "serve-pdb", "namespace": "default"}, "spec": {"selector": {"matchLabels": {"app": "serve"}}},
           "status": {"disruptionsAllowed": allowed}}
    targets = [{"namespace": "default", "name": p["metadata"]["name"], "uid": p["metadata"]["uid"], "pod": p} for p in pods]
    shortfalls = pdb_shortfalls(targets, [pdb])
    if blocks:
        assert shortfalls == [{"namespace": "default", "name": "serve-pdb", "disruptions_allowed": 0,
                               "pods": ["default/serve-0", "default/serve-1"]}]
    else:
        assert shortfalls == []
