"""The resource types the emulator serves and the discovery documents describing them.

``ResourceType`` is one REST resource (group, version, plural, kind, scope, subresources).
``Registry`` holds the built-in types plus those that CustomResourceDefinitions add, and renders
``/api``, ``/apis``, ``/api/v1``, ``/apis/<group>/<version>`` (legacy discovery, which kubectl
and the dynamic client use when aggregated discovery is not offered).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = {
    "status": ("get", "patch", "update"),
    "scale": ("get", "patch", "update"),
    "eviction": ("create",),
    "binding": ("create",),
    "log": ("get",),
    "token": ("create",),
    "finalize": ("update",),
    "proxy": ("create", "delete", "get", "patch", "update"),
}
SUBRESOURCE_KINDS = {"eviction": ("policy", "v1", "Eviction"), "binding": ("", "v1", "Binding"),
                     "scale": ("autoscaling", "v1", "Scale"), "token": ("authentication.k8s.io", "v1", "TokenRequest"),
                     "proxy": ("", "v1", "NodeProxyOptions")}


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # field selectors beyond metadata.name / metadata.namespace
    fields: tuple[str, ...] = ()
    crd: bool = field(default=False, compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group_resource(self) -> str:
        """How error messages name the resource: ``pods``, ``daemonsets.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self) -> str:
        return self.group_resource

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def field_selectors(self) -> tuple[str, ...]:
        return ("metadata.name", "metadata.namespace") + self.fields


def _rt(group: str, version: str, plural: str, kind: str, namespaced: bool = True, sub: tuple[str, ...] = (),
        short: tuple[str, ...] = (), fields: tuple[str, ...] = (), categories: tuple[str, ...] = ()) -> ResourceType:
    return ResourceType(group, version, plural, kind, namespaced, sub, short, categories, fields)


_ALL = ("all",)
BUILTIN: tuple[ResourceType, ...] = (
    _rt("", "v1", "namespaces", "Namespace", False, ("status", "finalize"), ("ns",), ("status.phase",)),
    _rt("", "v1", "nodes", "Node", False, ("status", "proxy"), ("no",), ("spec.unschedulable",)),
    _rt("", "v1", "pods", "Pod", True, ("status", "eviction", "binding", "log"), ("po",),
        ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork",
         "status.phase", "status.podIP", "status.nominatedNodeName"), _ALL),
    _rt("", "v1", "services", "Service", True, ("status",), ("svc",), ("spec.clusterIP", "spec.type"), _ALL),
    _rt("", "v1", "endpoints", "Endpoints", True, (), ("ep",)),
    _rt("", "v1", "configmaps", "ConfigMap", True, (), ("cm",)),
    _rt("", "v1", "secrets", "Secret", True, (), (), ("type",)),
    _rt("", "v1", "serviceaccounts", "ServiceAccount", True, ("token",), ("sa",)),
    _rt("", "v1", "events", "Event", True, (), ("ev",),
        ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
         "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
         "reportingComponent", "source", "type")),
    _rt("", "v1", "persistentvolumes", "PersistentVolume", False, ("status",), ("pv",)),
    _rt("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("status",), ("pvc",)),
    _rt("", "v1", "resourcequotas", "ResourceQuota", True, ("status",), ("quota",)),
    _rt("", "v1", "limitranges", "LimitRange", True, (), ("limits",)),
    _rt("", "v1", "replicationcontrollers", "ReplicationController", True, ("status", "scale"), ("rc",), (), _ALL),
    _rt("apps", "v1", "daemonsets", "DaemonSet", True, ("status",), ("ds",), (), _ALL),
    _rt("apps", "v1", "deployments", "Deployment", True, ("status", "scale"), ("deploy",), (), _ALL),
    _rt("apps", "v1", "replicasets", "ReplicaSet", True, ("status", "scale"), ("rs",), (), _ALL),
    _rt("apps", "v1", "statefulsets", "StatefulSet", True, ("status", "scale"), ("sts",), (), _ALL),
    _rt("apps", "v1", "controllerrevisions", "ControllerRevision", True),
    _rt("batch", "v1", "jobs", "Job", True, ("status",), (), ("status.successful",), _ALL),
    _rt("batch", "v1", "cronjobs", "CronJob", True, ("status",), ("cj",), (), _ALL),
    _rt("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("status",), ("pdb",)),
    _rt("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _rt("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    _rt("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _rt("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _rt("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False, ("status",),
        ("crd", "crds")),
    _rt("coordination.k8s.io", "v1", "leases", "Lease", True),
    _rt("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, (), ("sc",)),
    _rt("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, (), ("pc",)),
    _rt("node.k8s.io", "v1", "runtimeclasses", "RuntimeClass", False),
    _rt("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, (), ("netpol",)),
    _rt("events.k8s.io", "v1", "events", "Event", True, (), ("ev",)),
    _rt("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", False),
    _rt("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False),
)


def crd_resource_types(crd: dict[str, Any]) -> list[ResourceType]:
    """The served versions of a CustomResourceDefinition."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    types = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        sub = tuple(name for name in ("status", "scale") if name in (version.get("subresources") or {}))
        types.append(ResourceType(spec.get("group", ""), version.get("name", "v1"), names.get("plural", ""),
                                  names.get("kind", ""), spec.get("scope", "Namespaced") == "Namespaced", sub,
                                  tuple(names.get("shortNames") or ()), tuple(names.get("categories") or ()),
                                  crd=True))
    return types


class Registry:
    """Thread-safe lookup of resource types by URL coordinates or by loose name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._types: list[ResourceType] = list(BUILTIN)
        self._index()

    def _index(self) -> None:
        self._by_path = {(t.group, t.version, t.plural): t for t in self._types}
        loose: dict[str, ResourceType] = {}
        # core types win for bare plural names ("events" means v1 events)
        for t in sorted(self._types, key=lambda t: (t.group != "", t.crd)):
            for name in (t.plural, t.group_resource, f"{t.api_version}/{t.plural}", t.kind, t.kind.lower()):
                loose.setdefault(name, t)
        self._loose = loose

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def resolve(self, name: str) -> ResourceType:
        """``pods``, ``daemonsets.apps``, ``apps/v1/daemonsets``, ``v1/pods`` or a kind."""
        found = self._loose.get(name)
        if found is None:
            raise KeyError(f"the server doesn't have a resource type {name!r}")
        return found

    def types(self) -> list[ResourceType]:
        return list(self._types)

    def add_crd(self, crd: dict[str, Any]) -> list[ResourceType]:
        added = crd_resource_types(crd)
        with self._lock:
            keys = {(t.group, t.version, t.plural) for t in added}
            self._types = [t for t in self._types if (t.group, t.version, t.plural) not in keys] + added
            self._index()
        return added

    def remove_crd(self, crd: dict[str, Any]) -> list[ResourceType]:
        removed = crd_resource_types(crd)
        with self._lock:
            keys = {(t.group, t.version, t.plural) for t in removed}
            self._types = [t for t in self._types if not (t.crd and (t.group, t.version, t.plural) in keys)]
            self._index()
        return removed

    def reset(self) -> None:
        with self._lock:
            self._types = list(BUILTIN)
            self._index()

    # --- discovery documents ----------------------------------------------------------------------

    def groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for t in self._types:
            if t.group:
                versions = groups.setdefault(t.group, [])
                if t.version not in versions:
                    versions.append(t.version)
        return groups

    def api_versions(self, server_address: str) -> dict[str, Any]:
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}

    def group_document(self, group: str) -> dict[str, Any] | None:
        versions = self.groups().get(group)
        if not versions:
            return None
        listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": listed,
                "preferredVersion": listed[0]}

    def group_list(self) -> dict[str, Any]:
        groups = [self.group_document(g) for g in self.groups()]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        types = [t for t in self._types if t.group == group and t.version == version]
        if not types:
            return None
        resources: list[dict[str, Any]] = []
        for t in types:
            entry: dict[str, Any] = {"name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
                                     "kind": t.kind, "verbs": list(VERBS)}
            if t.short_names:
                entry["shortNames"] = list(t.short_names)
            if t.categories:
                entry["categories"] = list(t.categories)
            resources.append(entry)
            for sub in t.subresources:
                sub_entry: dict[str, Any] = {"name": f"{t.plural}/{sub}", "singularName": "", "namespaced": t.namespaced,
                                             "kind": t.kind, "verbs": list(SUBRESOURCE_VERBS.get(sub, ("get",)))}
                if sub in SUBRESOURCE_KINDS:
                    sub_group, sub_version, sub_kind = SUBRESOURCE_KINDS[sub]
                    sub_entry.update(kind=sub_kind, group=sub_group, version=sub_version)
                resources.append(sub_entry)
        group_version = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}
