# -*- coding: utf-8 -*-
# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# This module util is PRIVATE to the collection. It may change without notice.

"""Conditions on a node (pure): resources, labels, readiness, cordon, JMESPath expressions.

Each condition is evaluated to ``{"condition", "met", "expected", "observed"}`` so that a
timeout can say, for every unmet condition, what was wanted and what was seen.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.client import K8sError
from ansible_collections.gpuops.nvidia.plugins.module_utils.k8s.node import normalize_metadata_changes

try:
    import jmespath

    HAS_JMESPATH = True
    JMESPATH_IMPORT_ERROR = None
except ImportError as import_error:  # pragma: no cover - depends on the host
    jmespath = None
    HAS_JMESPATH = False
    JMESPATH_IMPORT_ERROR = import_error

RESOURCE_MATCHES = ("exact", "at_least")

_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")
_BINARY = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6,
            "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18}


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes resource quantity (``4``, ``500m``, ``40Gi``, ``1e3``) as a number."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a quantity")
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError("{0!r} is not a Kubernetes quantity".format(value))
    number, exponent, suffix = match.groups()
    try:
        result = Decimal(number)
    except InvalidOperation as error:  # pragma: no cover - the regex admits only numbers
        raise ValueError(str(error)) from None
    if exponent:
        result *= Decimal(10) ** int(exponent[1:])
    elif suffix in _BINARY:
        result *= _BINARY[suffix]
    elif suffix:
        result *= _DECIMAL[suffix]
    return result


class NodeConditions:
    """The validated wait conditions of k8s_node_wait."""

    def __init__(
        self,
        allocatable: Mapping[str, Any] | None = None,
        capacity: Mapping[str, Any] | None = None,
        resource_match: str = "exact",
        labels: Mapping[str, Any] | None = None,
        ready: bool | None = None,
        unschedulable: bool | None = None,
        jmespath_conditions: list[Mapping[str, Any]] | None = None,
    ) -> None:
        if resource_match not in RESOURCE_MATCHES:
            raise K8sError("resource_match: {0!r} is not one of {1}".format(resource_match, ", ".join(RESOURCE_MATCHES)))
        self.resource_match = resource_match
        self.allocatable = _resources("allocatable", allocatable)
        self.capacity = _resources("capacity", capacity)
        self.labels = normalize_metadata_changes("labels", labels, is_label=True)
        self.ready = ready
        self.unschedulable = unschedulable
        self.expressions = _expressions(jmespath_conditions or [])

    def is_empty(self) -> bool:
        return not (self.allocatable or self.capacity or self.labels or self.expressions) and self.ready is None and self.unschedulable is None


def _resources(field: str, resources: Mapping[str, Any] | None) -> dict[str, tuple[Any, Decimal]]:
    parsed: dict[str, tuple[Any, Decimal]] = {}
    for name, quantity in (resources or {}).items():
        try:
            parsed[str(name)] = (str(quantity), parse_quantity(quantity))
        except ValueError as error:
            raise K8sError("{0}.{1}: {2}".format(field, name, error)) from None
    return parsed


def _expressions(entries: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if entries and not HAS_JMESPATH:
        raise K8sError("jmespath conditions need the Python library 'jmespath': {0}".format(JMESPATH_IMPORT_ERROR), missing_library="jmespath")
    result = []
    for index, entry in enumerate(entries):
        where = "jmespath[{0}]".format(index)
        expression = entry.get("expression")
        if not isinstance(expression, str) or not expression.strip():
            raise K8sError("{0}.expression: a JMESPath expression is required".format(where))
        has_equals = entry.get("equals") is not None
        truthy = entry.get("truthy")
        if has_equals and truthy is not None:
            raise K8sError("{0}: give either equals or truthy, not both".format(where))
        try:
            compiled = jmespath.compile(expression)
        except jmespath.exceptions.JMESPathError as error:
            raise K8sError("{0}.expression: {1!r} is not valid JMESPath: {2}".format(where, expression, error)) from None
        result.append({
            "expression": expression,
            "compiled": compiled,
            "equals": entry.get("equals") if has_equals else None,
            "mode": "equals" if has_equals else ("truthy" if truthy is not False else "falsy"),
        })
    return result


# ---------------------------------------------------------------------------------------------
# Evaluation


def node_ready(node: Mapping[str, Any]) -> bool | None:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return None


def _resource_results(section: str, wanted: dict[str, tuple[Any, Decimal]], observed: Mapping[str, Any], mode: str) -> list[dict[str, Any]]:
    results = []
    for name, (text, quantity) in sorted(wanted.items()):
        seen = observed.get(name)
        try:
            seen_quantity = parse_quantity(seen) if seen is not None else Decimal(0)
        except ValueError:
            seen_quantity = None
        if seen_quantity is None:
            met = False
        elif mode == "at_least":
            met = seen_quantity >= quantity
        else:
            met = seen_quantity == quantity
        expected = text if mode == "exact" else ">= " + text
        results.append({"condition": "{0}[{1}]".format(section, name), "met": met, "expected": expected, "observed": seen})
    return results


def evaluate(node: Mapping[str, Any] | None, conditions: NodeConditions) -> list[dict[str, Any]]:
    """Every condition with its verdict, in a stable order. A missing node meets none."""
    if node is None:
        return [dict(result, met=False, observed="node not found") for result in evaluate({}, conditions)]
    status = node.get("status") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    results: list[dict[str, Any]] = []
    results.extend(_resource_results("allocatable", conditions.allocatable, status.get("allocatable") or {}, conditions.resource_match))
    results.extend(_resource_results("capacity", conditions.capacity, status.get("capacity") or {}, conditions.resource_match))
    for key, value in sorted(conditions.labels.items()):
        seen = labels.get(key)
        results.append({
            "condition": "labels[{0}]".format(key),
            "met": seen == value if value is not None else key not in labels,
            "expected": value if value is not None else "(absent)",
            "observed": seen if key in labels else "(absent)",
        })
    if conditions.ready is not None:
        seen_ready = node_ready(node)
        results.append({"condition": "ready", "met": seen_ready is conditions.ready, "expected": conditions.ready, "observed": seen_ready})
    if conditions.unschedulable is not None:
        seen_cordon = bool((node.get("spec") or {}).get("unschedulable"))
        results.append({"condition": "unschedulable", "met": seen_cordon is conditions.unschedulable, "expected": conditions.unschedulable,
                        "observed": seen_cordon})
    for entry in conditions.expressions:
        try:
            seen = entry["compiled"].search(dict(node))
        except jmespath.exceptions.JMESPathError as error:
            # A type error on this node (say, length() of a missing list) is an unmet condition.
            results.append({"condition": "jmespath[{0}]".format(entry["expression"]), "met": False,
                            "expected": entry["equals"] if entry["mode"] == "equals" else "({0})".format(entry["mode"]),
                            "observed": "JMESPath error: {0}".format(error)})
            continue
        if entry["mode"] == "equals":
            met = seen == entry["equals"]
            expected: Any = entry["equals"]
        elif entry["mode"] == "truthy":
            met = bool(seen)
            expected = "(truthy)"
        else:
            met = not seen
            expected = "(falsy)"
        results.append({"condition": "jmespath[{0}]".format(entry["expression"]), "met": met, "expected": expected, "observed": seen})
    return results


def all_met(results: list[dict[str, Any]]) -> bool:
    return all(result["met"] for result in results)


def unmet_summary(results: list[dict[str, Any]]) -> str:
    parts = ["{0}: expected {1!r}, observed {2!r}".format(r["condition"], r["expected"], r["observed"]) for r in results if not r["met"]]
    return "; ".join(parts)


def node_summary(node: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parts of a node that k8s_node_wait reports."""
    if node is None:
        return {}
    metadata = node.get("metadata") or {}
    status = node.get("status") or {}
    return {
        "name": metadata.get("name"),
        "resource_version": metadata.get("resourceVersion"),
        "labels": dict(metadata.get("labels") or {}),
        "allocatable": dict(status.get("allocatable") or {}),
        "capacity": dict(status.get("capacity") or {}),
        "conditions": [
            {key: condition.get(key) for key in ("type", "status", "reason", "message")}
            for condition in status.get("conditions") or []
        ],
        "taints": [dict(taint) for taint in (node.get("spec") or {}).get("taints") or []],
        "unschedulable": bool((node.get("spec") or {}).get("unschedulable")),
    }
