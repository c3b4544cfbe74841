"""VirtualService delegation: a root's ``http[].delegate`` replaced by the delegate's rules, each narrowed
to the root rule's matches, as Istio merges them.

A delegate's match must lie within the root's (the same or a longer path prefix, the same header values);
a pair of matches that contradict each other yields no route, and a delegate rule none of whose matches
fits drops out. Fields the delegate rule leaves unset (timeout, retries, rewrite, headers, fault, mirrors,
CORS) are taken from the root rule. Only one level: a delegate cannot delegate again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from controller.model.istio import HTTPMatch, HTTPRoute, VirtualService
from controller.model.values import FrozenMap, StringMatch

# Root rule fields a delegate rule inherits when it does not set them itself.
_INHERITED = ("timeout", "retries", "rewrite", "fault", "headers", "cors")


def expand(vs: VirtualService, find: Callable[[str, str], VirtualService | None]) -> tuple[HTTPRoute, ...]:
    """The http rules of ``vs`` with every delegating rule replaced by its delegate's merged rules."""
    if not vs.delegates:
        return vs.http
    out: list[HTTPRoute] = []
    for rule in vs.http:
        if rule.delegate is None:
            out.append(rule)
            continue
        target = find(rule.delegate.namespace, rule.delegate.name)
        if target is None or target.hosts:
            continue  # missing, or not a delegate (it has hosts of its own): the rule routes nothing
        for child in target.http:
            if child.delegate is not None:
                continue  # one level only
            merged = merge_rule(rule, child)
            if merged is not None:
                out.append(merged)
    return tuple(out)


def merge_rule(root: HTTPRoute, child: HTTPRoute) -> HTTPRoute | None:
    matches = merge_matches(root.matches, child.matches)
    if matches is None:
        return None
    changes: dict[str, Any] = {"matches": matches, "delegate": None}
    for field in _INHERITED:
        if getattr(child, field) is None and getattr(root, field) is not None:
            changes[field] = getattr(root, field)
    if not child.mirrors and root.mirrors:
        changes["mirrors"] = root.mirrors
    if not child.name:
        changes["name"] = root.name
    return msgspec.structs.replace(child, **changes)


def merge_matches(root: tuple[HTTPMatch, ...], child: tuple[HTTPMatch, ...]) -> tuple[HTTPMatch, ...] | None:
    """Every compatible (root, child) pair merged; None when no pair is compatible (the rule drops)."""
    if not root:
        return child
    if not child:
        return root
    out = [m for r in root for c in child if (m := merge_match(r, c)) is not None]
    return tuple(out) if out else None


def merge_match(root: HTTPMatch, child: HTTPMatch) -> HTTPMatch | None:
    uri = _narrower(root.uri, child.uri)
    if uri is False:
        return None
    single: dict[str, Any] = {}
    for field in ("method", "authority", "scheme"):
        value = _same(getattr(root, field), getattr(child, field))
        if value is False:
            return None
        single[field] = value
    headers = _union(root.headers, child.headers)
    without = _union(root.without_headers, child.without_headers)
    query = _union(root.query_params, child.query_params)
    labels = _union(root.source_labels, child.source_labels)
    if headers is None or without is None or query is None or labels is None:
        return None
    port = _same(root.port, child.port)
    namespace = _same(root.source_namespace, child.source_namespace)
    if port is False or namespace is False:
        return None
    return HTTPMatch(
        name=child.name or root.name,
        uri=uri,  # type: ignore[arg-type]
        method=single["method"],
        authority=single["authority"],
        headers=headers,
        query_params=query,
        port=port,  # type: ignore[arg-type]
        ignore_uri_case=root.ignore_uri_case or child.ignore_uri_case,
        gateways=root.gateways or child.gateways,
        scheme=single["scheme"],
        without_headers=without,
        source_labels=labels,
        source_namespace=namespace,  # type: ignore[arg-type]
    )


def _same(a: Any, b: Any) -> Any:
    """One value from two: either unset, or both equal; False when they contradict."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    return False


def _union(a: FrozenMap[Any], b: FrozenMap[Any]) -> FrozenMap[Any] | None:
    for key in a.keys() & b.keys():
        if a[key] != b[key]:
            return None
    return FrozenMap({**a, **b}) if a and b else (a or b)


def _narrower(root: StringMatch | None, child: StringMatch | None) -> StringMatch | bool | None:
    """The child's URI match when it lies within the root's; False when it does not (Istio refuses)."""
    if root is None:
        return child
    if child is None:
        return root
    if root.kind == "prefix":
        if child.kind in ("prefix", "exact") and child.value.startswith(root.value):
            return child
        if child.kind == "regex":
            return False  # cannot tell whether a regex stays within a prefix
        return False
    if root == child:
        return child
    return False
