# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""Kubernetes API access for the collection: auth options, the client factory, the retry policy.

Everything that talks HTTP goes through :class:`KubeClient`, which hands back plain API
dictionaries (camelCase, as ``kubectl -o json`` prints them). Every call that may fail
transiently goes through :class:`RetryPolicy`, the one retry policy of the collection.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import time
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import quote, urlencode, urlsplit

try:
    import kubernetes
    from kubernetes.client.exceptions import ApiException
    import urllib3

    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None
except ImportError as import_error:  # pragma: no cover - depends on the host
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = import_error

    class ApiException(Exception):  # type: ignore[no-redef]
        """Stand-in so that isinstance checks work when the client is missing."""

        status = None
        headers = None
        body = None


# Auth options, named as kubernetes.core names them. Environment fallbacks are resolved in
# resolve_auth() so that an explicit parameter always wins and so that unit tests can inject
# the environment.
# kubeconfig is not no_log as a whole: Ansible would then mask every string of a kubeconfig
# dictionary (cluster names, "v1") wherever it appears in the output. Its secrets are
# registered one by one instead (kubeconfig_secrets()).
AUTH_ARG_SPEC: dict[str, dict[str, Any]] = {
    "kubeconfig": {"type": "raw"},
    "context": {"type": "str"},
    "host": {"type": "str"},
    "api_key": {"type": "str", "no_log": True},
    "validate_certs": {"type": "bool", "aliases": ["verify_ssl"]},
    "ca_cert": {"type": "path", "aliases": ["ssl_ca_cert"]},
    "client_cert": {"type": "path", "aliases": ["cert_file"]},
    "client_key": {"type": "path", "aliases": ["key_file"], "no_log": False},
    "proxy": {"type": "str"},
    "no_proxy": {"type": "str"},
    "proxy_headers": {
        "type": "dict",
        "options": {
            "proxy_basic_auth": {"type": "str", "no_log": True},
            "basic_auth": {"type": "str", "no_log": True},
            "user_agent": {"type": "str"},
        },
    },
    "impersonate_user": {"type": "str"},
}

# Environment variables read for each option, first match wins. The second names are the
# ones kubernetes.core also accepts (named after the client's configuration attributes).
AUTH_ENV_VARS: dict[str, tuple[str, ...]] = {
    "kubeconfig": ("K8S_AUTH_KUBECONFIG",),
    "context": ("K8S_AUTH_CONTEXT",),
    "host": ("K8S_AUTH_HOST",),
    "api_key": ("K8S_AUTH_API_KEY",),
    "validate_certs": ("K8S_AUTH_VALIDATE_CERTS", "K8S_AUTH_VERIFY_SSL"),
    "ca_cert": ("K8S_AUTH_CA_CERT", "K8S_AUTH_SSL_CA_CERT"),
    "client_cert": ("K8S_AUTH_CLIENT_CERT", "K8S_AUTH_CERT_FILE"),
    "client_key": ("K8S_AUTH_CLIENT_KEY", "K8S_AUTH_KEY_FILE"),
    "proxy": ("K8S_AUTH_PROXY",),
    "no_proxy": ("K8S_AUTH_NO_PROXY",),
    "impersonate_user": ("K8S_AUTH_IMPERSONATE_USER",),
}
PROXY_HEADER_ENV_PREFIX = "K8S_AUTH_PROXY_HEADERS_"
AUTH_OPTION_NAMES = tuple(AUTH_ARG_SPEC)

TRUE_STRINGS = ("1", "true", "yes", "on", "y")
FALSE_STRINGS = ("0", "false", "no", "off", "n")

MERGE_PATCH = "application/merge-patch+json"

# Status codes worth another attempt: a conflict (the caller re-reads before retrying), rate
# limiting or a PDB refusal, and server-side trouble.
RETRYABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})


class K8sError(Exception):
    """A failure to report to the user: ``msg`` plus structured details for fail_json."""

    def __init__(self, msg: str, **details: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details


class RetriesExhausted(K8sError):
    """The retry policy gave up; ``last_error`` is what the final attempt raised."""

    def __init__(self, msg: str, last_error: BaseException | None = None, **details: Any) -> None:
        super().__init__(msg, **details)
        self.last_error = last_error


# ---------------------------------------------------------------------------------------------
# Auth resolution (pure)


def parse_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_STRINGS:
        return True
    if text in FALSE_STRINGS:
        return False
    raise K8sError("{0}: expected a boolean, got {1!r}".format(where, value))


def resolve_auth(params: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Auth settings from module parameters, falling back to ``K8S_AUTH_*`` variables.

    ``validate_certs`` ends up True unless a parameter or variable says otherwise: TLS
    verification is on by default, whatever the kubeconfig says.
    """
    auth: dict[str, Any] = {}
    for name in AUTH_OPTION_NAMES:
        if name == "proxy_headers":
            continue
        value = params.get(name)
        source = "option " + name
        if value is None:
            for variable in AUTH_ENV_VARS[name]:
                if environ.get(variable) not in (None, ""):
                    value = environ[variable]
                    source = "environment variable " + variable
                    break
        if value is None:
            continue
        if name == "validate_certs":
            value = parse_bool(value, source)
        elif name == "kubeconfig" and isinstance(value, str):
            value = os.path.expanduser(value)
        elif name == "host":
            value = validate_url(str(value), source, HOST_SCHEMES).rstrip("/")
        elif name == "proxy":
            value = validate_url(str(value), source, PROXY_SCHEMES)
        auth[name] = value
    auth.setdefault("validate_certs", True)

    headers = dict(params.get("proxy_headers") or {})
    for key in ("proxy_basic_auth", "basic_auth", "user_agent"):
        if headers.get(key) is None:
            env_value = environ.get(PROXY_HEADER_ENV_PREFIX + key.upper())
            if env_value:
                headers[key] = env_value
    headers = {key: value for key, value in headers.items() if value is not None}
    if headers:
        auth["proxy_headers"] = headers

    kubeconfig = auth.get("kubeconfig")
    if kubeconfig is not None and not isinstance(kubeconfig, (str, dict)):
        raise K8sError("kubeconfig: expected a file path or a kubeconfig dictionary, got {0}".format(type(kubeconfig).__name__))
    if bool(auth.get("client_cert")) != bool(auth.get("client_key")):
        raise K8sError("client_cert and client_key must be given together")
    return auth


HOST_SCHEMES = ("http", "https")
PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")
_URL_TEXT_LIMIT = 2048


def validate_url(value: str, where: str, schemes: tuple[str, ...]) -> str:
    """``value`` if it is an absolute URL with one of ``schemes``, a host and a valid port.

    A malformed URL is a configuration error: it fails at once, never retried as if transient.
    """
    shown = value if len(value) <= 80 else value[:77] + "..."
    problem = None
    if len(value) > _URL_TEXT_LIMIT:
        problem = "is longer than {0} characters".format(_URL_TEXT_LIMIT)
    elif any(ord(char) < 33 or ord(char) == 127 for char in value):
        problem = "contains whitespace or control characters"
    else:
        try:
            parts = urlsplit(value)
            port = parts.port
            hostname = parts.hostname
        except ValueError as error:
            problem = "is not a valid URL ({0})".format(error)
        else:
            if parts.scheme.lower() not in schemes:
                problem = "must start with {0}".format(" or ".join(scheme + "://" for scheme in schemes))
            elif not hostname:
                problem = "names no host"
            elif port is not None and not 0 < port < 65536:
                problem = "has an invalid port"
            elif parts.query or parts.fragment:
                problem = "must not have a query or fragment"
    if problem:
        raise K8sError("{0}: {1!r} {2}".format(where, shown, problem))
    return value


# Keys whose values are secrets wherever they appear in a kubeconfig dictionary.
_SECRET_KEY = re.compile(r"token|secret|password|key-data|^key$|credential|cookie|^config$", re.IGNORECASE)
# Ansible masks a secret wherever the string appears in the output. An exec plugin's shorter
# arguments and values ("-o", "1") are flags, not secrets: masking them would garble the output.
_MIN_EXEC_SECRET_LENGTH = 3


def kubeconfig_secrets(kubeconfig: Any) -> list[str]:
    """The secret strings of a kubeconfig dictionary, to mask in every output of the module.

    Tokens, passwords, private keys and client certificates; the whole ``auth-provider`` config;
    an ``exec`` plugin's arguments and the values of its environment (both commonly carry
    credentials or names of secrets).
    """
    found: list[str] = []

    def strings(node: Any) -> Iterator[str]:
        if isinstance(node, Mapping):
            for child in node.values():
                yield from strings(child)
        elif isinstance(node, list):
            for child in node:
                yield from strings(child)
        elif isinstance(node, str):
            yield node
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            yield str(node)

    def walk(node: Any, key: str = "", depth: int = 0) -> None:
        if depth > 32:
            return
        if key in ("auth-provider", "args") or (key == "env" and isinstance(node, list)) or (key and _SECRET_KEY.search(key)):
            if key == "env":
                values = [value for item in node if isinstance(item, Mapping) for value in strings(item.get("value"))]
                found.extend(value for value in values if len(value) >= _MIN_EXEC_SECRET_LENGTH)
            elif key == "args":
                found.extend(value for value in strings(node) if len(value) >= _MIN_EXEC_SECRET_LENGTH)
            else:
                found.extend(strings(node))
            return
        if isinstance(node, Mapping):
            for child_key, child in node.items():
                walk(child, str(child_key), depth + 1)
        elif isinstance(node, list):
            for child in node:
                walk(child, key, depth + 1)

    walk(kubeconfig)
    return sorted({secret for secret in found if secret})


def has_direct_credentials(auth: Mapping[str, Any]) -> bool:
    """True when host plus a credential is enough, without any kubeconfig."""
    return bool(auth.get("host")) and (bool(auth.get("api_key")) or bool(auth.get("client_cert")))


def redacted_auth(auth: Mapping[str, Any]) -> dict[str, Any]:
    """The auth settings with secrets masked, for messages and debugging."""
    masked: dict[str, Any] = {}
    for key, value in auth.items():
        if key in ("api_key",):
            masked[key] = "********"
        elif key == "kubeconfig" and isinstance(value, dict):
            masked[key] = "(kubeconfig dictionary)"
        elif key == "proxy_headers":
            masked[key] = {name: ("********" if name != "user_agent" else item) for name, item in value.items()}
        else:
            masked[key] = value
    return masked


# ---------------------------------------------------------------------------------------------
# Retry policy (pure apart from the injected clock and sleep)


class Deadline:
    """A point in time on an injected monotonic clock."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.seconds = float(seconds)
        self.started = clock()
        self.at = self.started + self.seconds

    def remaining(self) -> float:
        return max(0.0, self.at - self.clock())

    def expired(self) -> bool:
        return self.clock() >= self.at

    def elapsed(self) -> float:
        return self.clock() - self.started


def is_connection_error(error: BaseException) -> bool:
    if isinstance(error, (ValueError, TypeError, AssertionError)):
        # A URL that cannot be parsed, an unknown scheme (urllib3's LocationValueError and
        # ProxySchemeUnknown): configuration, which another attempt cannot fix.
        return False
    if HAS_KUBERNETES and isinstance(error, urllib3.exceptions.HTTPError):
        # SSL failures are configuration errors, not transient ones.
        return not isinstance(error, urllib3.exceptions.SSLError) and not _caused_by_ssl(error)
    return isinstance(error, (ConnectionError, TimeoutError))


def _caused_by_ssl(error: BaseException) -> bool:
    reason = getattr(error, "reason", None)
    return HAS_KUBERNETES and isinstance(reason, urllib3.exceptions.SSLError)


def api_status(error: BaseException) -> int | None:
    if isinstance(error, ApiException):
        return error.status
    return None


def is_retryable(error: BaseException) -> bool:
    status = api_status(error)
    if status is not None:
        return status in RETRYABLE_STATUSES
    return is_connection_error(error)


def retry_after_seconds(error: BaseException, now: float | None = None) -> float | None:
    """The server's requested wait: ``Retry-After`` (seconds or HTTP date) or Status details."""
    headers = getattr(error, "headers", None) or {}
    value = None
    for key in headers:
        if str(key).lower() == "retry-after":
            value = headers[key]
            break
    if value is not None:
        text = str(value).strip()
        try:
            return max(0.0, float(text))
        except ValueError:
            parsed = email.utils.parsedate_tz(text)
            if parsed is not None:
                wall_now = time.time() if now is None else now
                return max(0.0, email.utils.mktime_tz(parsed) - wall_now)
    status_body = api_error_body(error)
    details = status_body.get("details") or {}
    seconds = details.get("retryAfterSeconds")
    if isinstance(seconds, (int, float)) and seconds > 0:
        return float(seconds)
    return None


def api_error_body(error: BaseException) -> dict[str, Any]:
    body = getattr(error, "body", None)
    if not body:
        return {}
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body)
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def describe_error(error: BaseException) -> str:
    """One line for a user: status, reason and the server's message, never headers."""
    status = api_status(error)
    if status is not None:
        body = api_error_body(error)
        message = body.get("message") or getattr(error, "reason", None) or "no message"
        reason = body.get("reason") or getattr(error, "reason", None) or ""
        if status == 0:
            return "API request failed: {0}".format(message)
        return "HTTP {0} {1}: {2}".format(status, reason, message).replace("  ", " ")
    return "{0}: {1}".format(type(error).__name__, error)


class RetryPolicy:
    """Exponential backoff, honouring Retry-After, bounded by a deadline.

    The caller's operation must be safe to repeat. For a conflict (409) that means the
    operation re-reads the object and recomputes its change, which is how node.py uses it.
    """

    def __init__(
        self,
        initial_delay: float = 0.25,
        max_delay: float = 8.0,
        multiplier: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.multiplier = multiplier
        self.sleep = sleep
        self.clock = clock

    def deadline(self, seconds: float) -> Deadline:
        return Deadline(seconds, self.clock)

    def backoff(self, attempt: int) -> float:
        """Delay after the ``attempt``-th failure (1-based)."""
        return min(self.max_delay, self.initial_delay * (self.multiplier ** max(0, attempt - 1)))

    def delay(self, attempt: int, error: BaseException | None, deadline: Deadline) -> float:
        """How long to wait before the next attempt, never past the deadline."""
        wanted = None if error is None else retry_after_seconds(error)
        if wanted is None:
            wanted = self.backoff(attempt)
        return min(wanted, deadline.remaining())

    def wait(self, attempt: int, error: BaseException | None, deadline: Deadline) -> None:
        pause = self.delay(attempt, error, deadline)
        if pause > 0:
            self.sleep(pause)

    def run(
        self,
        operation: Callable[[], Any],
        deadline: Deadline,
        what: str,
        retryable: Callable[[BaseException], bool] = is_retryable,
    ) -> Any:
        """Call ``operation`` until it succeeds, fails for good, or the deadline passes."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return operation()
            except K8sError:
                raise
            except Exception as error:  # noqa: BLE001 - classified just below
                if not retryable(error):
                    raise K8sError("{0} failed: {1}".format(what, describe_error(error)), status=api_status(error)) from error
                if deadline.expired():
                    raise RetriesExhausted(
                        "{0} failed after {1} attempt(s) in {2:.1f}s; giving up at the {3:g}s deadline. Last error: {4}".format(
                            what, attempt, deadline.elapsed(), deadline.seconds, describe_error(error)
                        ),
                        last_error=error,
                        status=api_status(error),
                        attempts=attempt,
                    ) from error
                self.wait(attempt, error, deadline)


# ---------------------------------------------------------------------------------------------
# Client factory (I/O)


def build_configuration(auth: Mapping[str, Any]) -> Any:
    """A ``kubernetes.client.Configuration`` from resolved auth settings.

    Order: host plus credentials alone; else the kubeconfig (dict or path) and context; else
    in-cluster service account, then the default kubeconfig.
    """
    configuration = kubernetes.client.Configuration()
    # Proxy environment variables (HTTPS_PROXY, NO_PROXY...) are not read, as with
    # kubernetes.core: a proxy is the kubeconfig's proxy-url or the proxy option.
    configuration.proxy = None
    configuration.no_proxy = None
    kubeconfig = auth.get("kubeconfig")
    context = auth.get("context")
    try:
        if has_direct_credentials(auth):
            pass
        elif isinstance(kubeconfig, dict):
            kubernetes.config.load_kube_config_from_dict(kubeconfig, context=context, client_configuration=configuration)
        elif kubeconfig or context:
            kubernetes.config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        else:
            try:
                kubernetes.config.load_incluster_config(client_configuration=configuration)
            except kubernetes.config.ConfigException:
                kubernetes.config.load_kube_config(client_configuration=configuration)
    except (kubernetes.config.ConfigException, OSError, ValueError, TypeError, KeyError) as error:
        where = "the kubeconfig dictionary" if isinstance(kubeconfig, dict) else (kubeconfig or "the default kubeconfig")
        raise K8sError("Cannot load Kubernetes configuration from {0}: {1}".format(where, error)) from error

    if auth.get("host"):
        configuration.host = auth["host"]
    else:
        validate_url(str(configuration.host or ""), "the server of the Kubernetes configuration", HOST_SCHEMES)
    if configuration.proxy and not auth.get("proxy"):
        validate_url(str(configuration.proxy), "the proxy-url of the Kubernetes configuration", PROXY_SCHEMES)
    if auth.get("api_key"):
        configuration.api_key = {"authorization": "Bearer " + auth["api_key"]}
        configuration.api_key_prefix = {}
        configuration.refresh_api_key_hook = None
    if auth.get("ca_cert"):
        configuration.ssl_ca_cert = auth["ca_cert"]
    if auth.get("client_cert"):
        configuration.cert_file = auth["client_cert"]
        configuration.key_file = auth["client_key"]
    if auth.get("proxy"):
        configuration.proxy = auth["proxy"]
    if auth.get("no_proxy"):
        configuration.no_proxy = auth["no_proxy"]
    if auth.get("proxy_headers"):
        configuration.proxy_headers = urllib3.util.make_headers(**auth["proxy_headers"])
    configuration.verify_ssl = bool(auth["validate_certs"])
    # Our RetryPolicy is the only retry layer: urllib3 must not repeat requests on its own.
    configuration.retries = False
    return configuration


def impersonation_headers(auth: Mapping[str, Any]) -> dict[str, str]:
    if auth.get("impersonate_user"):
        return {"Impersonate-User": auth["impersonate_user"]}
    return {}


class KubeClient:
    """A small surface over the API that speaks plain API dictionaries.

    Requests go through the client library's configured connection pool (TLS, client
    certificates, proxy, as the kubeconfig says) and its auth settings, but not through its
    generated API classes: building those costs more than a second of CPU per module run with
    recent client releases, several times what the requests themselves cost.
    """

    def __init__(self, api_client: Any, request_timeout: float = 30.0, retry: RetryPolicy | None = None) -> None:
        self.api_client = api_client
        self.request_timeout = request_timeout
        self.retry = retry or RetryPolicy()

    def _timeout(self, seconds: float | None = None) -> float:
        return max(1.0, float(seconds if seconds is not None else self.request_timeout))

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = dict(self.api_client.default_headers)
        headers.update({"Accept": "application/json", "User-Agent": "gpuops.nvidia"})
        # The library's own auth settings: a bearer token, refreshed by its hook where the
        # kubeconfig has one (exec plugins, expiring tokens).
        for setting in self.api_client.configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _request(self, method: str, path: str, query: Mapping[str, Any] | None = None, body: Any = None,
                 content_type: str | None = None, timeout: Any = None, stream: bool = False) -> Any:
        """One HTTP request; an answer outside 2xx raises ApiException as the library's own calls do."""
        url = self.api_client.configuration.host.rstrip("/") + path
        fields = {key: ("true" if value is True else value) for key, value in (query or {}).items() if value not in (None, "")}
        if fields:
            url += "?" + urlencode(fields)
        if isinstance(timeout, tuple):
            timeout = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        response = self.api_client.rest_client.pool_manager.request(
            method, url,
            body=None if body is None else json.dumps(body).encode("utf-8"),
            headers=self._headers(content_type if body is not None else None),
            timeout=self._timeout() if timeout is None else timeout,
            preload_content=not stream,
            # The RetryPolicy is the only retry layer.
            retries=False,
        )
        if not 200 <= response.status <= 299:
            try:
                error = ApiException(status=response.status, reason=response.reason)
                error.body = response.data.decode("utf-8", "replace") if response.data else ""
                error.headers = response.headers
            finally:
                response.release_conn()
            raise error
        return response

    # Responses are read raw (JSON) rather than as typed models: product logic works on the
    # API's own field names, and a model's validation cannot reject an object we only read.
    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        try:
            data = response.data
        finally:
            response.release_conn()
        if not data:
            return {}
        return json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)

    def read_node(self, name: str) -> dict[str, Any]:
        return self._json(self._request("GET", "/api/v1/nodes/" + quote(name, safe="")))

    def list_nodes(self, field_selector: str | None = None) -> dict[str, Any]:
        return self._json(self._request("GET", "/api/v1/nodes", {"fieldSelector": field_selector}))

    def list_path(self, path: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        """The items of a list at an API path (``/apis/apps/v1/daemonsets``)."""
        return list(self._json(self._request("GET", path, {"labelSelector": label_selector})).get("items") or [])

    def patch_node(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._json(self._request("PATCH", "/api/v1/nodes/" + quote(name, safe=""), body=body, content_type=MERGE_PATCH))

    def list_pods(self, field_selector: str | None = None, label_selector: str | None = None) -> dict[str, Any]:
        return self._json(self._request("GET", "/api/v1/pods", {"fieldSelector": field_selector, "labelSelector": label_selector}))

    def list_pdbs(self, namespace: str) -> list[dict[str, Any]]:
        response = self._request("GET", "/apis/policy/v1/namespaces/{0}/poddisruptionbudgets".format(quote(namespace, safe="")))
        return list(self._json(response).get("items") or [])

    def evict_pod(self, namespace: str, name: str, uid: str | None, grace_period: int | None) -> None:
        body: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
        delete_options = _delete_options(uid, grace_period)
        if delete_options:
            body["deleteOptions"] = delete_options
        self._json(self._request("POST", _pod_path(namespace, name) + "/eviction", body=body, content_type="application/json"))

    def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        path = "/api/v1/namespaces/{0}/pods".format(quote(namespace, safe=""))
        return self._json(self._request("POST", path, body=body, content_type="application/json"))

    def delete_pod(self, namespace: str, name: str, uid: str | None, grace_period: int | None) -> None:
        body = _delete_options(uid, grace_period) or None
        self._json(self._request("DELETE", _pod_path(namespace, name), body=body, content_type="application/json"))

    def watch(self, kind: str, resource_version: str | None, timeout_seconds: int, field_selector: str | None = None,
              label_selector: str | None = None) -> Iterator[dict[str, Any]]:
        """Stream watch events ``{"type", "object"}`` as dictionaries until the server ends it."""
        path = {"pods": "/api/v1/pods", "nodes": "/api/v1/nodes"}[kind]
        query = {"watch": True, "timeoutSeconds": int(timeout_seconds), "allowWatchBookmarks": True,
                 "resourceVersion": resource_version, "fieldSelector": field_selector, "labelSelector": label_selector}
        # The read timeout guards against a server that does not end the stream itself.
        response = self._request("GET", path, query, timeout=(self._timeout(), timeout_seconds + 10), stream=True)
        try:
            for line in _response_lines(response):
                if line.strip():
                    yield json.loads(line)
        finally:
            response.close()
            response.release_conn()


def _pod_path(namespace: str, name: str) -> str:
    return "/api/v1/namespaces/{0}/pods/{1}".format(quote(namespace, safe=""), quote(name, safe=""))


def _delete_options(uid: str | None, grace_period: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if grace_period is not None:
        options["gracePeriodSeconds"] = grace_period
    if uid:
        options["preconditions"] = {"uid": uid}
    return options


def _response_lines(response: Any) -> Iterator[str]:
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            yield line.decode("utf-8")
    if pending:
        yield pending.decode("utf-8")


def create_client(params: Mapping[str, Any], environ: Mapping[str, str] | None = None, retry: RetryPolicy | None = None,
                  connections: int | None = None) -> KubeClient:
    """The one client factory: module parameters (plus ``K8S_AUTH_*``) to a :class:`KubeClient`.

    ``connections``: how many requests the caller makes at once (one per node of a batch), so
    that the pool keeps that many connections open instead of opening one per request.
    """
    if not HAS_KUBERNETES:
        raise K8sError("The Python library 'kubernetes' is required: {0}".format(KUBERNETES_IMPORT_ERROR))
    auth = resolve_auth(params, os.environ if environ is None else environ)
    configuration = build_configuration(auth)
    if connections:
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, connections)
    api_client = kubernetes.client.ApiClient(configuration)
    for header, value in impersonation_headers(auth).items():
        api_client.set_default_header(header, value)
    return KubeClient(api_client, retry=retry)
