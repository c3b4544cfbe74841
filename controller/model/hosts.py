"""Host names as Istio reads them: short-name resolution, wildcards, gateway references, exportTo.

These follow istio/istio's behaviour rather than intuition where the two differ; each function says how.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import TypeVar

DEFAULT_DOMAIN = "cluster.local"
ROOT_NAMESPACE = "istio-system"
MESH_GATEWAY = "mesh"

EXPORT_ALL = "*"
EXPORT_SELF = "."
EXPORT_NONE = "~"

T = TypeVar("T")


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def resolve_host(host: str, namespace: str, domain: str = DEFAULT_DOMAIN) -> str:
    """Resolve a host as written in an Istio resource to the name the mesh uses.

    ``reviews`` in ``default`` -> ``reviews.default.svc.cluster.local``. Like Istio, only names without a dot
    are expanded: ``reviews.default`` is taken as already qualified, and ``*`` and IP addresses are kept.
    """
    if not host or host == "*" or "." in host or is_ip(host):
        return host
    return f"{host}.{namespace}.svc.{domain}"


def service_hostname(name: str, namespace: str, domain: str = DEFAULT_DOMAIN) -> str:
    """The mesh hostname of a Kubernetes Service."""
    return f"{name}.{namespace}.svc.{domain}"


def is_wildcard(host: str) -> bool:
    return host.startswith("*")


def host_matches(pattern: str, host: str) -> bool:
    """True when ``pattern`` (exact or ``*``/``*.suffix``) covers the concrete or wildcard ``host``.

    As in Istio, ``*.example.com`` covers ``a.example.com`` and ``*.a.example.com`` but not ``example.com``.
    """
    if pattern == host or pattern == "*":
        return True
    if pattern.startswith("*"):
        suffix = pattern[1:]  # ".example.com"
        if host.startswith("*"):
            return host[1:].endswith(suffix)
        return host.endswith(suffix)
    return False


def most_specific_match(host: str, candidates: Mapping[str, T]) -> str | None:
    """Among ``candidates`` keyed by host pattern, the one Istio picks for ``host``.

    An exact key wins; otherwise the longest wildcard that covers ``host`` (``*.default.svc.cluster.local``
    beats ``*.cluster.local``, which beats ``*``).
    """
    if host in candidates:
        return host
    best: str | None = None
    for pattern in candidates:
        if (
            is_wildcard(pattern)
            and host_matches(pattern, host)
            and (best is None or len(pattern) > len(best))
        ):
            best = pattern
    return best


def resolve_gateway_name(gateway: str, namespace: str) -> str:
    """A VirtualService's gateway reference as ``namespace/name`` (or ``mesh``), as Istio resolves it.

    ``my-gw`` -> ``<ns>/my-gw``; ``./my-gw`` -> ``<ns>/my-gw``; the legacy ``my-gw.other.svc.cluster.local``
    -> ``other/my-gw``.
    """
    if gateway == MESH_GATEWAY:
        return gateway
    if "/" in gateway:
        gw_ns, _, name = gateway.partition("/")
        return f"{namespace}/{name}" if gw_ns == "." else gateway
    if "." not in gateway:
        return f"{namespace}/{gateway}"
    name, _, rest = gateway.partition(".")
    return f"{rest.split('.', 1)[0]}/{name}"


def resolve_export_to(export_to: Iterable[str], namespace: str) -> frozenset[str]:
    """exportTo as the set of namespaces that may see the object; ``*`` stays ``*`` (everyone).

    Empty means the default, exported everywhere (Istio's mesh default); ``~`` means nobody.
    """
    values = list(export_to)
    if not values:
        return frozenset({EXPORT_ALL})
    out: set[str] = set()
    for value in values:
        if value == EXPORT_SELF:
            out.add(namespace)
        elif value != EXPORT_NONE:
            out.add(value)
    return frozenset(out)


def visible_to(export_to: frozenset[str], client_namespace: str) -> bool:
    """True when an object exported to ``export_to`` can be seen from ``client_namespace``."""
    return EXPORT_ALL in export_to or client_namespace in export_to
