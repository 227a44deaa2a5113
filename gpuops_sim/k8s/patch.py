"""The three PATCH flavours of the apiserver: JSON merge patch (RFC 7386), JSON patch (RFC 6902)
and strategic merge patch.

Strategic merge uses a table of list merge keys instead of Go struct tags: lists named in
``MERGE_KEYS`` merge item by item on that key, ``finalizers`` merge as a set, every other list is
replaced whole (as atomic lists such as ``spec.taints`` and ``tolerations`` are on a real server).
Directives: ``$patch: replace|delete|merge``, ``$retainKeys``, ``$deleteFromPrimitiveList/<field>``;
``$setElementOrder/<field>`` (sent by kubectl apply) is honoured for ordering.
"""

from __future__ import annotations

import copy
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# field name -> merge key (core/v1 and apps/v1 `patchMergeKey` tags)
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "conditions": "type",
    "addresses": "type",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "schedulingGates": "name",
    "resourceClaims": "name",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "ephemeralContainerStatuses": "name",
    "podIPs": "ip",
    "hostIPs": "ip",
}
# Primitive lists with patchStrategy=merge (merged as sets).
SET_LISTS = frozenset({"finalizers"})


class PatchError(ValueError):
    """A patch that cannot be applied (the apiserver answers 422 or 400)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- RFC 6902 -----------------------------------------------------------------------------------

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list, token: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit():
        raise PatchError(f"invalid list index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"list index {index} out of range")
    return index


def _parent(doc: Any, tokens: list[str]) -> Any:
    current = doc
    for token in tokens[:-1]:
        if isinstance(current, dict):
            if token not in current:
                raise PatchError(f"path component {token!r} not found")
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(current, token, False)]
        else:
            raise PatchError(f"path component {token!r} not found")
    return current


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {'/'.join(tokens)!r} not found")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, False)]
    raise PatchError(f"path {'/'.join(tokens)!r} not found")


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, tokens[-1], True), value)
    else:
        raise PatchError(f"cannot add at {'/'.join(tokens)!r}")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens)
    _get(doc, tokens)
    if isinstance(parent, dict):
        del parent[tokens[-1]]
    else:
        del parent[_index(parent, tokens[-1], False)]
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError(f"invalid JSON patch operation {operation!r}")
        op, tokens = operation["op"], _pointer(operation["path"])
        if op == "add":
            doc = _add(doc, tokens, copy.deepcopy(operation.get("value")))
        elif op == "remove":
            doc = _remove(doc, tokens)
        elif op == "replace":
            _get(doc, tokens)
            doc = _add(_remove(doc, tokens), tokens, copy.deepcopy(operation.get("value"))) if tokens else copy.deepcopy(operation.get("value"))
        elif op in ("move", "copy"):
            source = _pointer(operation.get("from", ""))
            value = copy.deepcopy(_get(doc, source))
            if op == "move":
                doc = _remove(doc, source)
            doc = _add(doc, tokens, value)
        elif op == "test":
            if _get(doc, tokens) != operation.get("value"):
                raise PatchError(f"testing value {operation['path']} failed")
        else:
            raise PatchError(f"unknown JSON patch operation {op!r}")
    return doc


# --- strategic merge ----------------------------------------------------------------------------

def _merge_key(field: str, items: list) -> str | None:
    if field == "ports":
        # container ports merge on containerPort, service ports on port
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def strategic_merge(original: Any, patch: Any) -> Any:
    """Apply a strategic merge patch to ``original`` (neither is modified)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    return _merge_map(original if isinstance(original, dict) else {}, patch)


def _merge_map(original: dict, patch: dict) -> dict:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return {}
    result = dict(original)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    orders = {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
        elif key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            drop = set(map(_hashable, value or []))
            result[field] = [v for v in result.get(field) or [] if _hashable(v) not in drop]
        elif key in ("$patch", "$retainKeys"):
            continue
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = _merge_map(result.get(key) if isinstance(result.get(key), dict) else {}, value)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key) if isinstance(result.get(key), list) else [], value)
        else:
            result[key] = copy.deepcopy(value)
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _apply_order(field, result[field], order)
    return result


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, (dict, list)) else value


def _merge_list(field: str, original: list, patch: list) -> list:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    if field in SET_LISTS:
        result = list(original)
        for item in patch:
            if item not in result:
                result.append(item)
        return result
    key = _merge_key(field, patch + original)
    if key is None or not all(isinstance(i, dict) for i in patch):
        return [copy.deepcopy(i) for i in patch]
    result = [copy.deepcopy(i) for i in original]
    for item in patch:
        position = next((n for n, existing in enumerate(result)
                         if isinstance(existing, dict) and existing.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if position is not None:
                del result[position]
        elif position is None:
            result.append({k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"})
        else:
            result[position] = _merge_map(result[position], item)
    return result


def _apply_order(field: str, items: list, order: list) -> list:
    key = _merge_key(field, items)
    if key is None:
        return items
    rank = {(o.get(key) if isinstance(o, dict) else o): n for n, o in enumerate(order)}
    keyed = [(rank.get(i.get(key) if isinstance(i, dict) else i, len(rank) + n), n, i) for n, i in enumerate(items)]
    return [item for _rank, _position, item in sorted(keyed, key=lambda t: (t[0], t[1]))]


def apply_patch(patch_type: str, original: Any, patch: Any) -> Any:
    """Dispatch on the Content-Type (or the short names "merge", "json", "strategic", "apply")."""
    kind = {MERGE_PATCH: "merge", JSON_PATCH: "json", STRATEGIC_MERGE_PATCH: "strategic",
            APPLY_PATCH: "apply"}.get(patch_type, patch_type)
    if kind == "merge":
        return merge_patch(original, patch)
    if kind == "json":
        return json_patch(original, patch)
    if kind in ("strategic", "apply"):
        if not isinstance(patch, dict):
            raise PatchError("a strategic merge patch must be a JSON object")
        return strategic_merge(original, patch)
    raise PatchError(f"unsupported patch type {patch_type!r}")
