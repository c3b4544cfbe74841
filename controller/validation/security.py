"""Schemas and semantic checks for PeerAuthentication, AuthorizationPolicy and DestinationRule TLS.

These policies are enforced, so what Mizzen cannot enforce is an error, never a warning: an ALLOW rule
that silently dropped an unsupported condition would let through traffic its author meant to refuse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from controller.validation.schema import (
    Field,
    Issues,
    boolean,
    ip_or_cidr,
    join,
    list_of,
    map_of,
    obj,
    string,
)

MTLS_MODE = obj({"mode": string(enum=("UNSET", "DISABLE", "PERMISSIVE", "STRICT"))})
SELECTOR = obj({"matchLabels": Field(map_of(string()), required=True)})

# The `when` keys Istio defines that a sidecar can enforce without request authentication (JWT).
_WHEN_KEYS = (
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
    "connection.sni",
)
_HEADER_KEY = re.compile(r"^request\.headers\[([^\]]+)\]$")


def _check_peer_authentication(spec: Mapping[str, Any], path: str, out: Issues) -> None:
    ports = spec.get("portLevelMtls") or {}
    if ports and not spec.get("selector"):
        out.error(
            "portLevelMtls", "needs a workload selector (Istio applies port-level mTLS to workloads only)"
        )
    for port in ports:
        text = str(port)
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            out.error(f"portLevelMtls[{port}]", "must be a port number (1-65535)")


PEER_AUTHENTICATION = obj(
    {"selector": SELECTOR, "mtls": MTLS_MODE, "portLevelMtls": map_of(MTLS_MODE)},
    extra=_check_peer_authentication,
)


def _match_string(kind: str) -> Any:
    """Istio's string match for principals, namespaces, hosts and paths: exact, or one '*' at the start or
    the end (or '*' alone)."""

    def check(value: Any, path: str, out: Issues) -> None:
        if not isinstance(value, str) or not value:
            out.error(path, f"must be a non-empty string ({kind})")
            return
        inner = value[1:-1] if len(value) > 1 else ""
        if "*" in inner:
            out.error(path, f"{value!r}: '*' is allowed only at the start or the end of a {kind}")

    return check


def _port_string() -> Any:
    def check(value: Any, path: str, out: Issues) -> None:
        text = str(value)
        if not text.isdigit() or not 0 < int(text) < 65536:
            out.error(path, f"must be a port number (got {value!r})")

    return check


def _path_string() -> Any:
    base = _match_string("path")

    def check(value: Any, path: str, out: Issues) -> None:
        base(value, path, out)
        if isinstance(value, str) and value not in ("*",) and not value.startswith(("/", "*")):
            out.error(path, f"{value!r}: a path starts with '/' (or '*')")
        if isinstance(value, str) and "{" in value:
            out.error(path, f"{value!r}: path templates ({{*}}, {{**}}) are not supported by Mizzen")

    return check


_JWT = "needs request authentication (RequestAuthentication, JWT), which Mizzen does not enforce"


class _Refused:
    """A field whose presence is an error (it cannot be enforced)."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __call__(self, value: Any, path: str, out: Issues) -> None:
        out.error(path, self.why)


def _non_empty(kind: str) -> Any:
    def extra(value: Mapping[str, Any], path: str, out: Issues) -> None:
        if value and not any(v not in (None, [], "") for v in value.values()):  # {}: "is required" says it
            out.error(path, f"an empty {kind} is not allowed (it would match everything); set a field")

    return extra


SOURCE = obj(
    {
        "principals": list_of(_match_string("principal")),
        "notPrincipals": list_of(_match_string("principal")),
        "namespaces": list_of(_match_string("namespace")),
        "notNamespaces": list_of(_match_string("namespace")),
        "ipBlocks": list_of(ip_or_cidr()),
        "notIpBlocks": list_of(ip_or_cidr()),
        "remoteIpBlocks": list_of(ip_or_cidr()),
        "notRemoteIpBlocks": list_of(ip_or_cidr()),
        "requestPrincipals": _Refused(f"requestPrincipals {_JWT}"),
        "notRequestPrincipals": _Refused(f"notRequestPrincipals {_JWT}"),
        "serviceAccounts": _Refused("serviceAccounts is for ambient waypoints; use principals"),
        "notServiceAccounts": _Refused("notServiceAccounts is for ambient waypoints; use notPrincipals"),
    },
    extra=_non_empty("source"),
)

OPERATION = obj(
    {
        "hosts": list_of(_match_string("host")),
        "notHosts": list_of(_match_string("host")),
        "ports": list_of(_port_string()),
        "notPorts": list_of(_port_string()),
        "methods": list_of(string(non_empty=True)),
        "notMethods": list_of(string(non_empty=True)),
        "paths": list_of(_path_string()),
        "notPaths": list_of(_path_string()),
    },
    extra=_non_empty("operation"),
)


def _check_condition(cond: Mapping[str, Any], path: str, out: Issues) -> None:
    key = cond.get("key")
    if not cond.get("values") and not cond.get("notValues"):
        out.error(path, "values or notValues is required")
    if not isinstance(key, str):
        return
    if key.startswith("request.auth."):
        out.error(join(path, "key"), f"{key}: {_JWT}")
    elif key.startswith("experimental."):
        out.error(join(path, "key"), f"{key}: experimental keys are not supported by Mizzen")
    elif key == "request.headers" or (key.startswith("request.headers") and not _HEADER_KEY.match(key)):
        out.error(join(path, "key"), f"{key!r}: spell a header as request.headers[<name>]")
    elif not _HEADER_KEY.match(key) and key not in _WHEN_KEYS:
        out.error(
            join(path, "key"),
            f"unknown key {key!r} (request.headers[<name>], {', '.join(_WHEN_KEYS)})",
        )
    elif key in ("source.ip", "remote.ip", "destination.ip"):
        checker = ip_or_cidr()
        for field in ("values", "notValues"):
            for i, v in enumerate(cond.get(field) or ()):
                checker(v, f"{join(path, field)}[{i}]", out)
    elif key == "destination.port":
        checker = _port_string()
        for field in ("values", "notValues"):
            for i, v in enumerate(cond.get(field) or ()):
                checker(v, f"{join(path, field)}[{i}]", out)


CONDITION = obj(
    {
        "key": Field(string(non_empty=True), required=True),
        "values": list_of(string()),
        "notValues": list_of(string()),
    },
    extra=_check_condition,
)

RULE = obj(
    {
        "from": list_of(obj({"source": Field(SOURCE, required=True)})),
        "to": list_of(obj({"operation": Field(OPERATION, required=True)})),
        "when": list_of(CONDITION),
    }
)


def _check_authorization_policy(spec: Mapping[str, Any], path: str, out: Issues) -> None:
    action = spec.get("action") or "ALLOW"
    if action == "CUSTOM":
        out.error("action", "CUSTOM (external authorization) is not supported by Mizzen")
    if spec.get("provider") and action != "CUSTOM":
        out.error("provider", "is only for action CUSTOM")
    targeted = spec.get("targetRef") or spec.get("targetRefs")
    if targeted and spec.get("selector"):
        out.error("selector", "selector and targetRef(s) cannot both be set")
    elif targeted:
        out.warn(
            "targetRef" if spec.get("targetRef") else "targetRefs",
            "this policy targets gateways or waypoints; sidecars do not apply it",
        )
    if action == "DENY" and not spec.get("rules"):
        out.warn("rules", "a DENY policy without rules matches nothing; it has no effect")


AUTHORIZATION_POLICY = obj(
    {
        "selector": SELECTOR,
        "targetRef": obj({"group": string(), "kind": string(), "name": string(), "namespace": string()}),
        "targetRefs": list_of(
            obj({"group": string(), "kind": string(), "name": string(), "namespace": string()})
        ),
        "action": string(enum=("ALLOW", "DENY", "AUDIT", "CUSTOM")),
        "provider": obj({"name": string()}),
        "rules": list_of(RULE),
    },
    extra=_check_authorization_policy,
)


def _check_client_tls(tls: Mapping[str, Any], path: str, out: Issues) -> None:
    mode = tls.get("mode") or "DISABLE"
    files = ("clientCertificate", "privateKey", "caCertificates")
    if mode == "MUTUAL" and not (tls.get("clientCertificate") and tls.get("privateKey")):
        out.error(join(path, "clientCertificate"), "MUTUAL needs clientCertificate and privateKey")
    if mode in ("DISABLE", "ISTIO_MUTUAL"):
        for name in (*files, "subjectAltNames", "sni"):
            if tls.get(name):
                out.error(join(path, name), f"is not used with mode {mode}")
    if mode == "SIMPLE" and (tls.get("clientCertificate") or tls.get("privateKey")):
        out.error(join(path, "clientCertificate"), "SIMPLE presents no client certificate; use MUTUAL")
    if tls.get("insecureSkipVerify") and tls.get("subjectAltNames"):
        out.error(join(path, "insecureSkipVerify"), "skipping verification contradicts subjectAltNames")


CLIENT_TLS = obj(
    {
        "mode": string(enum=("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")),
        "clientCertificate": string(non_empty=True),
        "privateKey": string(non_empty=True),
        "caCertificates": string(non_empty=True),
        "credentialName": _Refused("credentialName (certificates from a Secret) is not supported by Mizzen"),
        "subjectAltNames": list_of(string(non_empty=True)),
        "sni": string(non_empty=True),
        "insecureSkipVerify": boolean(),
        "caCrl": _Refused("caCrl is not supported by Mizzen"),
    },
    extra=_check_client_tls,
)
