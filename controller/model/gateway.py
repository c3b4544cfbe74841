"""Istio's Gateway: which proxies (by label selector) listen on which ports for which hosts, and how TLS
is handled there. Built from objects validation has accepted."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import msgspec

from controller.model.meta import ObjectMeta, object_meta, spec_of
from controller.model.protocol import MeshProtocol, parse_protocol
from controller.model.values import FrozenMap, ResourceKey, str_map, str_tuple


class ServerTls(msgspec.Struct, frozen=True, gc=False):
    mode: str  # PASSTHROUGH (the default), SIMPLE, MUTUAL, AUTO_PASSTHROUGH, ISTIO_MUTUAL, OPTIONAL_MUTUAL
    https_redirect: bool
    credential_name: str | None
    subject_alt_names: tuple[str, ...]
    min_version: str | None
    max_version: str | None
    cipher_suites: tuple[str, ...] = ()
    # Files in the gateway's pod (a mounted Secret), instead of credentialName: chain, key, client CA.
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None


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
        cipher_suites=str_tuple(raw.get("cipherSuites")),
        server_certificate=raw.get("serverCertificate") or None,
        private_key=raw.get("privateKey") or None,
        ca_certificates=raw.get("caCertificates") or None,
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


class Credential(msgspec.Struct, frozen=True, gc=False):
    """A Secret as a gateway reads it: a certificate chain and key (and a CA bundle for mutual TLS).
    Secrets of other shapes hold nothing here; their contents are never kept or logged."""

    meta: ObjectMeta
    cert: bytes
    key: bytes
    ca: bytes

    @property
    def key_ref(self) -> ResourceKey:
        return ResourceKey("Secret", self.meta.namespace, self.meta.name)

    @property
    def usable(self) -> bool:
        return bool(self.cert and self.key)

    def __repr__(self) -> str:
        return f"Credential({self.meta.namespace}/{self.meta.name}, usable={self.usable})"


def _secret_value(raw: Mapping[str, Any], *names: str) -> bytes:
    data = raw.get("data") or {}
    plain = raw.get("stringData") or {}
    for name in names:
        if plain.get(name):
            return str(plain[name]).encode()
        if data.get(name):
            try:
                return base64.b64decode(str(data[name]), validate=True)
            except (binascii.Error, ValueError):
                return b""
    return b""


def build_credential(raw: Mapping[str, Any]) -> Credential:
    """kubernetes.io/tls Secrets (tls.crt, tls.key, ca.crt) and Istio's generic form (cert, key, cacert)."""
    return Credential(
        meta=object_meta(raw),
        cert=_secret_value(raw, "tls.crt", "cert"),
        key=_secret_value(raw, "tls.key", "key"),
        ca=_secret_value(raw, "ca.crt", "cacert"),
    )
