"""``envoy.filters.http.rbac``: Istio's AuthorizationPolicy on HTTP requests.

The request is judged on its head, before anything goes upstream: the peer's SPIFFE ID (mutual TLS),
the source and destination addresses, the method, path, host and headers. A refused request gets Envoy's
``403 RBAC: access denied`` and is counted (``rbac.denied``); an AUDIT (LOG) match is only logged and
counted (``rbac.logged``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2

from fastpath import filters
from fastpath.config.errors import Resource, join
from fastpath.rbac import LOG, RbacEngine, RbacInput, compile_rbac
from mizzen import logs

if TYPE_CHECKING:
    from fastpath.exchange import Exchange

log = logs.get("rbac")

TYPE_URL = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
DENIED = b"RBAC: access denied"


def _ip(address: str) -> str:
    """The IP of an ``ip:port`` (or ``[v6]:port``) string."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    return host.strip("[]")


def request_input(ex: Exchange) -> RbacInput:
    conn = ex.conn
    head = ex.head
    target = head.target
    q = target.find(b"?")
    dst = conn.original_dst
    tls = getattr(conn, "tls", None)
    return RbacInput(
        principal=getattr(conn, "peer_principal", ""),
        source_ip=_ip(conn.remote),
        dest_ip=dst[0] if dst else _ip(conn.local),
        dest_port=dst[1] if dst else 0,
        sni=tls.sni if tls is not None else "",
        headers=head.get,
        method=head.method.decode("latin-1"),
        path=(target if q < 0 else target[:q]).decode("utf-8", "replace"),
        host=(head.host or b"").decode("latin-1"),
    )


class RbacFilter(filters.HttpFilter):
    name = "envoy.filters.http.rbac"

    def __init__(self, engine: RbacEngine) -> None:
        self.engine = engine

    def on_request(self, exchange: Exchange) -> int:
        engine = self.engine
        named = exchange.conn.stats.named
        allowed, policy = engine.evaluate(request_input(exchange))
        if engine.action == LOG:
            if policy:
                named["rbac.logged"] += 1
                log.info(
                    "rbac audit",
                    policy=policy,
                    principal=getattr(exchange.conn, "peer_principal", "") or None,
                    path=exchange.head.target.decode("utf-8", "replace"),
                )
            return filters.CONTINUE
        if allowed:
            named["rbac.allowed"] += 1
            return filters.CONTINUE
        named["rbac.denied"] += 1
        exchange.local_reply(403, DENIED, "-", f"rbac_access_denied_matched_policy[{policy or 'none'}]")
        return filters.STOP


@filters.register(TYPE_URL)
def _factory(res: Resource, path: str, config: Any) -> filters.HttpFilter:
    msg = http_rbac_pb2.RBAC()
    config.Unpack(msg)
    p = join(path, "typed_config")
    res.reject_unsupported(msg, p, {"rules", "rules_stat_prefix"})
    if not msg.HasField("rules"):
        raise res.error(join(p, "rules"), "required (mizzen-proxy has no shadow-only RBAC)")
    return RbacFilter(compile_rbac(res, join(p, "rules"), msg.rules))
