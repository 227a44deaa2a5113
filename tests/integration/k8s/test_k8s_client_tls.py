# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The client's requests over TLS: the server certificate is verified against the given CA, the
bearer token and the impersonation header are sent, and an API error keeps status, body and
Retry-After. A small HTTPS server stands in for the API (the emulator speaks plain HTTP)."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError, RetryPolicy, create_client, is_retryable

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")

NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-node-1", "labels": {}}}


class Handler(BaseHTTPRequestHandler):
    seen: list = []

    def _answer(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's name
        Handler.seen.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
        if self.path == "/api/v1/nodes/gpu-node-1":
            self._answer(200, NODE)
        else:
            self._answer(429, {"kind": "Status", "reason": "TooManyRequests", "message": "slow down"}, [("Retry-After", "7")])

    def do_PATCH(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.seen.append({"method": "PATCH", "path": self.path, "headers": dict(self.headers), "body": body})
        self._answer(200, dict(NODE, metadata=dict(NODE["metadata"], labels=body["metadata"]["labels"])))

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "https://127.0.0.1:%d" % httpd.server_address[1], cert
    httpd.shutdown()


def client(url, **params):
    no_retry = RetryPolicy(sleep=lambda _: None)
    return create_client(dict({"host": url, "api_key": "s3cret"}, **params), environ={}, retry=no_retry)


def test_a_server_certificate_from_the_given_ca_is_accepted_and_credentials_are_sent(server):
    url, cert = server
    Handler.seen.clear()
    kube = client(url, ca_cert=str(cert), impersonate_user="alice")
    assert kube.read_node("gpu-node-1")["metadata"]["name"] == "gpu-node-1"
    patched = kube.patch_node("gpu-node-1", {"metadata": {"labels": {"a": "b"}}})
    assert patched["metadata"]["labels"] == {"a": "b"}
    get, patch = Handler.seen
    assert get["headers"]["authorization"] == "Bearer s3cret" and get["headers"]["Impersonate-User"] == "alice"
    assert get["headers"]["User-Agent"] == "gpuops.nvidia"
    assert patch["headers"]["Content-Type"] == "application/merge-patch+json"


def test_an_unknown_certificate_is_refused_and_not_retried(server):
    kube = client(server[0])
    with pytest.raises(Exception) as raised:
        kube.read_node("gpu-node-1")
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
    assert not is_retryable(raised.value)


def test_an_api_error_keeps_status_body_and_retry_after(server):
    url, cert = server
    kube = client(url, ca_cert=str(cert))
    policy = RetryPolicy(sleep=lambda _: None)
    with pytest.raises(K8sError) as raised:
        policy.run(kube.list_nodes, policy.deadline(0), "list nodes")
    assert raised.value.details["status"] == 429 and "slow down" in str(raised.value)
    with pytest.raises(Exception) as direct:
        kube.list_nodes()
    error = direct.value
    assert error.status == 429 and json.loads(error.body)["reason"] == "TooManyRequests"
    assert policy.delay(1, error, policy.deadline(60)) == 7.0
