"""Whether a pod may run on a node: node selectors, node affinity, taints, extended resources.

Pure functions over plain API dicts, shared by the DaemonSet controller and the scheduler.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

# Taint effects that keep a pod off a node. PreferNoSchedule is a preference only.
_BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")


def _match_expression(labels: Mapping[str, str], expression: Mapping[str, Any]) -> bool:
    key = expression.get("key")
    operator = expression.get("operator")
    values = [str(v) for v in expression.get("values") or []]
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt"):
        try:
            value, bound = int(labels[key]), int(values[0])
        except (KeyError, IndexError, ValueError):
            return False
        return value > bound if operator == "Gt" else value < bound
    return False


def _match_term(labels: Mapping[str, str], fields: Mapping[str, str], term: Mapping[str, Any]) -> bool:
    expressions = term.get("matchExpressions") or []
    field_expressions = term.get("matchFields") or []
    if not expressions and not field_expressions:
        return False  # an empty term matches nothing
    return (all(_match_expression(labels, e) for e in expressions)
            and all(_match_expression(fields, e) for e in field_expressions))


def matches_node(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """nodeSelector and required node affinity (terms ORed, expressions ANDed)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(key) != str(value):
            return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required:
        fields = {"metadata.name": (node.get("metadata") or {}).get("name", "")}
        terms = required.get("nodeSelectorTerms") or []
        if not any(_match_term(labels, fields, term) for term in terms):
            return False
    return True


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    effect = toleration.get("effect")
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key")
    operator = toleration.get("operator") or "Equal"
    if not key:
        return operator == "Exists"  # empty key with Exists tolerates everything
    if key != taint.get("key"):
        return False
    if operator == "Exists":
        return True
    return str(toleration.get("value") or "") == str(taint.get("value") or "")


def untolerated_taints(pod_spec: Mapping[str, Any], node: Mapping[str, Any],
                       effects: Iterable[str] = _BLOCKING_EFFECTS) -> list[Mapping[str, Any]]:
    tolerations = pod_spec.get("tolerations") or []
    wanted = tuple(effects)
    return [t for t in ((node.get("spec") or {}).get("taints") or [])
            if t.get("effect") in wanted and not any(tolerates(tol, t) for tol in tolerations)]


def daemon_pod_fits(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """Whether a DaemonSet places a pod on the node (cordoning does not matter to DaemonSets)."""
    return matches_node(pod_spec, node) and not untolerated_taints(pod_spec, node)


def node_ready(node: Mapping[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def pod_requests(pod_spec: Mapping[str, Any], prefix: str = "nvidia.com/") -> dict[str, int]:
    """Extended resources the pod asks for (limits, else requests), summed over its containers."""
    total: dict[str, int] = {}
    for container in pod_spec.get("containers") or []:
        resources = container.get("resources") or {}
        asked = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
        for name, quantity in asked.items():
            if name.startswith(prefix):
                total[name] = total.get(name, 0) + int(str(quantity))
    return total


def schedule_blockers(pod_spec: Mapping[str, Any], node: Mapping[str, Any],
                      free: Mapping[str, int], pods_free: int) -> list[str]:
    """Why the scheduler cannot place the pod on this node (empty: it can)."""
    reasons = []
    if not node_ready(node):
        reasons.append("node(s) were not ready")
    if (node.get("spec") or {}).get("unschedulable"):
        reasons.append("node(s) were unschedulable")
    if not matches_node(pod_spec, node):
        reasons.append("node(s) didn't match Pod's node affinity/selector")
    taints = untolerated_taints(pod_spec, node)
    if taints:
        taint = taints[0]
        reasons.append(f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}")
    for name, count in pod_requests(pod_spec).items():
        if free.get(name, 0) < count:
            reasons.append(f"Insufficient {name}")
    if pods_free < 1:
        reasons.append("Too many pods")
    return reasons
