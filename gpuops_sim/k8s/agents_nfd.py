"""Node Feature Discovery as the simulator models it, and how GPU feature discovery hands it labels.

Pure functions; the agents in ``agents.py`` call them. Written from NFD v0.18 and GFD v0.19:

* GFD publishes its labels through NFD, never onto the Node: either a feature file (``--output-file``,
  default ``/etc/kubernetes/node-feature-discovery/features.d/gfd``, a hostPath mount of the pod) or,
  with ``--use-node-feature-api`` (``USE_NODE_FEATURE_API``; the default since GFD v0.19), a
  NodeFeature object ``nvidia-features-for-<node>`` in its own namespace.
* nfd-worker (a DaemonSet) reads its node's feature files (the ``local`` source) and PCI devices and
  writes the NodeFeature object ``<node>`` in its namespace; nfd-master (a Deployment) merges every
  NodeFeature of a node into its labels, adding ``feature.node.kubernetes.io/`` to unprefixed names,
  refusing ``kubernetes.io`` namespaces, and records the names it set in the node annotation
  ``nfd.node.kubernetes.io/feature-labels``: a name that is no longer published is removed.

What is not modelled: NFD's other sources (CPU, kernel, system...), NodeFeatureRules and
NodeFeatureGroups, extended resources and taints, the garbage collector (nfd-gc).
"""

from __future__ import annotations

import datetime
import posixpath
from typing import Any, Iterable, Mapping

import yaml

NFD_GROUP_VERSION = "nfd.k8s-sigs.io/v1alpha1"
NODE_NAME_LABEL = "nfd.node.kubernetes.io/node-name"
FEATURE_LABELS_ANNOTATION = "nfd.node.kubernetes.io/feature-labels"
FEATURE_LABEL_NS = "feature.node.kubernetes.io"
PROFILE_LABEL_NS = "profile.node.kubernetes.io"
FEATURES_DIR = "/etc/kubernetes/node-feature-discovery/features.d/"
GFD_OUTPUT_FILE = FEATURES_DIR + "gfd"
GFD_NODE_FEATURE_PREFIX = "nvidia-features-for-"
WORKER_CONFIG_DIR = "/etc/kubernetes/node-feature-discovery"
WORKER_CONFIG_FILE = "nfd-worker.conf"

ROLE_NFD_WORKER = "nfd-worker"
ROLE_NFD_MASTER = "nfd-master"

NVIDIA_PCI_VENDOR = "10de"
# NVIDIA's data-centre GPUs are PCI "3D controllers"; the simulated ones all are.
GPU_PCI_CLASS = "0302"
# nfd-worker's defaults for the pci source (source/pci/pci.go).
DEFAULT_PCI_CLASS_WHITELIST = ("03", "0b40", "12")
DEFAULT_PCI_LABEL_FIELDS = ("class", "vendor")
_PCI_FIELDS = ("class", "vendor", "device", "subsystem_vendor", "subsystem_device")


# --- which daemon a container is -------------------------------------------------------------

def container_role(container: Mapping[str, Any]) -> str | None:
    """nfd-worker or nfd-master (the command of NFD's image), else None."""
    words = [str(w) for w in [*(container.get("command") or []), *(container.get("args") or [])]]
    first = posixpath.basename(words[0]) if words else ""
    if first in (ROLE_NFD_WORKER, ROLE_NFD_MASTER):
        return first
    return None


def pod_roles(pod_spec: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    roles: dict[str, Mapping[str, Any]] = {}
    for container in pod_spec.get("containers") or []:
        role = container_role(container)
        if role and role not in roles:
            roles[role] = container
    return roles


# --- paths: a container's view of its node's files --------------------------------------------

def host_path(pod_spec: Mapping[str, Any], container: Mapping[str, Any], path: str) -> str | None:
    """Where ``path`` inside the container lies on the node, through the container's hostPath
    mounts (the deepest mount wins); None when no hostPath mount holds it (the container's own
    filesystem, which nothing else on the node reads)."""
    volumes = {v.get("name"): v for v in pod_spec.get("volumes") or []}
    best: tuple[int, str] | None = None
    path = posixpath.normpath(path)
    for mount in container.get("volumeMounts") or []:
        source = (volumes.get(mount.get("name")) or {}).get("hostPath")
        mount_path = posixpath.normpath(str(mount.get("mountPath") or ""))
        if not source or not mount_path:
            continue
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            rest = posixpath.relpath(path, mount_path)
            target = posixpath.normpath(posixpath.join(str(source.get("path") or "/"), rest))
            if best is None or len(mount_path) > best[0]:
                best = (len(mount_path), target)
    return best[1] if best else None


def config_map_mounted_at(pod_spec: Mapping[str, Any], container: Mapping[str, Any], directory: str) -> str | None:
    """The ConfigMap mounted at ``directory`` in the container, or None."""
    volumes = {v.get("name"): v for v in pod_spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        source = (volumes.get(mount.get("name")) or {}).get("configMap")
        if source and posixpath.normpath(str(mount.get("mountPath") or "")) == posixpath.normpath(directory):
            return str(source.get("name") or "") or None
    return None


# --- GPU feature discovery's output -----------------------------------------------------------

def _env(container: Mapping[str, Any]) -> dict[str, str]:
    return {str(e.get("name")): str(e.get("value", "")) for e in container.get("env") or [] if "value" in e}


def _bool(text: str) -> bool:
    return text.strip().lower() in ("1", "t", "true", "y", "yes", "on")


def _image_version(image: str) -> tuple[int, ...] | None:
    tag = image.split("@", 1)[0].rpartition(":")[2] if ":" in image.rsplit("/", 1)[-1] else ""
    parts = tag.lstrip("v").split("-", 1)[0].split(".")
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        return None


def _flag(container: Mapping[str, Any], names: Iterable[str], boolean: bool = False) -> str | None:
    """The value of a command-line flag (``--name=value``, ``--name value``; a bare boolean flag is
    "true"), or None when it is not given."""
    args = [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    for i, arg in enumerate(args):
        for name in names:
            dashes = "-" if len(name) == 1 else "--"
            if arg.startswith(f"{dashes}{name}="):
                return arg.split("=", 1)[1]
            if arg == f"{dashes}{name}":
                if boolean:
                    return "true"
                return args[i + 1] if i + 1 < len(args) else ""
    return None


def gfd_uses_node_feature_api(container: Mapping[str, Any], config_flags: Mapping[str, Any] | None = None) -> bool:
    """Whether this GFD container publishes NodeFeature objects: its flag or environment, else its
    config file's flags.useNodeFeatureAPI, else the default of its version (true since v0.19)."""
    flag = _flag(container, ("use-node-feature-api",), boolean=True)
    if flag is not None:
        return _bool(flag)
    env = _env(container)
    for name in ("GFD_USE_NODE_FEATURE_API", "USE_NODE_FEATURE_API"):
        if name in env:
            return _bool(env[name])
    if config_flags and config_flags.get("useNodeFeatureAPI") is not None:
        return _bool(str(config_flags["useNodeFeatureAPI"]))
    version = _image_version(str(container.get("image") or ""))
    return version is None or version >= (0, 19)


def gfd_output_file(container: Mapping[str, Any], config_flags: Mapping[str, Any] | None = None) -> str:
    """The feature file GFD writes (``--output-file``, ``GFD_OUTPUT_FILE``, flags.gfd.outputFile)."""
    flag = _flag(container, ("output-file", "output", "o"))
    if flag:
        return flag
    env = _env(container)
    if env.get("GFD_OUTPUT_FILE"):
        return env["GFD_OUTPUT_FILE"]
    configured = ((config_flags or {}).get("gfd") or {}).get("outputFile")
    return str(configured) if configured else GFD_OUTPUT_FILE


def format_feature_file(labels: Mapping[str, str]) -> str:
    """GFD's feature file: one ``name=value`` line per label."""
    return "".join(f"{key}={value}\n" for key, value in sorted(labels.items()))


def node_feature(name: str, namespace: str, node: str, labels: Mapping[str, str],
                 features: Mapping[str, Any] | None = None, owners: list[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """A NodeFeature object publishing ``labels`` (and ``features``) for ``node``."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {NODE_NAME_LABEL: node}}
    if owners:
        meta["ownerReferences"] = [dict(o) for o in owners]
    return {"apiVersion": NFD_GROUP_VERSION, "kind": "NodeFeature", "metadata": meta,
            "spec": {"features": dict(features or {"flags": {}, "attributes": {}, "instances": {}}),
                     "labels": dict(labels)}}


# --- nfd-worker -------------------------------------------------------------------------------

def parse_feature_file(text: str, now: datetime.datetime | None = None) -> dict[str, str]:
    """The labels of one feature file, as nfd-worker's local source reads it: ``name[=value]``
    lines (no value means "true"), ``#`` comments, and the directives ``# +expiry-time=<RFC 3339>``
    (later lines are ignored once expired) and ``# +no-label`` (the next line is no label)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    labels: dict[str, str] = {}
    expired = False
    skip_label = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            directive = line[len("# +"):] if line.startswith("# +") else ""
            key, _eq, value = directive.partition("=")
            if key == "expiry-time":
                try:
                    expiry = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
                    expired = expiry < now
                except ValueError:
                    pass
            elif key == "no-label":
                skip_label = True
            continue
        if expired:
            continue
        name, eq, value = line.partition("=")
        if not skip_label:
            labels[name] = value if eq else "true"
        skip_label = False
    return labels


def worker_pci_config(conf_text: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(deviceClassWhitelist, deviceLabelFields) of the pci source from nfd-worker.conf."""
    try:
        conf = yaml.safe_load(conf_text or "") or {}
    except yaml.YAMLError:
        conf = {}
    pci = ((conf.get("sources") or {}).get("pci") or {}) if isinstance(conf, dict) else {}
    classes = tuple(str(c) for c in pci.get("deviceClassWhitelist") or DEFAULT_PCI_CLASS_WHITELIST)
    fields = tuple(str(f) for f in pci.get("deviceLabelFields") or DEFAULT_PCI_LABEL_FIELDS if str(f) in _PCI_FIELDS)
    return classes, fields or DEFAULT_PCI_LABEL_FIELDS


def gpu_pci_devices(state: Mapping[str, Any]) -> list[dict[str, str]]:
    """The PCI devices (attributes as nfd-worker reads them from sysfs) of a node's GPUs."""
    devices = []
    for gpu in state.get("gpus") or []:
        device_id = int(str(gpu.get("pci_device_id") or "0"), 16) >> 16
        subsystem = int(str(gpu.get("pci_subsystem_id") or "0"), 16) if gpu.get("pci_subsystem_id") else 0
        devices.append({"class": GPU_PCI_CLASS, "vendor": NVIDIA_PCI_VENDOR, "device": f"{device_id:04x}",
                        "subsystem_vendor": f"{subsystem & 0xFFFF:04x}", "subsystem_device": f"{subsystem >> 16:04x}"})
    return devices


def pci_labels(devices: Iterable[Mapping[str, str]], classes: Iterable[str], fields: Iterable[str]) -> dict[str, str]:
    """nfd-worker's pci labels: ``pci-<field values joined by _>.present=true`` per whitelisted device."""
    classes, fields = tuple(classes), tuple(fields)
    labels = {}
    for device in devices:
        if not any(device["class"].startswith(c) for c in classes):
            continue
        labels["pci-" + "_".join(device[f] for f in fields) + ".present"] = "true"
    return labels


def worker_features(devices: Iterable[Mapping[str, str]], local_labels: Mapping[str, str]) -> dict[str, Any]:
    """The features a worker publishes with its labels (the part the simulator models)."""
    return {"flags": {},
            "attributes": {"local.label": {"elements": dict(local_labels)}},
            "instances": {"pci.device": {"elements": [{"attributes": dict(d)} for d in devices]}}}


# --- nfd-master -------------------------------------------------------------------------------

def _namespace(key: str) -> str:
    return key.split("/", 1)[0] if "/" in key else ""


def label_allowed(key: str, extra_ns: Iterable[str] = ()) -> bool:
    """nfd-master's label namespaces: kubernetes.io and k8s.io (and their subdomains) are refused
    except its own two and those listed in extraLabelNs."""
    ns = _namespace(key)
    if ns in (FEATURE_LABEL_NS, PROFILE_LABEL_NS) or ns in set(extra_ns):
        return True
    return not any(ns == d or ns.endswith("." + d) for d in ("kubernetes.io", "k8s.io"))


def _prefixed(labels: Mapping[str, str]) -> dict[str, str]:
    return {(key if "/" in key else f"{FEATURE_LABEL_NS}/{key}"): str(value) for key, value in labels.items()}


def merged_labels(node_features: Iterable[Mapping[str, Any]], master_namespace: str,
                  extra_ns: Iterable[str] = ()) -> dict[str, str]:
    """A node's labels from all its NodeFeature objects: the master's namespace first, then by name;
    a later object's label wins."""
    def order(obj: Mapping[str, Any]) -> tuple[bool, str, str]:
        meta = obj.get("metadata") or {}
        return (meta.get("namespace") != master_namespace, str(meta.get("name")), str(meta.get("namespace")))
    labels: dict[str, str] = {}
    for obj in sorted(node_features, key=order):
        labels.update(_prefixed((obj.get("spec") or {}).get("labels") or {}))
    return {k: v for k, v in labels.items() if label_allowed(k, extra_ns)}


def node_patch(node: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """The merge-patch nfd-master makes to a node for ``labels``: set what differs, remove what it set
    before and no longer publishes, and record the names in its annotation. {} when nothing changes."""
    meta = node.get("metadata") or {}
    current = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    old = {(k if "/" in k else f"{FEATURE_LABEL_NS}/{k}")
           for k in str(annotations.get(FEATURE_LABELS_ANNOTATION) or "").split(",") if k}
    label_patch: dict[str, Any] = {k: v for k, v in labels.items() if current.get(k) != v}
    for key in old - set(labels):
        if key in current:
            label_patch[key] = None
    names = ",".join(sorted(k[len(FEATURE_LABEL_NS) + 1:] if k.startswith(FEATURE_LABEL_NS + "/") else k for k in labels))
    patch: dict[str, Any] = {}
    if label_patch:
        patch["labels"] = label_patch
    if (names or None) != annotations.get(FEATURE_LABELS_ANNOTATION):
        patch["annotations"] = {FEATURE_LABELS_ANNOTATION: names or None}
    return {"metadata": patch} if patch else {}


def master_extra_label_ns(conf_text: str | None) -> tuple[str, ...]:
    try:
        conf = yaml.safe_load(conf_text or "") or {}
    except yaml.YAMLError:
        return ()
    return tuple(str(n) for n in (conf.get("extraLabelNs") or [])) if isinstance(conf, dict) else ()
