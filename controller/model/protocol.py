"""Which protocol the mesh speaks on a service port, by Istio's rules (protocol selection)."""

from __future__ import annotations

import enum


class MeshProtocol(enum.Enum):
    """The protocol the sidecar assumes for a port; UNKNOWN means "sniff it" (Istio's Unsupported)."""

    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    HTTPS = "HTTPS"
    GRPC = "GRPC"
    GRPC_WEB = "GRPC-Web"
    HTTP_PROXY = "HTTP_PROXY"
    TCP = "TCP"
    TLS = "TLS"
    MONGO = "Mongo"
    REDIS = "Redis"
    MYSQL = "MySQL"
    UDP = "UDP"
    # Neither captured nor proxied: iptables redirects TCP only.
    SCTP = "SCTP"
    UNKNOWN = "UNKNOWN"

    @property
    def is_http(self) -> bool:
        """HTTP-family protocols get an HTTP connection manager and RDS."""
        return self in _HTTP_FAMILY

    @property
    def is_http2(self) -> bool:
        """Spoken as HTTP/2 to the upstream (Istio's IsHTTP2: gRPC and gRPC-Web ride on HTTP/2)."""
        return self in (MeshProtocol.HTTP2, MeshProtocol.GRPC, MeshProtocol.GRPC_WEB)

    @property
    def sniffed(self) -> bool:
        """No protocol declared: the sidecar inspects the first bytes (HTTP/1.1, h2c, or opaque TCP)."""
        return self is MeshProtocol.UNKNOWN

    @property
    def is_tcp_proxied(self) -> bool:
        """Protocols proxied as opaque TCP (including TLS passthrough and the server-first databases)."""
        return self in _TCP_FAMILY


_HTTP_FAMILY = frozenset(
    {MeshProtocol.HTTP, MeshProtocol.HTTP2, MeshProtocol.GRPC, MeshProtocol.GRPC_WEB, MeshProtocol.HTTP_PROXY}
)
_TCP_FAMILY = frozenset(
    {MeshProtocol.TCP, MeshProtocol.TLS, MeshProtocol.HTTPS, MeshProtocol.MONGO, MeshProtocol.REDIS,
     MeshProtocol.MYSQL}
)  # fmt: skip

# Istio's protocol.Parse: case-insensitive names.
_BY_NAME = {
    "http": MeshProtocol.HTTP,
    "http2": MeshProtocol.HTTP2,
    "https": MeshProtocol.HTTPS,
    "grpc": MeshProtocol.GRPC,
    "grpc-web": MeshProtocol.GRPC_WEB,
    "http_proxy": MeshProtocol.HTTP_PROXY,
    "tcp": MeshProtocol.TCP,
    "tls": MeshProtocol.TLS,
    "mongo": MeshProtocol.MONGO,
    "redis": MeshProtocol.REDIS,
    "mysql": MeshProtocol.MYSQL,
    "udp": MeshProtocol.UDP,
}

# Kubernetes' standard appProtocol names (only meaningful as appProtocol, never as a port name).
_KUBERNETES_APP_PROTOCOLS = {
    "kubernetes.io/h2c": MeshProtocol.HTTP2,
    "kubernetes.io/ws": MeshProtocol.HTTP,
    "kubernetes.io/wss": MeshProtocol.HTTPS,
}

# Server-first protocols live on these ports; sniffing would wait for a client byte that never comes, so an
# unnamed port here is plain TCP.
SERVER_FIRST_PORTS = frozenset({25, 53, 3306, 27017})


def parse_protocol(name: str) -> MeshProtocol:
    """An Istio protocol name (``HTTP``, ``grpc``, ``TLS``...) or UNKNOWN."""
    return _BY_NAME.get(name.lower(), MeshProtocol.UNKNOWN)


def resolve_port_protocol(
    port: int, name: str | None, transport: str = "TCP", app_protocol: str | None = None
) -> MeshProtocol:
    """The mesh protocol of a Service port, as Istio selects it.

    1. ``UDP``/``SCTP`` transports are never proxied.
    2. ``appProtocol``, when set, decides alone (the port name is not consulted, as in Istio).
    3. Otherwise the port name: ``<proto>`` or ``<proto>-<suffix>`` (``http-web``, ``grpc-web-x``).
    4. Otherwise UNKNOWN (the sidecar sniffs), except on server-first ports, which are TCP.
    """
    if transport == "UDP":
        return MeshProtocol.UDP
    if transport == "SCTP":
        return MeshProtocol.SCTP
    selector = app_protocol if app_protocol is not None else (name or "")
    if app_protocol is not None and app_protocol in _KUBERNETES_APP_PROTOCOLS:
        return _KUBERNETES_APP_PROTOCOLS[app_protocol]
    lowered = selector.lower()
    if lowered.startswith("grpc-web"):
        # Checked before splitting at "-", because the protocol's own name holds one.
        protocol = MeshProtocol.GRPC_WEB
    else:
        protocol = parse_protocol(lowered.split("-", 1)[0])
        if protocol is MeshProtocol.UDP:
            # A TCP port named udp-... is still TCP; the name cannot change the transport.
            protocol = MeshProtocol.UNKNOWN
    if protocol is MeshProtocol.UNKNOWN and port in SERVER_FIRST_PORTS:
        return MeshProtocol.TCP
    return protocol
