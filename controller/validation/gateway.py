"""The Gateway's schema and checks: servers (ports, hosts, TLS) as Mizzen serves them."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from controller.validation.schema import (
    Field,
    Issues,
    Unsupported,
    boolean,
    join,
    list_of,
    map_of,
    obj,
    port_number,
    string,
)

# Port protocols Istio knows (shared with ServiceEntry ports).
PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "MYSQL", "REDIS", "UDP")


def _gateway_host() -> Any:
    def check(value: Any, path: str, out: Issues) -> None:
        if not isinstance(value, str) or not value:
            out.error(path, "must be a host name, optionally namespace/host")
            return
        ns, sep, host = value.partition("/")
        if sep and (not ns or not host):
            out.error(path, f"must be namespace/host with both parts set (got {value!r})")
        name = host if sep else value
        if "*" in name and not (name == "*" or (name.startswith("*.") and "*" not in name[1:])):
            out.error(path, f"{value!r}: a wildcard is either '*' or a leading '*.'")

    return check


_TERMINATING = ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL")
GATEWAY_TLS_MODES = ("PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL")


def _check_server(server: Mapping[str, Any], path: str, out: Issues) -> None:
    port = server.get("port") or {}
    protocol = str(port.get("protocol") or "").upper()
    tls = server.get("tls") or {}
    mode = tls.get("mode") or "PASSTHROUGH"
    if protocol in ("HTTPS", "TLS") and not tls:
        out.error(join(path, "tls"), f"is required for a {protocol} server")
    files = tls.get("serverCertificate") or tls.get("privateKey")
    if protocol in ("HTTPS", "TLS") and mode in _TERMINATING and not tls.get("credentialName") and not files:
        out.error(join(path, "tls.credentialName"), f"is required for TLS mode {mode} (or serverCertificate)")
    if files and not (tls.get("serverCertificate") and tls.get("privateKey")):
        missing = "privateKey" if tls.get("serverCertificate") else "serverCertificate"
        out.error(join(path, f"tls.{missing}"), "serverCertificate and privateKey go together")
    if files and tls.get("credentialName"):
        out.error(join(path, "tls.credentialName"), "cannot be set together with serverCertificate")
    suites = tls.get("cipherSuites")
    if isinstance(suites, list) and suites and all(isinstance(x, str) for x in suites):
        try:
            ssl.create_default_context().set_ciphers(":".join(suites))
        except ssl.SSLError:
            out.error(join(path, "tls.cipherSuites"), f"OpenSSL knows none of {', '.join(suites)}")
    if mode in ("MUTUAL", "OPTIONAL_MUTUAL") and files and not tls.get("caCertificates"):
        out.error(join(path, "tls.caCertificates"), f"is required for TLS mode {mode} with certificate files")
    if protocol == "HTTPS" and mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH"):
        out.error(join(path, "tls.mode"), f"{mode} needs protocol TLS (HTTPS terminates TLS)")
    if mode == "ISTIO_MUTUAL" and tls.get("credentialName"):
        out.error(join(path, "tls.credentialName"), "ISTIO_MUTUAL uses the gateway's workload certificate")


# Istio's Port (a Gateway server's, a Sidecar ingress listener's): a number and a protocol.
PORT = obj(
    {
        "number": Field(port_number(), required=True),
        "protocol": Field(string(enum=PROTOCOLS), required=True),
        "name": string(),
        "targetPort": port_number(),
    }
)

GATEWAY_SERVER = obj(
    {
        "port": Field(PORT, required=True),
        "hosts": Field(list_of(_gateway_host(), min_items=1), required=True),
        "name": string(),
        "bind": Unsupported("binding a server to one address"),
        "defaultEndpoint": Unsupported(),
        "tls": obj(
            {
                "httpsRedirect": boolean(),
                "mode": string(enum=GATEWAY_TLS_MODES),
                "credentialName": string(non_empty=True),
                "credentialNames": Unsupported(),
                "serverCertificate": string(non_empty=True),
                "privateKey": string(non_empty=True),
                "caCertificates": string(non_empty=True),
                "caCrl": Unsupported(),
                "subjectAltNames": list_of(string(non_empty=True)),
                "verifyCertificateSpki": Unsupported(),
                "verifyCertificateHash": Unsupported(),
                "minProtocolVersion": string(enum=("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3")),
                "maxProtocolVersion": string(enum=("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3")),
                "cipherSuites": list_of(string(non_empty=True)),
                "tlsCertificates": Unsupported(),
            }
        ),
    },
    extra=_check_server,
)


def _check_gateway(spec: Mapping[str, Any], path: str, out: Issues) -> None:
    protocols: dict[int, str] = {}
    for i, server in enumerate(spec.get("servers") or []):
        port = (server.get("port") or {}) if isinstance(server, Mapping) else {}
        number, protocol = port.get("number"), str(port.get("protocol") or "").upper()
        if not isinstance(number, int):
            continue
        first = protocols.setdefault(number, protocol)
        if first != protocol:
            where = f"servers[{i}].port.protocol"
            out.error(where, f"port {number} is {first} in another server of this Gateway")


GATEWAY = obj(
    {"selector": map_of(string()), "servers": Field(list_of(GATEWAY_SERVER, min_items=1), required=True)},
    extra=_check_gateway,
)
