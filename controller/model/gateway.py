"""Istio's Gateway: which proxies (by label selector) listen on which ports for which hosts, and how TLS
is handled there. Built from objects validation has accepted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from controller.model.meta import ObjectMeta, object_meta, spec_of
from controller.model.protocol import MeshProtocol, parse_protocol
from controller.model.values import FrozenMap, ResourceKey, str_map, str_tuple


class ServerTls(msgspec.Struct, frozen=True, gc=False):
    mode: str  # PASSTHROUGH (Istio's default), SIMPLE, MUTUAL, AUTO_PASSTHROUGH, ISTIO_MUTUAL, OPTIONAL_MUTUAL
    https_redirect: bool
    credential_name: str | None
    subject_alt_names: tuple[str, ...]
    min_version: str | None
    max_version: str | None


class ServerHost(msgspec.Struct, frozen=True, gc=False):
    namespace: str  # "*": VirtualServices of any namespace; else that namespace's only
    host: str


class Server(msgspec.Struct, frozen=True, gc=False):
    number: int
    name: str
    protocol: MeshProtocol
    target_port: int | None
    hosts: tuple[ServerHost, ...]
    tls: ServerTls | None
    bind: str | None

    @property
    def terminates_tls(self) -> bool:
        return self.protocol in (MeshProtocol.HTTPS, MeshProtocol.TLS) and not self.passthrough

    @property
    def passthrough(self) -> bool:
        return self.tls is not None and self.tls.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH")


class Gateway(msgspec.Struct, frozen=True, gc=False):
    meta: ObjectMeta
    selector: FrozenMap[str]
    servers: tuple[Server, ...]

    @property
    def key(self) -> ResourceKey:
        return ResourceKey("Gateway", self.meta.namespace, self.meta.name)

    @property
    def name(self) -> str:
        """As VirtualServices name it in ``gateways``: ``namespace/name``."""
        return f"{self.meta.namespace}/{self.meta.name}"


def _host(text: str, namespace: str) -> ServerHost:
    ns, sep, host = text.partition("/")
    if not sep:
        return ServerHost("*", text)
    return ServerHost(namespace if ns == "." else ns, host)


def _tls(raw: Mapping[str, Any] | None) -> ServerTls | None:
    if not raw:
        return None
    return ServerTls(
        mode=str(raw.get("mode") or "PASSTHROUGH"),
        https_redirect=bool(raw.get("httpsRedirect", False)),
        credential_name=str(raw["credentialName"]) if raw.get("credentialName") else None,
        subject_alt_names=str_tuple(raw.get("subjectAltNames")),
        min_version=raw.get("minProtocolVersion"),
        max_version=raw.get("maxProtocolVersion"),
    )


def build_gateway(raw: Mapping[str, Any]) -> Gateway:
    meta = object_meta(raw)
    spec = spec_of(raw)
    servers = []
    for s in spec.get("servers") or ():
        port = s.get("port") or {}
        servers.append(
            Server(
                number=int(port.get("number") or 0),
                name=str(port.get("name") or s.get("name") or ""),
                protocol=parse_protocol(str(port.get("protocol") or "HTTP")),
                target_port=int(port["targetPort"]) if port.get("targetPort") is not None else None,
                hosts=tuple(_host(str(h), meta.namespace) for h in s.get("hosts") or ()),
                tls=_tls(s.get("tls")),
                bind=s.get("bind"),
            )
        )
    return Gateway(meta=meta, selector=str_map(spec.get("selector")), servers=tuple(servers))
