# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""Node taints, cordon, labels and annotations: the pure maths and the guarded writes.

Writes are JSON merge patches that carry the ``metadata.resourceVersion`` read just before, so
the API server refuses them (409) when someone else changed the node in between; then the node
is read again, the change recomputed, and the patch retried. ``spec.taints`` is an atomic list,
so the patch always carries the whole list.
"""

from __future__ import annotations

import copy
import re
import reprlib
from typing import Any, Callable, Mapping

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import (
    Deadline,
    K8sError,
    KubeClient,
    api_status,
)

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

# As the API server validates them. ``\Z``, not ``$``: ``$`` also matches before a final newline.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_NAME_PART = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?\Z")
#: An annotation's value may be any text; the API server bounds all of a node's annotations together.
ANNOTATIONS_SIZE_LIMIT = 256 * 1024


# ---------------------------------------------------------------------------------------------
# Validation (pure)


def node_name_problem(name: Any) -> str | None:
    """Why ``name`` is not a valid node name (an RFC 1123 subdomain), or None if it is."""
    if not isinstance(name, str) or not name or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return "must be a DNS subdomain (RFC 1123): at most 253 characters of [a-z0-9-.], starting and ending alphanumeric"
    return None


def validate_node_name(name: Any, field: str = "name") -> str:
    problem = node_name_problem(name)
    if problem:
        raise K8sError("{0}: {1} {2}".format(field, excerpt(name), problem))
    return name


def excerpt(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: enough to recognise it, never a whole document."""
    try:
        if isinstance(value, str):
            text = repr(value[:limit])
        elif isinstance(value, int) and value.bit_length() > 256:
            text = "an integer of {0} bits".format(value.bit_length())
        else:
            text = _EXCERPT.repr(value)
    # A message must never fail on what it quotes.
    except Exception:  # pylint: disable=broad-except
        text = "a {0}".format(type(value).__name__)
    return text if len(text) <= limit else text[:limit - 3] + "..."


_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel = 3
_EXCERPT.maxstring = 60
_EXCERPT.maxlong = 40


def key_problem(key: Any) -> str | None:
    """Why ``key`` is not a valid label, annotation or taint key, or None if it is."""
    if not isinstance(key, str) or not key:
        return "must be a non-empty string"
    prefix, name = key.rpartition("/")[0::2]
    if "/" in key:
        if not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix):
            return "prefix {0} must be a DNS subdomain of at most 253 characters".format(excerpt(prefix))
    if len(name) > 63 or not _NAME_PART.match(name):
        return "name part {0} must be at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric".format(excerpt(name))
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return "must be at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric (or empty)"
    return None


def as_text(value: Any) -> str:
    """Label and annotation values are strings; YAML booleans mean the lower-case words."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise K8sError("expected a string, got {0} {1}".format(type(value).__name__, excerpt(value)))


def normalize_metadata_changes(field: str, changes: Mapping[str, Any] | None, is_label: bool) -> dict[str, str | None]:
    """Validate ``{key: value or None}`` for labels or annotations; None means remove."""
    normalized: dict[str, str | None] = {}
    for key, value in (changes or {}).items():
        problem = key_problem(key)
        if problem:
            raise K8sError("{0}: key {1} {2}".format(field, excerpt(key), problem))
        if value is None:
            normalized[key] = None
            continue
        try:
            text = as_text(value)
        except K8sError as error:
            raise K8sError("{0}.{1}: {2}".format(field, key, error.msg)) from None
        if len(text) > ANNOTATIONS_SIZE_LIMIT:
            raise K8sError("{0}.{1}: value of {2} characters; the API server allows {3} bytes for all of a node's annotations".format(
                field, key, len(text), ANNOTATIONS_SIZE_LIMIT))
        if is_label:
            problem = label_value_problem(text)
            if problem:
                raise K8sError("{0}.{1}: value {2} {3}".format(field, key, excerpt(text), problem))
        normalized[key] = text
    return normalized


def normalize_taints(taints: Any, state: str) -> list[dict[str, Any]]:
    """Validate the ``taints`` option. ``effect`` is required to add a taint, optional to remove."""
    if not isinstance(taints, list):
        raise K8sError("taints: expected a list of {{key, value, effect}}, got {0}".format(excerpt(taints)))
    normalized = []
    for index, taint in enumerate(taints):
        where = "taints[{0}]".format(index)
        if not isinstance(taint, Mapping):
            raise K8sError("{0}: expected a dictionary with key, value, effect, got {1}".format(where, excerpt(taint)))
        unknown = sorted(set(taint) - {"key", "value", "effect"})
        if unknown:
            raise K8sError("{0}: unknown field(s) {1}".format(where, ", ".join(unknown)))
        key = taint.get("key")
        problem = key_problem(key)
        if problem:
            raise K8sError("{0}.key: {1} {2}".format(where, excerpt(key), problem))
        effect = taint.get("effect")
        if effect is None and state == "present":
            raise K8sError("{0}.effect: required to add a taint; one of {1}".format(where, ", ".join(TAINT_EFFECTS)))
        if effect is not None and effect not in TAINT_EFFECTS:
            raise K8sError("{0}.effect: {1} is not one of {2}".format(where, excerpt(effect), ", ".join(TAINT_EFFECTS)))
        value = taint.get("value")
        if value is not None:
            try:
                value = as_text(value)
            except K8sError as error:
                raise K8sError("{0}.value: {1}".format(where, error.msg)) from None
            problem = label_value_problem(value)
            if problem:
                raise K8sError("{0}.value: {1} {2}".format(where, excerpt(value), problem))
        entry: dict[str, Any] = {"key": key}
        if value is not None:
            entry["value"] = value
        if effect is not None:
            entry["effect"] = effect
        normalized.append(entry)
    if state == "present":
        seen = set()
        for entry in normalized:
            identity = (entry["key"], entry["effect"])
            if identity in seen:
                raise K8sError("taints: {0}:{1} is given twice; a node holds one taint per key and effect".format(*identity))
            seen.add(identity)
    return normalized


# ---------------------------------------------------------------------------------------------
# Taint and cordon maths (pure)


def _taint_matches(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Matching for removal: key always; effect and value only when given."""
    if existing.get("key") != wanted["key"]:
        return False
    if "effect" in wanted and existing.get("effect") != wanted["effect"]:
        return False
    if "value" in wanted and (existing.get("value") or "") != wanted["value"]:
        return False
    return True


def merge_taints(current: list[Mapping[str, Any]], wanted: list[Mapping[str, Any]], state: str) -> list[dict[str, Any]]:
    """The node's new taint list. Only the named taints change; order is kept, new ones go last.

    ``present``: a taint with the same key and effect (the API's identity of a taint) gets the
    wanted value; a missing one is appended. ``absent``: every taint matching a named one is
    removed.
    """
    result = [dict(taint) for taint in current]
    if state == "absent":
        return [taint for taint in result if not any(_taint_matches(taint, entry) for entry in wanted)]
    for entry in wanted:
        value = entry.get("value") or ""
        for taint in result:
            if taint.get("key") == entry["key"] and taint.get("effect") == entry["effect"]:
                if (taint.get("value") or "") != value:
                    taint["value"] = value
                    if not value:
                        taint.pop("value")
                    taint.pop("timeAdded", None)
                break
        else:
            new_taint = {"key": entry["key"], "effect": entry["effect"]}
            if value:
                new_taint["value"] = value
            result.append(new_taint)
    return result


def node_taints(node: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(taint) for taint in ((node.get("spec") or {}).get("taints") or [])]


def node_unschedulable(node: Mapping[str, Any]) -> bool:
    return bool((node.get("spec") or {}).get("unschedulable"))


def taint_view(node: Mapping[str, Any]) -> dict[str, Any]:
    """The fields k8s_node_taint manages, as shown in its diff."""
    return {"taints": node_taints(node), "unschedulable": node_unschedulable(node)}


def _comparable_taints(taints: list[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    return [(taint.get("key") or "", taint.get("value") or "", taint.get("effect") or "") for taint in taints]


def taint_patch(node: Mapping[str, Any], wanted: list[Mapping[str, Any]], state: str, cordon: bool | None) -> dict[str, Any] | None:
    """The merge patch that brings ``node`` to the wanted taints and cordon, or None if none is needed."""
    current = node_taints(node)
    new_taints = merge_taints(current, wanted, state) if wanted else current
    spec: dict[str, Any] = {}
    if _comparable_taints(new_taints) != _comparable_taints(current):
        spec["taints"] = new_taints
    if cordon is not None and cordon != node_unschedulable(node):
        spec["unschedulable"] = cordon
    if not spec:
        return None
    return {"metadata": {"resourceVersion": resource_version(node)}, "spec": spec}


def cordon_with_record(node: Mapping[str, Any], cordon: bool | None, record: str | None) -> tuple[bool | None, dict[str, str | None]]:
    """The cordon to write and the annotation changes that keep a node's own cordon, from the node as read.

    ``record`` is the key of an annotation the caller owns that says whether the node was already
    cordoned before the caller cordoned it ("true") or not ("false"). Without one, ``cordon``
    is returned as it is, with no annotation change.

    - ``cordon`` true: the node is cordoned, and the record written unless the node already holds
      one (an interrupted run fenced it: its record, not the cordon that run made, says what the
      node was before).
    - ``cordon`` false: the node is uncordoned only when its record says the caller cordoned it
      ("false"); the record is removed. A node recorded as cordoned before, or one without a
      record, keeps its cordon: nothing says it was the caller's.
    - ``cordon`` None: nothing changes.
    """
    if record is None or cordon is None:
        return cordon, {}
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    recorded = annotations.get(record)
    if cordon:
        if recorded in ("true", "false"):
            return True, {}
        return True, {record: "true" if node_unschedulable(node) else "false"}
    if recorded is None:
        return None, {}
    return (False if recorded == "false" else None), {record: None}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dictionaries merge, None removes a key, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = copy.deepcopy(dict(target)) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_patch_locally(node: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """What the node looks like once ``patch`` is applied: check mode's prediction.

    The patch's resourceVersion is a precondition, not a change, so it is left out.
    """
    changes = copy.deepcopy(dict(patch))
    metadata = dict(changes.get("metadata") or {})
    metadata.pop("resourceVersion", None)
    if metadata:
        changes["metadata"] = metadata
    else:
        changes.pop("metadata", None)
    return merge_patch(node, changes)


# ---------------------------------------------------------------------------------------------
# Label and annotation maths (pure)


def metadata_changes(current: Mapping[str, str] | None, wanted: Mapping[str, str | None]) -> dict[str, str | None]:
    """The merge-patch entries for labels or annotations: value to set, None to remove."""
    current = current or {}
    changes: dict[str, str | None] = {}
    for key, value in wanted.items():
        if value is None:
            if key in current:
                changes[key] = None
        elif current.get(key) != value:
            changes[key] = value
    return changes


def label_patch(node: Mapping[str, Any], labels: Mapping[str, str | None], annotations: Mapping[str, str | None]) -> dict[str, Any] | None:
    metadata = node.get("metadata") or {}
    label_changes = metadata_changes(metadata.get("labels"), labels)
    annotation_changes = metadata_changes(metadata.get("annotations"), annotations)
    if not label_changes and not annotation_changes:
        return None
    patch_metadata: dict[str, Any] = {"resourceVersion": resource_version(node)}
    if label_changes:
        patch_metadata["labels"] = label_changes
    if annotation_changes:
        patch_metadata["annotations"] = annotation_changes
    return {"metadata": patch_metadata}


def combine_patches(*patches: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """One merge patch doing what each of ``patches`` does (None where none is needed).

    The patches touch different fields of the same node (taints, labels, annotations) and carry
    the same resourceVersion precondition; a None value is kept, since it removes a key when the
    combined patch is applied.
    """

    def merged(left: Any, right: Any) -> Any:
        if isinstance(left, Mapping) and isinstance(right, Mapping):
            result = dict(left)
            for key, value in right.items():
                result[key] = merged(result[key], value) if key in result else value
            return result
        return right

    result: dict[str, Any] | None = None
    for patch in patches:
        if patch:
            result = merged(result, patch) if result is not None else dict(patch)
    return result


def label_view(node: Mapping[str, Any]) -> dict[str, Any]:
    metadata = node.get("metadata") or {}
    return {"labels": dict(metadata.get("labels") or {}), "annotations": dict(metadata.get("annotations") or {})}


def previous_values(node: Mapping[str, Any], labels: Mapping[str, Any], annotations: Mapping[str, Any]) -> dict[str, dict[str, str | None]]:
    view = label_view(node)
    return {
        "labels": {key: view["labels"].get(key) for key in labels},
        "annotations": {key: view["annotations"].get(key) for key in annotations},
    }


def resource_version(node: Mapping[str, Any]) -> str:
    version = (node.get("metadata") or {}).get("resourceVersion")
    if not version:
        raise K8sError("node {0!r} has no metadata.resourceVersion; cannot write it safely".format((node.get("metadata") or {}).get("name")))
    return str(version)


# ---------------------------------------------------------------------------------------------
# Guarded read-modify-write (I/O)


def read_node(client: KubeClient, name: str, deadline: Deadline) -> dict[str, Any]:
    validate_node_name(name)

    def read() -> dict[str, Any]:
        return client.read_node(name)

    try:
        return client.retry.run(read, deadline, "reading node {0}".format(name))
    except K8sError as error:
        if error.details.get("status") == 404:
            raise K8sError("node {0!r} not found".format(name), status=404) from None
        raise


class NodeChange:
    """Outcome of :func:`change_node`: the node before and after, and the patch applied."""

    def __init__(self, before: dict[str, Any], after: dict[str, Any], patch: dict[str, Any] | None, conflicts: int) -> None:
        self.before = before
        self.after = after
        self.patch = patch
        self.conflicts = conflicts


def change_node(
    client: KubeClient,
    name: str,
    compute_patch: Callable[[dict[str, Any]], dict[str, Any] | None],
    deadline: Deadline,
    check_mode: bool,
) -> NodeChange:
    """Read the node, compute a patch from what was read, write it with its resourceVersion.

    A 409 (someone else wrote in between), 429, 5xx or a lost connection re-runs the whole
    read-compute-write, with backoff, until the deadline. ``before`` is the node as first read.
    """
    validate_node_name(name)
    first: dict[str, Any] = {}
    last_patch: list[dict[str, Any] | None] = [None]
    conflicts = [0]

    def attempt() -> dict[str, Any]:
        node = client.read_node(name)
        if not first:
            first.update(node)
        patch = compute_patch(node)
        if patch is None:
            return node
        last_patch[0] = patch
        if check_mode:
            return apply_patch_locally(node, patch)
        try:
            return client.patch_node(name, patch)
        except Exception as error:
            if api_status(error) == 409:
                conflicts[0] += 1
            raise

    try:
        after = client.retry.run(attempt, deadline, "updating node {0}".format(name))
    except K8sError as error:
        if error.details.get("status") == 404:
            raise K8sError("node {0!r} not found".format(name), status=404) from None
        raise
    return NodeChange(copy.deepcopy(first), after, last_patch[0], conflicts[0])
