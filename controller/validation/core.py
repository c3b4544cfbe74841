"""validate(): metadata, then the spec (Istio kinds by schema, Kubernetes kinds by what the mesh reads)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.validation.istio import NOT_ENFORCED, SPECS
from controller.validation.kube import KUBE_CHECKS
from controller.validation.schema import Issue, Issues, dns_label, is_dns_subdomain

CLUSTER_SCOPED = frozenset({"Namespace"})


def validate(raw: Mapping[str, Any]) -> list[Issue]:
    """All issues with one raw object; errors mean the mesh cannot use it. Never raises."""
    out = Issues()
    if not isinstance(raw, Mapping):
        out.error("", "must be an object")
        return out
    kind = raw.get("kind")
    meta = raw.get("metadata")
    if not isinstance(meta, Mapping):
        out.error("metadata", "is required")
        return out
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        out.error("metadata.name", "is required")
    elif not is_dns_subdomain(name):
        out.error(
            "metadata.name",
            f"must be a DNS subdomain (lower case letters, digits, '-' and '.'; got {name!r})",
        )
    namespace = meta.get("namespace")
    if kind not in CLUSTER_SCOPED and namespace is not None:
        dns_label()(namespace, "metadata.namespace", out)
    if kind in SPECS:
        validate_spec(str(kind), raw.get("spec"), out)
    elif kind in KUBE_CHECKS:
        KUBE_CHECKS[str(kind)](raw, out)
    return out


def validate_spec(kind: str, spec: Any, out: Issues | None = None) -> Issues:
    """Issues with an Istio kind's ``spec`` alone (paths relative to the spec, as Istio's messages are)."""
    out = out if out is not None else Issues()
    if spec is None:
        spec = {}
    SPECS[kind](spec, "", out)
    if kind in NOT_ENFORCED:
        out.warn("", NOT_ENFORCED[kind])
    return out
