# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Auth resolution, configuration building and the retry policy (injected clock, no sleeping)."""

from __future__ import annotations

import email.utils

import pytest
import urllib3
from k8s_unit_helpers import api_error

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import (
    K8sError,
    RetriesExhausted,
    RetryPolicy,
    build_configuration,
    describe_error,
    has_direct_credentials,
    is_retryable,
    kubeconfig_secrets,
    redacted_auth,
    resolve_auth,
    retry_after_seconds,
)


# --- auth -------------------------------------------------------------------------------------


def test_parameters_win_over_environment():
    auth = resolve_auth({"host": "https://a:6443/", "context": None}, {"K8S_AUTH_HOST": "https://b", "K8S_AUTH_CONTEXT": "ctx"})
    assert auth["host"] == "https://a:6443"
    assert auth["context"] == "ctx"


def test_environment_fallbacks_include_kubernetes_core_names():
    env = {
        "K8S_AUTH_VERIFY_SSL": "no",
        "K8S_AUTH_SSL_CA_CERT": "/ca.pem",
        "K8S_AUTH_CERT_FILE": "/c.pem",
        "K8S_AUTH_KEY_FILE": "/k.pem",
        "K8S_AUTH_API_KEY": "tok",
        "K8S_AUTH_PROXY_HEADERS_USER_AGENT": "me",
    }
    auth = resolve_auth({}, env)
    assert auth["validate_certs"] is False
    assert auth["ca_cert"] == "/ca.pem"
    assert (auth["client_cert"], auth["client_key"]) == ("/c.pem", "/k.pem")
    assert auth["api_key"] == "tok"
    assert auth["proxy_headers"] == {"user_agent": "me"}


def test_tls_verification_is_on_by_default():
    assert resolve_auth({}, {})["validate_certs"] is True
    assert resolve_auth({"validate_certs": None}, {"K8S_AUTH_VALIDATE_CERTS": "false"})["validate_certs"] is False
    assert resolve_auth({"validate_certs": True}, {"K8S_AUTH_VALIDATE_CERTS": "false"})["validate_certs"] is True


def test_bad_boolean_in_environment_names_the_variable():
    with pytest.raises(K8sError, match="K8S_AUTH_VERIFY_SSL.*'maybe'"):
        resolve_auth({}, {"K8S_AUTH_VERIFY_SSL": "maybe"})


def test_kubeconfig_must_be_path_or_dict():
    with pytest.raises(K8sError, match="kubeconfig: expected a file path or a kubeconfig dictionary, got list"):
        resolve_auth({"kubeconfig": ["a"]}, {})


def test_client_cert_needs_key():
    with pytest.raises(K8sError, match="client_cert and client_key"):
        resolve_auth({"client_cert": "/c.pem"}, {})


def test_direct_credentials_need_host_and_a_secret():
    assert has_direct_credentials({"host": "h", "api_key": "t"})
    assert has_direct_credentials({"host": "h", "client_cert": "c", "client_key": "k"})
    assert not has_direct_credentials({"host": "h"})
    assert not has_direct_credentials({"api_key": "t"})


def test_redaction_masks_secrets():
    masked = redacted_auth({"api_key": "secret", "kubeconfig": {"users": []}, "host": "h",
                            "proxy_headers": {"basic_auth": "u:p", "user_agent": "me"}})
    assert "secret" not in repr(masked) and "u:p" not in repr(masked)
    assert masked["host"] == "h" and masked["proxy_headers"]["user_agent"] == "me"


KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://k8s.example:6443", "insecure-skip-tls-verify": True}}],
    "users": [{"name": "u", "user": {"token": "from-kubeconfig"}}],
    "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "ctx",
}


def test_configuration_from_kubeconfig_dict_keeps_tls_verification_on():
    configuration = build_configuration(resolve_auth({"kubeconfig": KUBECONFIG}, {}))
    assert configuration.host == "https://k8s.example:6443"
    assert configuration.verify_ssl is True
    assert configuration.retries is False
    assert "from-kubeconfig" in str(configuration.api_key)


def test_api_key_and_host_override_kubeconfig():
    configuration = build_configuration(resolve_auth({"kubeconfig": KUBECONFIG, "host": "https://other/", "api_key": "t0k"}, {}))
    assert configuration.host == "https://other"
    assert configuration.api_key == {"authorization": "Bearer t0k"}


def test_unreadable_kubeconfig_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(K8sError, match="Cannot load Kubernetes configuration from .*nope"):
        build_configuration(resolve_auth({"kubeconfig": str(missing)}, {}))


# --- errors -----------------------------------------------------------------------------------


def test_retryable_statuses_and_connection_errors():
    for status in (409, 429, 500, 502, 503, 504):
        assert is_retryable(api_error(status))
    for status in (400, 401, 403, 404, 422):
        assert not is_retryable(api_error(status))
    assert is_retryable(urllib3.exceptions.ProtocolError("Connection aborted."))
    assert is_retryable(ConnectionResetError())
    assert not is_retryable(urllib3.exceptions.SSLError("bad cert"))
    assert not is_retryable(ValueError("bug"))


def test_retry_after_in_seconds_date_and_status_details():
    assert retry_after_seconds(api_error(429, headers={"Retry-After": "7"})) == 7.0
    date = email.utils.formatdate(1000.0 + 30, usegmt=True)
    assert retry_after_seconds(api_error(503, headers={"retry-after": date}), now=1000.0) == pytest.approx(30.0)
    assert retry_after_seconds(api_error(429, retry_after=3)) == 3.0
    assert retry_after_seconds(api_error(500)) is None


def test_describe_error_uses_status_message():
    text = describe_error(api_error(409, "the object has been modified", "Conflict"))
    assert text == "HTTP 409 Conflict: the object has been modified"
    assert describe_error(ConnectionResetError("reset")) == "ConnectionResetError: reset"


# --- retry policy -----------------------------------------------------------------------------


def flaky(errors, result="ok"):
    calls = []

    def operation():
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return operation, calls


def test_retries_transient_errors_with_exponential_backoff(clock):
    policy = RetryPolicy(initial_delay=0.5, max_delay=4, sleep=clock.sleep, clock=clock)
    operation, calls = flaky([api_error(500), api_error(503), urllib3.exceptions.ProtocolError("dropped"), api_error(502)])
    assert policy.run(operation, policy.deadline(60), "reading") == "ok"
    assert len(calls) == 5
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0]


def test_backoff_is_capped(clock):
    policy = RetryPolicy(initial_delay=1, max_delay=3, sleep=clock.sleep, clock=clock)
    assert [policy.backoff(n) for n in range(1, 6)] == [1, 2, 3, 3, 3]


def test_retry_after_is_honoured(clock):
    policy = RetryPolicy(initial_delay=0.1, sleep=clock.sleep, clock=clock)
    operation = flaky([api_error(429, headers={"Retry-After": "5"})])[0]
    policy.run(operation, policy.deadline(60), "evicting")
    assert clock.sleeps == [5.0]


def test_waits_never_pass_the_deadline_and_give_up_with_a_clear_message(clock):
    policy = RetryPolicy(initial_delay=4, max_delay=4, sleep=clock.sleep, clock=clock)
    errors = [api_error(500, "etcd is sad", "InternalError")] * 10
    operation, calls = flaky(errors)
    with pytest.raises(RetriesExhausted) as raised:
        policy.run(operation, policy.deadline(10), "updating node n1")
    assert clock.sleeps == [4, 4, 2]
    assert len(calls) == 4
    message = raised.value.msg
    assert "updating node n1 failed after 4 attempt(s)" in message
    assert "10s deadline" in message and "HTTP 500 InternalError: etcd is sad" in message
    assert raised.value.details["status"] == 500


def test_permanent_errors_fail_at_once(clock):
    policy = RetryPolicy(sleep=clock.sleep, clock=clock)
    operation, calls = flaky([api_error(403, "forbidden", "Forbidden")])
    with pytest.raises(K8sError, match="patching failed: HTTP 403 Forbidden: forbidden") as raised:
        policy.run(operation, policy.deadline(60), "patching")
    assert not isinstance(raised.value, RetriesExhausted)
    assert len(calls) == 1 and clock.sleeps == []


def test_kubeconfig_secrets_are_the_credentials_only():
    kubeconfig = {
        "clusters": [{"name": "c", "cluster": {"server": "https://k", "certificate-authority-data": "Q0E="}}],
        "users": [
            {"name": "u1", "user": {"token": "tok-1", "client-certificate-data": "Y2VydA==", "client-key-data": "a2V5"}},
            {"name": "u2", "user": {"username": "admin", "password": "pw"}},
            {"name": "u3", "user": {"auth-provider": {"config": {
                "id-token": "idt", "refresh-token": "rt", "client-secret": "cs", "idp-issuer-url": "https://idp"}}}},
            {"name": "u4", "user": {"exec": {"command": "aws", "args": ["eks", "get-token", "-o", "--cluster-name", "prod"],
                                             "env": [{"name": "AWS_PROFILE", "value": "p"},
                                                     {"name": "AWS_SECRET", "value": "s3cr3t-env"}]}}},
        ],
    }
    # The whole auth-provider config, an exec plugin's arguments and environment values (not the
    # flags of one or two characters, whose masking would garble the output), every credential.
    assert sorted(kubeconfig_secrets(kubeconfig)) == sorted(
        ["tok-1", "a2V5", "pw", "idt", "rt", "cs", "https://idp", "eks", "get-token", "--cluster-name", "prod",
         "s3cr3t-env"])
    assert kubeconfig_secrets("/path/to/kubeconfig") == []
    assert kubeconfig_secrets(None) == []
