"""Istio's ``istio.alpn`` filter: the ALPN a request's upstream mutual TLS offers says which HTTP version
the client's sidecar speaks inside (``istio-http/1.1``, ``istio-h2``...), so that a server sidecar whose port
declares no protocol can choose its HTTP filter chain by ALPN, before it has decrypted a byte.

The config (Istio's ``FilterConfig``, in a TypedStruct) maps upstream protocols to ALPN lists. Nothing
happens per request (the filter is passive: no route runs it); the HTTP pools read the map of the request's
connection manager when they open a TLS connection, and only for clusters speaking the mesh's mutual TLS
(whose ALPN names ``istio``): TLS to servers outside the mesh keeps the ALPN its DestinationRule gave it.
"""

from __future__ import annotations

from typing import Any

from fastpath import filters
from fastpath.config.errors import Resource, join

ALPN_CONFIG = "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig"
PROTOCOLS = ("HTTP10", "HTTP11", "HTTP2")


class AlpnOverride(filters.HttpFilter):
    name = "istio.alpn"
    passive = True  # read by the pools from the connection manager's filters, never called per request

    def __init__(self, overrides: dict[str, tuple[str, ...]]) -> None:
        self.overrides = overrides


def overrides_of(all_filters: Any) -> dict[str, tuple[str, ...]] | None:
    """The ALPN overrides of a connection manager's filters (None without ``istio.alpn``)."""
    for f in all_filters:
        if isinstance(f, AlpnOverride):
            return f.overrides
    return None


@filters.register_struct(ALPN_CONFIG)
def compile_alpn(res: Resource, path: str, value: dict[str, Any]) -> AlpnOverride:
    unknown = sorted(set(value) - {"alpn_override"})
    if unknown:
        raise res.error(join(path, unknown[0]), "not supported by mizzen-proxy")
    overrides: dict[str, tuple[str, ...]] = {}
    for i, entry in enumerate(value.get("alpn_override") or []):
        where = f"{path}.alpn_override[{i}]"
        if not isinstance(entry, dict):
            raise res.error(where, "must be an object")
        extra = sorted(set(entry) - {"upstream_protocol", "alpn_override"})
        if extra:
            raise res.error(join(where, extra[0]), "not supported by mizzen-proxy")
        protocol = entry.get("upstream_protocol", "HTTP10")  # the proto's zero value
        if protocol not in PROTOCOLS:
            raise res.error(join(where, "upstream_protocol"), f"must be one of {', '.join(PROTOCOLS)}")
        alpn = entry.get("alpn_override") or []
        if not isinstance(alpn, list) or not all(isinstance(a, str) and a for a in alpn):
            raise res.error(join(where, "alpn_override"), "must be a list of protocol names")
        overrides[protocol] = tuple(alpn)
    return AlpnOverride(overrides)


def upstream_tls(tls: Any, exchange: Any, protocol: str) -> Any:
    """The transport socket to open for ``exchange`` over a pool speaking ``protocol`` ("HTTP11", "HTTP2"):
    the cluster's, with the request's ALPN override when the cluster speaks the mesh's mutual TLS."""
    if exchange is None or tls is None:
        return tls
    overrides = exchange.conn.hcm.alpn
    if not overrides or "istio" not in tls.common.alpn:
        return tls
    alpn = overrides.get(protocol)
    return tls if not alpn else tls.with_alpn(alpn)
