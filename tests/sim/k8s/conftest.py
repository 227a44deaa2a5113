"""Shared fixtures for the API emulator tests: one emulator per xdist worker, reset before each test."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from gpuops_sim.k8s import Emulator


@pytest.fixture(scope="session")
def emulator_session() -> Iterator[Emulator]:
    server = Emulator().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def emulator(emulator_session: Emulator) -> Emulator:
    """A running emulator holding only the default namespaces, with no faults and an empty log."""
    emulator_session.reset()
    return emulator_session


@pytest.fixture
def kubeconfig(emulator: Emulator, tmp_path: Path) -> str:
    return emulator.write_kubeconfig(str(tmp_path / "kubeconfig"))


@pytest.fixture
def api_client(kubeconfig: str) -> Iterator[Any]:
    from kubernetes import config

    client = config.new_client_from_config(kubeconfig)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def core(api_client: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client)


@pytest.fixture
def policy(api_client: Any) -> Any:
    from kubernetes import client

    return client.PolicyV1Api(api_client)


@pytest.fixture
def apps(api_client: Any) -> Any:
    from kubernetes import client

    return client.AppsV1Api(api_client)


@pytest.fixture
def node_body() -> Any:
    """Builds a Ready node manifest."""
    return _node_body


@pytest.fixture
def pod_body() -> Any:
    """Builds a pod manifest (Running and Ready unless running=False)."""
    return _pod_body


def _node_body(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": dict(labels or {})}, "spec": spec,
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def _pod_body(name: str, node: str | None = "node-1", labels: dict[str, str] | None = None,
              running: bool = True, **metadata: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": name, "labels": dict(labels or {}), **metadata},
                            "spec": {"containers": [{"name": "main", "image": "busybox"}]}}
    if node:
        body["spec"]["nodeName"] = node
    if running:
        body["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    return body
