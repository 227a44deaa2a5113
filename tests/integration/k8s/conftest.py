# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The API emulator in-process (one per xdist worker), reset before each test, plus seeding helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parents[3]

try:
    from gpuops_sim.k8s import Emulator
except ImportError:  # the emulator is being written alongside; until then these tests skip
    Emulator = None


@pytest.fixture(scope="session")
def emulator() -> Iterator[Any]:
    if Emulator is None:
        pytest.skip("the API emulator gpuops_sim.k8s.Emulator is not available")
    server = Emulator()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kube(emulator: Any, tmp_path: Path) -> "KubeEnv":
    emulator.reset()
    kubeconfig = tmp_path / "kubeconfig"
    emulator.write_kubeconfig(str(kubeconfig))
    return KubeEnv(emulator, kubeconfig)


class KubeEnv:
    """Seeds objects through the real client and reads the emulator's request log."""

    def __init__(self, emulator: Any, kubeconfig: Path) -> None:
        from kubernetes import client, config

        self.emulator = emulator
        self.kubeconfig = kubeconfig
        self.api_client = config.new_client_from_config(str(kubeconfig))
        self.core = client.CoreV1Api(self.api_client)
        self.policy = client.PolicyV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)

    # -- product client --------------------------------------------------------------------------

    def product_client(self, **retry: Any) -> Any:
        from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import RetryPolicy, create_client

        policy = RetryPolicy(initial_delay=retry.pop("initial_delay", 0.02), max_delay=retry.pop("max_delay", 0.2), **retry)
        return create_client({"kubeconfig": str(self.kubeconfig)}, environ={}, retry=policy)

    # -- seeding ---------------------------------------------------------------------------------

    def node(self, name: str = "gpu-node-1", labels: dict[str, str] | None = None, taints: list[dict[str, Any]] | None = None,
             unschedulable: bool = False, allocatable: dict[str, str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": dict(labels or {"kubernetes.io/hostname": name})},
            "spec": {},
            "status": {
                "allocatable": dict(allocatable or {"cpu": "8"}),
                "capacity": dict(allocatable or {"cpu": "8"}),
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready"}],
            },
        }
        if taints:
            body["spec"]["taints"] = taints
        if unschedulable:
            body["spec"]["unschedulable"] = True
        created = self.api_client.sanitize_for_serialization(self.core.create_node(body))
        # Status is a subresource on a real server; write it there too so both behaviours work.
        try:
            self.core.patch_node_status(name, {"status": body["status"]})
        except Exception:  # noqa: BLE001 - an emulator that stores status on create is fine too
            pass
        return created

    def pod(self, name: str, namespace: str = "default", node: str = "gpu-node-1", gpus: dict[str, str] | None = None,
            labels: dict[str, str] | None = None, owner_kind: str | None = "ReplicaSet",
            annotations: dict[str, str] | None = None, node_selector: dict[str, str] | None = None) -> dict[str, Any]:
        container: dict[str, Any] = {"name": "main", "image": "busybox"}
        if gpus:
            container["resources"] = {"limits": dict(gpus), "requests": dict(gpus)}
        metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels or {"app": name})}
        if annotations:
            metadata["annotations"] = dict(annotations)
        if owner_kind:
            metadata["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner_kind, "name": name + "-owner",
                                            "uid": "00000000-0000-0000-0000-000000000001", "controller": True}]
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {"nodeName": node, "containers": [container]}}
        if node_selector:
            body["spec"]["nodeSelector"] = dict(node_selector)
        self.namespace(namespace)
        created = self.api_client.sanitize_for_serialization(self.core.create_namespaced_pod(namespace, body))
        # Running and Ready, as a kubelet would report it: only such pods count for a PodDisruptionBudget.
        status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        self.core.patch_namespaced_pod_status(name, namespace, {"status": status})
        return created

    def namespace(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        except ApiException as error:
            if error.status != 409:
                raise

    def pdb(self, name: str, match_labels: dict[str, str], namespace: str = "default", max_unavailable: int = 0) -> None:
        body = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name, "namespace": namespace},
                "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": dict(match_labels)}}}
        self.policy.create_namespaced_pod_disruption_budget(namespace, body)

    # -- reading ---------------------------------------------------------------------------------

    def read_node(self, name: str = "gpu-node-1") -> dict[str, Any]:
        return self.api_client.sanitize_for_serialization(self.core.read_node(name))

    def pod_names(self, node: str = "gpu-node-1") -> list[str]:
        pods = self.core.list_pod_for_all_namespaces(field_selector="spec.nodeName=" + node).items
        return sorted("{0}/{1}".format(p.metadata.namespace, p.metadata.name) for p in pods)

    def requests(self, **match: Any) -> list[dict[str, Any]]:
        records = self.emulator.requests
        if isinstance(records, dict):
            records = records.get("items", [])
        return [r for r in records if all(r.get(k) == v for k, v in match.items())]

    def clear_requests(self) -> None:
        clear = getattr(self.emulator, "clear_requests", None)
        if clear is not None:
            clear()
        else:
            import urllib.request

            urllib.request.urlopen(urllib.request.Request(self.emulator.url + "/_sim/requests", method="DELETE")).read()
