# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ansible-rulebook event source: one event per batch of pods that cannot be scheduled for want of GPUs.

Watches the pods of a Kubernetes cluster (list, then watch from the list's resourceVersion; a new
list when the server answers 410 Gone; a bounded backoff after errors) and keeps the pods that are
Pending, unbound, marked Unschedulable by the scheduler, not a DaemonSet's, and that request
``nvidia.com/gpu`` or ``nvidia.com/mig-*`` devices. As nos batches its pending pods, the first such
pod opens a settle window; at its end one event lists every pod pending then. A pod is not listed
again until its GPU requests change (a new pod of the same name counts as new) or ``refire_interval``
passes while it is still pending.

The batching (:class:`PendingBatcher`) and the reading of pod objects (:func:`gpu_pending_pod`) are
pure, so that they can be tested without a cluster; ``main`` wires them to the Kubernetes client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

DOCUMENTATION = r"""
---
short_description: Batched events for pods that cannot be scheduled for want of NVIDIA GPU or MIG devices.
description:
  - Watches the pods of a Kubernetes cluster and emits one event per settle window listing the pods
    that are Pending, unbound, marked C(Unschedulable) by the scheduler, not owned by a DaemonSet,
    and that request C(nvidia.com/gpu) or C(nvidia.com/mig-*) resources.
  - The first such pod opens the window; at its end one event lists every such pod still pending. A
    pod is listed again only when its GPU requests change or O(refire_interval) passes.
  - Uses the kubernetes Python client. TLS certificates are verified unless O(validate_certs=false).
options:
  kubeconfig:
    description: Path of a kubeconfig file. Without it and without O(host), the client's defaults
      apply (E(KUBECONFIG), C(~/.kube/config), then the in-cluster service account).
    type: str
  context:
    description: The kubeconfig context to use.
    type: str
  host:
    description: URL of the Kubernetes API server, instead of a kubeconfig.
    type: str
  api_key:
    description: Bearer token for O(host).
    type: str
  ca_cert:
    description: CA bundle that signs the API server's certificate.
    type: str
  validate_certs:
    description: Verify the API server's TLS certificate.
    type: bool
    default: true
  namespace:
    description: Watch only this namespace. All namespaces by default.
    type: str
  label_selector:
    description: Watch only the pods that match this label selector.
    type: str
  window:
    description: Seconds from the first pending GPU pod to the event that lists the batch.
    type: float
    default: 10
  refire_interval:
    description: Seconds after which a pod that is still pending is listed again.
    type: float
    default: 300
  watch_timeout:
    description: Seconds a watch request stays open before the next one resumes it.
    type: int
    default: 300
  max_backoff:
    description: Longest wait, in seconds, between retries after errors (the wait doubles from 1 s).
    type: float
    default: 30
"""

EXAMPLES = r"""
- name: Partition MIG devices from demand
  hosts: all
  sources:
    - gpuops.nvidia.gpu_pending_pods:
        kubeconfig: /etc/gpuops/kubeconfig
        window: 15
  rules:
    - name: Run the demand planner for the batch
      condition: event.type == "gpu_pending_pods"
      action:
        run_playbook:
          name: gpuops.nvidia.mig_demand
"""

LOGGER = logging.getLogger("gpuops.nvidia.gpu_pending_pods")

EVENT_TYPE = "gpu_pending_pods"
GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"

# (uid, sorted GPU requests): what identifies one demand of a pod.
Fingerprint = Tuple[str, Tuple[Tuple[str, int], ...]]


class SettingsError(ValueError):
    """An option of the event source is invalid."""


def _count(quantity: Any) -> int:
    """A device count from a resource quantity; 0 for anything that is not a whole number."""
    if isinstance(quantity, bool):
        return 0
    if isinstance(quantity, int):
        return max(quantity, 0)
    try:
        return max(int(str(quantity).strip()), 0)
    except ValueError:
        return 0


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> List[Any]:
    return value if isinstance(value, list) else []


def gpu_requests(pod: Any) -> Dict[str, int]:
    """The pod's ``nvidia.com/gpu`` and ``nvidia.com/mig-*`` requests (limits, else requests), summed
    over its containers; an init container runs alone, so the largest of those counts too."""
    spec = _mapping(_mapping(pod).get("spec"))

    def asked(container: Any) -> Dict[str, int]:
        resources = _mapping(_mapping(container).get("resources"))
        merged = dict(_mapping(resources.get("requests")))
        merged.update(_mapping(resources.get("limits")))
        return {str(name): _count(quantity) for name, quantity in merged.items()
                if isinstance(name, str) and (name == GPU_RESOURCE or name.startswith(MIG_RESOURCE_PREFIX))}

    total: Dict[str, int] = {}
    for container in _list(spec.get("containers")):
        for name, count in asked(container).items():
            total[name] = total.get(name, 0) + count
    for container in _list(spec.get("initContainers")):
        for name, count in asked(container).items():
            total[name] = max(total.get(name, 0), count)
    return {name: count for name, count in total.items() if count > 0}


def _unschedulable(pod: Mapping[str, Any]) -> bool:
    """Pending, unbound, marked Unschedulable by the scheduler, and not a DaemonSet's pod."""
    status = _mapping(pod.get("status"))
    if status.get("phase") != "Pending" or _mapping(pod.get("spec")).get("nodeName"):
        return False
    meta = _mapping(pod.get("metadata"))
    if meta.get("deletionTimestamp"):
        return False
    if any(_mapping(owner).get("kind") == "DaemonSet" for owner in _list(meta.get("ownerReferences"))):
        return False
    return any(_mapping(c).get("type") == "PodScheduled" and _mapping(c).get("status") == "False"
               and _mapping(c).get("reason") == "Unschedulable" for c in _list(status.get("conditions")))


def pod_key(pod: Any) -> Optional[str]:
    """``namespace/name`` of a pod object; None when it has no name."""
    meta = _mapping(_mapping(pod).get("metadata"))
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    if not isinstance(name, str) or not name or not isinstance(namespace, str):
        return None
    return "%s/%s" % (namespace, name)


@dataclass(frozen=True)
class PendingGpuPod:
    key: str
    uid: str
    requests: Tuple[Tuple[str, int], ...]

    @property
    def fingerprint(self) -> Fingerprint:
        return (self.uid, self.requests)

    def as_event(self) -> Dict[str, Any]:
        namespace, name = self.key.split("/", 1)
        return {"namespace": namespace, "name": name, "uid": self.uid, "requests": dict(self.requests)}


def gpu_pending_pod(pod: Any) -> Optional[PendingGpuPod]:
    """The pod as a pending GPU pod, or None: not a pod, not unschedulable, or no GPU request."""
    if not isinstance(pod, Mapping):
        return None
    key = pod_key(pod)
    if key is None or not _unschedulable(pod):
        return None
    requests = gpu_requests(pod)
    if not requests:
        return None
    uid = _mapping(pod.get("metadata")).get("uid")
    return PendingGpuPod(key, uid if isinstance(uid, str) else "", tuple(sorted(requests.items())))


@dataclass
class PendingBatcher:
    """Batches pending GPU pods into one event per settle window.

    Feed it what the cluster says (:meth:`seen` for an added or modified pod, :meth:`gone` for a
    deleted one, :meth:`replace` after a full list) with the current monotonic time; ask
    :meth:`fire` for the event when :meth:`deadline` has come.
    """

    window: float
    refire_interval: float
    pending: Dict[str, PendingGpuPod] = field(default_factory=dict)
    fired: Dict[str, Tuple[Fingerprint, float]] = field(default_factory=dict)
    opened: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("window", "refire_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise SettingsError("%s: expected a number of seconds >= 0, got %r" % (name, value))

    def _due(self, pod: PendingGpuPod, now: float) -> bool:
        last = self.fired.get(pod.key)
        return last is None or last[0] != pod.fingerprint or now - last[1] >= self.refire_interval

    def _open(self, now: float) -> None:
        if self.opened is None and any(self._due(pod, now) for pod in self.pending.values()):
            self.opened = now

    def seen(self, pod: Any, now: float) -> None:
        """A pod was added or changed: track it while it is a pending GPU pod, forget it otherwise."""
        key = pod_key(pod)
        if key is None:
            return
        pending = gpu_pending_pod(pod)
        if pending is None:
            self.gone(key)
            return
        self.pending[key] = pending
        self._open(now)

    def gone(self, key: str) -> None:
        """A pod was deleted, scheduled or no longer asks for GPUs: a later pending pod of that name is new."""
        self.pending.pop(key, None)
        self.fired.pop(key, None)

    def replace(self, pods: Any, now: float) -> None:
        """A full list of the cluster's pods: the pending set becomes exactly what it holds."""
        current: Dict[str, PendingGpuPod] = {}
        for pod in _list(pods):
            pending = gpu_pending_pod(pod)
            if pending is not None:
                current[pending.key] = pending
        for key in list(self.pending):
            if key not in current:
                self.gone(key)
        self.pending = current
        self._open(now)

    def deadline(self, now: float) -> Optional[float]:
        """When :meth:`fire` has something to do next: the end of the open window, or when a fired pod
        becomes due again; None when nothing is pending."""
        self._open(now)
        if self.opened is not None:
            return self.opened + self.window
        refires = [self.fired[key][1] + self.refire_interval for key in self.pending if key in self.fired]
        return min(refires) if refires else None

    def fire(self, now: float) -> Optional[Dict[str, Any]]:
        """The event for the batch when the window has ended and some pod is due; None otherwise."""
        self._open(now)
        if self.opened is None or now < self.opened + self.window:
            return None
        self.opened = None
        due = [pod for key, pod in sorted(self.pending.items()) if self._due(pod, now)]
        if not due:
            return None
        for pod in due:
            self.fired[pod.key] = (pod.fingerprint, now)
        totals: Dict[str, int] = {}
        for pod in due:
            for name, count in pod.requests:
                totals[name] = totals.get(name, 0) + count
        return {"type": EVENT_TYPE, "pods": [pod.as_event() for pod in due],
                "requests": dict(sorted(totals.items())), "window": self.window}


@dataclass(frozen=True)
class Settings:
    kubeconfig: Optional[str] = None
    context: Optional[str] = None
    host: Optional[str] = None
    api_key: Optional[str] = None
    ca_cert: Optional[str] = None
    validate_certs: bool = True
    namespace: Optional[str] = None
    label_selector: Optional[str] = None
    window: float = 10.0
    refire_interval: float = 300.0
    watch_timeout: int = 300
    max_backoff: float = 30.0


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def parse_settings(args: Any) -> Settings:
    """The source's options, checked; an unknown option or a bad value names the option and the value."""
    args = dict(_mapping(args))
    known = Settings.__dataclass_fields__  # pylint: disable=no-member
    unknown = sorted(str(name) for name in args if name not in known)
    if unknown:
        raise SettingsError("unknown options: %s (known: %s)" % (", ".join(unknown), ", ".join(sorted(known))))
    values: Dict[str, Any] = {}
    for name, value in args.items():
        if value is None or value == "":
            continue
        default = known[name].default
        if isinstance(default, bool):
            word = str(value).strip().lower()
            if isinstance(value, bool):
                values[name] = value
            elif word in _BOOL_WORDS:
                values[name] = _BOOL_WORDS[word]
            else:
                raise SettingsError("%s: expected a boolean, got %r" % (name, value))
        elif isinstance(default, (int, float)):
            try:
                number = float(value) if not isinstance(value, bool) else -1.0
            except (TypeError, ValueError):
                number = -1.0
            if not math.isfinite(number) or number < 0 or (name in ("watch_timeout", "max_backoff") and number <= 0):
                raise SettingsError("%s: expected a number of seconds%s, got %r"
                                    % (name, " > 0" if name in ("watch_timeout", "max_backoff") else " >= 0", value))
            values[name] = max(int(number), 1) if isinstance(default, int) else number
        else:
            if not isinstance(value, str):
                raise SettingsError("%s: expected a string, got %r" % (name, value))
            values[name] = value
    return Settings(**values)


def api_client(settings: Settings) -> Any:
    """A kubernetes ApiClient from a kubeconfig, a host and token, or the in-cluster service account."""
    from kubernetes import client, config  # pylint: disable=import-outside-toplevel

    if settings.host:
        configuration = client.Configuration()
        configuration.host = settings.host
        if settings.api_key:
            configuration.api_key = {"authorization": "Bearer " + settings.api_key}
    else:
        configuration = client.Configuration()
        try:
            config.load_kube_config(config_file=settings.kubeconfig, context=settings.context,
                                    client_configuration=configuration)
        except config.ConfigException:
            if settings.kubeconfig or settings.context:
                raise
            config.load_incluster_config(client_configuration=configuration)
    if settings.ca_cert:
        configuration.ssl_ca_cert = settings.ca_cert
    configuration.verify_ssl = settings.validate_certs
    return client.ApiClient(configuration)


def core_api(settings: Settings) -> Any:
    """The CoreV1Api the source reads pods with."""
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    return client.CoreV1Api(api_client(settings))


class Gone(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


def _lines(response: Any) -> Any:
    """The newline-separated JSON documents of a streamed watch response."""
    buffered = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffered += chunk
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            if line.strip():
                yield line
    if buffered.strip():
        yield buffered


def watch_pods(settings: Settings, report: Callable[[str, Any], None], stop: threading.Event,
               make_api: Callable[[Settings], Any] = core_api) -> None:
    """List and watch pods until ``stop`` is set; ``report(kind, payload)`` with kind ``list`` (the
    pod objects) or ``ADDED``/``MODIFIED``/``DELETED`` (one pod object). Runs in its own thread."""
    from kubernetes.client.rest import ApiException  # pylint: disable=import-outside-toplevel

    backoff = 1.0
    api = None
    resource_version = None
    while not stop.is_set():
        try:
            if api is None:
                api = make_api(settings)
            common: Dict[str, Any] = {"_preload_content": False}
            if settings.label_selector:
                common["label_selector"] = settings.label_selector

            def call(**kwargs: Any) -> Any:
                if settings.namespace:
                    return api.list_namespaced_pod(settings.namespace, **common, **kwargs)
                return api.list_pod_for_all_namespaces(**common, **kwargs)

            if resource_version is None:
                listed = json.loads(call(_request_timeout=60).data)
                resource_version = _mapping(_mapping(listed).get("metadata")).get("resourceVersion")
                if not resource_version:
                    raise ValueError("the pod list has no resourceVersion")
                report("list", _list(_mapping(listed).get("items")))
                backoff = 1.0
            response = call(watch=True, resource_version=resource_version, allow_watch_bookmarks=True,
                            timeout_seconds=settings.watch_timeout, _request_timeout=settings.watch_timeout + 30)
            try:
                for line in _lines(response):
                    if stop.is_set():
                        return
                    event = json.loads(line)
                    kind, obj = _mapping(event).get("type"), _mapping(_mapping(event).get("object"))
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise Gone()
                        raise ValueError("watch error: %s" % json.dumps(obj)[:300])
                    version = _mapping(obj.get("metadata")).get("resourceVersion")
                    if version:
                        resource_version = version
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        report(kind, obj)
                    backoff = 1.0
            finally:
                response.release_conn()
        except Gone:
            LOGGER.info("the pod watch's resourceVersion is too old: listing the pods again")
            resource_version = None
        except ApiException as error:
            if error.status == 410:
                resource_version = None
                continue
            LOGGER.warning("reading pods failed (retry in %.0f s): %s %s", backoff, error.status, error.reason)
            stop.wait(backoff)
            backoff = min(backoff * 2, settings.max_backoff)
        except Exception as error:  # pylint: disable=broad-except  # the source must outlive a bad connection or answer
            LOGGER.warning("reading pods failed (retry in %.0f s): %s", backoff, error)
            resource_version = None
            stop.wait(backoff)
            backoff = min(backoff * 2, settings.max_backoff)


def apply_change(batcher: PendingBatcher, kind: str, payload: Any, now: float) -> None:
    """One report of :func:`watch_pods` into the batcher."""
    if kind == "list":
        batcher.replace(payload, now)
    elif kind == "DELETED":
        key = pod_key(payload)
        if key is not None:
            batcher.gone(key)
    else:
        batcher.seen(payload, now)


async def main(queue: asyncio.Queue, args: Dict[str, Any]) -> None:
    """The ansible-rulebook entry point."""
    settings = parse_settings(args)
    batcher = PendingBatcher(settings.window, settings.refire_interval)
    loop = asyncio.get_running_loop()
    changes: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def report(kind: str, payload: Any) -> None:
        loop.call_soon_threadsafe(changes.put_nowait, (kind, payload))

    watcher = threading.Thread(target=watch_pods, args=(settings, report, stop), name="gpu_pending_pods", daemon=True)
    watcher.start()
    try:
        while True:
            now = time.monotonic()
            deadline = batcher.deadline(now)
            try:
                if deadline is None:
                    change = await changes.get()
                else:
                    change = await asyncio.wait_for(changes.get(), max(deadline - now, 0.0))
            except asyncio.TimeoutError:
                change = None
            if change is not None:
                apply_change(batcher, change[0], change[1], time.monotonic())
            event = batcher.fire(time.monotonic())
            if event is not None:
                await queue.put(event)
    finally:
        stop.set()


if __name__ == "__main__":
    # Print the events for a cluster: python gpu_pending_pods.py [KUBECONFIG]

    class _Printer:
        async def put(self, event: Any) -> None:
            print(json.dumps(event), flush=True)

    import sys  # pylint: disable=import-outside-toplevel
    asyncio.run(main(_Printer(), {"kubeconfig": sys.argv[1] if len(sys.argv) > 1 else None, "window": 5}))  # type: ignore[arg-type]
