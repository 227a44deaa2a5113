"""Label and field selectors, with the apiserver's syntax and messages.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x,y)``, ``a``, ``!a``, comma
separated (AND). ``LabelSelector`` objects (``matchLabels`` + ``matchExpressions`` with In, NotIn,
Exists, DoesNotExist) compile to the same requirements. Field selectors: ``path=value``,
``path==value``, ``path!=value``; which paths a resource supports is decided by the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

# \Z, not $: $ also matches before a final newline, which the apiserver refuses.
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?\Z")


def label_key_valid(key: object) -> bool:
    """A label, annotation or taint key as the apiserver validates it (qualified name)."""
    return isinstance(key, str) and bool(_LABEL_KEY.match(key)) and len(key.rpartition("/")[0]) <= 253


def label_value_valid(value: object) -> bool:
    return isinstance(value, str) and bool(_LABEL_VALUE.match(value))


class SelectorError(ValueError):
    """A selector that does not parse; the message is what the apiserver says."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" match objects without the key, as in Kubernetes
        return not present or labels[self.key] not in self.values


LabelSelector = tuple[Requirement, ...]


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _check_key(key: str, text: str) -> str:
    if not _LABEL_KEY.match(key):
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r} in {text!r}")
    return key


def _check_value(value: str, text: str) -> str:
    if not _LABEL_VALUE.match(value):
        raise SelectorError(f"unable to parse requirement: invalid label value {value!r} in {text!r}")
    return value


_SET_RE = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQ_RE = re.compile(r"^(?P<key>[^=!\s]+)\s*(?P<op>==|=|!=)\s*(?P<value>\S*)$")


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse the query-string form (``labelSelector=``)."""
    if not text or not text.strip():
        return ()
    requirements = []
    for part in _split_top_level(text):
        set_match = _SET_RE.match(part)
        eq_match = _EQ_RE.match(part)
        if set_match:
            values = [v.strip() for v in set_match.group("values").split(",") if v.strip()]
            requirements.append(Requirement(_check_key(set_match.group("key"), text), set_match.group("op"),
                                            frozenset(_check_value(v, text) for v in values)))
        elif eq_match:
            op = "!=" if eq_match.group("op") == "!=" else "="
            requirements.append(Requirement(_check_key(eq_match.group("key"), text), op,
                                            frozenset([_check_value(eq_match.group("value"), text)])))
        elif part.startswith("!"):
            requirements.append(Requirement(_check_key(part[1:].strip(), text), "!"))
        else:
            requirements.append(Requirement(_check_key(part, text), "exists"))
    return tuple(requirements)


def compile_label_selector(selector: Mapping[str, Any] | None) -> LabelSelector | None:
    """A ``LabelSelector`` object. ``None`` (no selector) gives ``None``: it matches nothing where
    the API says so (PDBs); ``{}`` gives ``()``: it matches everything."""
    if selector is None:
        return None
    requirements = [Requirement(k, "=", frozenset([str(v)])) for k, v in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        op = expression.get("operator")
        key = expression.get("key", "")
        values = frozenset(str(v) for v in expression.get("values") or [])
        mapped = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(op)
        if mapped is None:
            raise SelectorError(f"{op!r} is not a valid label selector operator")
        requirements.append(Requirement(key, mapped, values))
    return tuple(requirements)


def labels_match(selector: LabelSelector | None, labels: Mapping[str, str] | None) -> bool:
    if selector is None:
        return False
    labels = labels or {}
    return all(r.matches(labels) for r in selector)


# --- field selectors ----------------------------------------------------------------------------

@dataclass(frozen=True)
class FieldRequirement:
    field: str
    equal: bool
    value: str

    def matches(self, actual: str) -> bool:
        return (actual == self.value) == self.equal


FieldSelector = tuple[FieldRequirement, ...]


def parse_field_selector(text: str | None, supported: Iterable[str] | None = None) -> FieldSelector:
    """``supported``: the field paths the resource accepts (None: any)."""
    if not text or not text.strip():
        return ()
    allowed = set(supported) if supported is not None else None
    requirements = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        for op in ("!=", "==", "="):
            field, sep, value = part.partition(op)
            if sep:
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        field = field.strip()
        if allowed is not None and field not in allowed:
            raise SelectorError(f'field label not supported: {field}')
        requirements.append(FieldRequirement(field, op != "!=", value.strip()))
    return tuple(requirements)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string a field selector compares with (missing: "", booleans: "true"/"false")."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def fields_match(selector: FieldSelector, obj: Mapping[str, Any],
                 getter: Callable[[Mapping[str, Any], str], str] = field_value) -> bool:
    return all(r.matches(getter(obj, r.field)) for r in selector)
