"""The kubelet of a simulated node, as the API server sees it across a reboot.

Going down, the kubelet's pods die with the node: they are deleted by the kubelet (requests with
the kubelet's user agent in the emulator's request log, not evictions), and the node turns
NotReady. Coming up, the node turns Ready again; the cluster's agents start the node's pods once
it is (see gpuops_sim/k8s/agents.py). Requests go to the API server named in the node's
kubeconfig, over HTTP, as a real kubelet's would.
"""

from __future__ import annotations

import datetime
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import yaml

from gpuops_sim.node import systemd

USER_AGENT = "kubelet/v1.30.0 (linux/amd64) gpuops-sim"


class Api:
    """Enough of a Kubernetes client for a kubelet: token auth, JSON, merge patches."""

    def __init__(self, kubeconfig: str, node: str) -> None:
        with open(kubeconfig, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
        self.server = config["clusters"][0]["cluster"]["server"].rstrip("/")
        self.token = config["users"][0]["user"].get("token")
        self.user_agent = f"{USER_AGENT} node/{node}"

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("User-Agent", self.user_agent)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", content_type)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_ready(api: Api, node: str, ready: bool, reason: str, message: str) -> None:
    """Post the node's Ready condition (the other conditions are kept)."""
    current = api.call("GET", f"/api/v1/nodes/{node}")
    conditions = [c for c in (current.get("status") or {}).get("conditions") or [] if c.get("type") != "Ready"]
    conditions.append({"type": "Ready", "status": "True" if ready else "False", "reason": reason, "message": message,
                       "lastHeartbeatTime": _now(), "lastTransitionTime": _now()})
    api.call("PATCH", f"/api/v1/nodes/{node}/status", {"status": {"conditions": conditions}},
             content_type="application/merge-patch+json")


def pods_on(api: Api, node: str) -> list[dict[str, Any]]:
    selector = urllib.parse.quote(f"spec.nodeName={node}")
    return api.call("GET", f"/api/v1/pods?fieldSelector={selector}").get("items") or []


def shut_down(path: str) -> list[str]:
    """The kubelet goes down with the node: NotReady, and every pod on it deleted. Returns the pods."""
    settings = systemd.host(path)
    if not settings.get("kubeconfig"):
        raise ValueError(f"{path}: not a node of a simulated cluster (`cluster up` describes its host); "
                         "`nvml reboot` reboots the GPUs of a lone state file")
    api = Api(settings["kubeconfig"], settings["node"])
    node = settings["node"]
    set_ready(api, node, False, "KubeletNotReady", "node is shutting down for a reboot")
    killed = []
    for pod in pods_on(api, node):
        meta = pod.get("metadata") or {}
        try:
            api.call("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                     {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
        killed.append(f"{meta['namespace']}/{meta['name']}")
    _record(path, "inactive")
    return killed


def bring_up(path: str, up: bool, reason: str) -> None:
    """The kubelet unit started (``up``), or could not start: then the node stays NotReady, saying why."""
    settings = systemd.host(path)
    api = Api(settings["kubeconfig"], settings["node"])
    if up:
        set_ready(api, settings["node"], True, "KubeletReady", "kubelet is posting ready status")
    else:
        set_ready(api, settings["node"], False, "KubeletNotReady",
                  f"{settings.get('kubelet_unit') or systemd.DEFAULT_KUBELET_UNIT} did not start: {reason}")
    _record(path, "active" if up else "inactive")


def _record(path: str, active: str) -> None:
    from gpuops_sim.nvml import state as nvml_state  # pylint: disable=import-outside-toplevel
    with nvml_state.transaction(path) as current:
        current.setdefault("host", {})["kubelet"] = active
