"""Validation of PeerAuthentication, AuthorizationPolicy and DestinationRule TLS: what cannot be enforced is
an error naming the field, never a silent gap in a policy."""

from __future__ import annotations

from typing import Any

import pytest

from controller.validation import validate


def errors(kind: str, spec: dict[str, Any]) -> list[str]:
    raw = {"kind": kind, "metadata": {"name": "p", "namespace": "shop"}, "spec": spec}
    return [f"{i.path}: {i.message}" for i in validate(raw) if i.severity == "error"]


def test_peer_authentication() -> None:
    assert errors("PeerAuthentication", {"mtls": {"mode": "STRICT"}}) == []
    assert (
        errors(
            "PeerAuthentication",
            {"selector": {"matchLabels": {"app": "db"}}, "portLevelMtls": {"5432": {"mode": "DISABLE"}}},
        )
        == []
    )
    assert errors("PeerAuthentication", {"mtls": {"mode": "ON"}}) == [
        "mtls.mode: must be one of UNSET, DISABLE, PERMISSIVE, STRICT (got 'ON')"
    ]
    assert errors("PeerAuthentication", {"portLevelMtls": {"80": {"mode": "STRICT"}}}) == [
        "portLevelMtls: needs a workload selector (Istio applies port-level mTLS to workloads only)"
    ]
    assert errors(
        "PeerAuthentication",
        {"selector": {"matchLabels": {"a": "b"}}, "portLevelMtls": {"x": {"mode": "STRICT"}}},
    ) == ["portLevelMtls[x]: must be a port number (1-65535)"]
    assert errors("PeerAuthentication", {"selector": {"labels": {"a": "b"}}}) == [
        "selector.matchLabels: is required",
        "selector.labels: unknown field",
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/a/sa/b"]}}]}]}, []),
        (
            {"rules": [{"to": [{"operation": {"paths": ["/a/*/b"]}}]}]},
            [
                "rules[0].to[0].operation.paths[0]: '/a/*/b': '*' is allowed only at the start or the end of a path"
            ],
        ),
        (
            {"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]},
            [
                "rules[0].from[0].source.requestPrincipals: requestPrincipals needs request authentication "
                "(RequestAuthentication, JWT), which Mizzen does not enforce"
            ],
        ),
        (
            {"rules": [{"from": [{"source": {}}]}]},
            ["rules[0].from[0].source: is required"],
        ),
        (
            {"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}]},
            ["rules[0].from[0].source.ipBlocks[0]: must be an IP address or CIDR range (got '10.0.0.0/33')"],
        ),
        (
            {"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]},
            ["rules[0].to[0].operation.ports[0]: must be a port number (got 'http')"],
        ),
        (
            {"rules": [{"when": [{"key": "request.auth.claims[iss]", "values": ["x"]}]}]},
            [
                "rules[0].when[0].key: request.auth.claims[iss]: needs request authentication "
                "(RequestAuthentication, JWT), which Mizzen does not enforce"
            ],
        ),
        (
            {"rules": [{"when": [{"key": "source.banana", "values": ["x"]}]}]},
            [
                "rules[0].when[0].key: unknown key 'source.banana' (request.headers[<name>], source.ip, "
                "remote.ip, source.namespace, source.principal, destination.ip, destination.port, connection.sni)"
            ],
        ),
        (
            {"rules": [{"when": [{"key": "request.headers[x-user]"}]}]},
            ["rules[0].when[0]: values or notValues is required"],
        ),
        (
            {"action": "CUSTOM", "provider": {"name": "ext"}},
            ["action: CUSTOM (external authorization) is not supported by Mizzen"],
        ),
        ({"action": "MAYBE"}, ["action: must be one of ALLOW, DENY, AUDIT, CUSTOM (got 'MAYBE')"]),
        (
            {"selector": {"matchLabels": {"a": "b"}}, "targetRef": {"kind": "Gateway", "name": "gw"}},
            ["selector: selector and targetRef(s) cannot both be set"],
        ),
    ],
    ids=[
        "ok",
        "path-wildcard",
        "jwt",
        "empty-source",
        "cidr",
        "port",
        "when-jwt",
        "when-unknown",
        "when-no-values",
        "custom",
        "action",
        "selector-and-target",
    ],
)
def test_authorization_policy(spec: dict[str, Any], expected: list[str]) -> None:
    assert errors("AuthorizationPolicy", spec) == expected


def test_destination_rule_tls() -> None:
    def dr(tls: dict[str, Any]) -> list[str]:
        return errors("DestinationRule", {"host": "db", "trafficPolicy": {"tls": tls}})

    assert dr({"mode": "ISTIO_MUTUAL"}) == []
    assert dr({"mode": "SIMPLE", "caCertificates": "/etc/certs/ca.pem", "sni": "db.example.com"}) == []
    assert dr({"mode": "MUTUAL"}) == [
        "trafficPolicy.tls.clientCertificate: MUTUAL needs clientCertificate and privateKey"
    ]
    assert dr({"mode": "ISTIO_MUTUAL", "sni": "x"}) == [
        "trafficPolicy.tls.sni: is not used with mode ISTIO_MUTUAL"
    ]
    assert dr({"mode": "SIMPLE", "credentialName": "db-cert"}) == [
        "trafficPolicy.tls.credentialName: credentialName (certificates from a Secret) is not supported by Mizzen"
    ]
    assert dr({"mode": "TLS"}) == [
        "trafficPolicy.tls.mode: must be one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL (got 'TLS')"
    ]
