"""Validation: messages name object and field; unknown fields are errors, unsupported ones warnings."""

from __future__ import annotations

from typing import Any

import pytest

from controller.model.meta import key_of
from controller.validation import validate


def vs(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": spec,
    }


def messages(raw: dict[str, Any], severity: str = "error") -> list[str]:
    return [i.format(key_of(raw)) for i in validate(raw) if i.severity == severity]


def test_weights_must_sum_to_100_names_object_and_field() -> None:
    raw = vs(
        {
            "hosts": ["reviews"],
            "http": [
                {"route": [{"destination": {"host": "reviews"}}]},
                {
                    "route": [
                        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
                        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 40},
                    ]
                },
            ],
        }
    )
    assert messages(raw) == [
        "VirtualService default/reviews: http[1].route[0].weight: weights must sum to 100 (they sum to 90)"
    ]


def test_single_destination_needs_no_weight() -> None:
    assert (
        messages(vs({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}))
        == []
    )


def test_unknown_field_is_an_error_unsupported_field_a_warning() -> None:
    raw = vs(
        {
            "hosts": ["reviews"],
            "http": [
                {
                    "route": [{"destination": {"host": "reviews"}}],
                    "timeot": "1s",
                    "fault": {"delay": {"fixedDelay": "1s", "exponentialDelay": "2s"}},
                }
            ],
        }
    )
    assert messages(raw) == ["VirtualService default/reviews: http[0].timeot: unknown field"]
    assert messages(raw, "warning") == [
        "VirtualService default/reviews: http[0].fault.delay.exponentialDelay: "
        "not supported by Mizzen yet; ignored"
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"hosts": []}, "at least one of http, tcp or tls must be set"),
        (
            {"hosts": [], "http": [{"delegate": {"name": "d"}}]},
            "http[0].delegate: only one level of delegation is supported",
        ),
        (
            {"hosts": ["r"], "http": [{"route": [{"destination": {}}]}]},
            "http[0].route[0].destination.host: is required",
        ),
        (
            {"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}}], "timeout": "soon"}]},
            "http[0].timeout",
        ),
        (
            {
                "hosts": ["r"],
                "http": [
                    {"match": [{"uri": {"regex": "(unclosed"}}], "route": [{"destination": {"host": "r"}}]}
                ],
            },
            "http[0].match[0].uri.regex: invalid regular expression",
        ),
        (
            {
                "hosts": ["r"],
                "http": [
                    {
                        "match": [{"uri": {"exact": "/a", "prefix": "/b"}}],
                        "route": [{"destination": {"host": "r"}}],
                    }
                ],
            },
            "http[0].match[0].uri: only one of exact, prefix, regex may be set",
        ),
        (
            {
                "hosts": ["r"],
                "http": [
                    {
                        "match": [{"headers": {"X-User": {"exact": "a"}}}],
                        "route": [{"destination": {"host": "r"}}],
                    }
                ],
            },
            "http[0].match[0].headers[X-User]: header names must be lower case",
        ),
        (
            {
                "hosts": ["r"],
                "http": [{"route": [{"destination": {"host": "r", "port": {"number": 70000}}}]}],
            },
            "port.number: must be at most 65535",
        ),
        (
            {"hosts": ["*"], "http": [{"route": [{"destination": {"host": "r"}}]}]},
            "hosts[0]: the wildcard host",
        ),
        ({"hosts": ["r"]}, "at least one of http, tcp or tls must be set"),
    ],
)
def test_virtual_service_errors(spec: dict[str, Any], expected: str) -> None:
    errors = messages(vs(spec))
    assert any(expected in e for e in errors), errors
    assert all(e.startswith("VirtualService default/reviews: ") for e in errors)


def test_destination_rule_checks() -> None:
    raw: dict[str, Any] = {
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "host": "reviews",
            "trafficPolicy": {"loadBalancer": {"simple": "FASTEST"}, "outlierDetection": {"interval": "0s"}},
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v1", "labels": {"version": "v2"}},
            ],
        },
    }
    errors = messages(raw)
    assert "DestinationRule default/reviews: trafficPolicy.loadBalancer.simple: must be one of" in errors[0]
    assert any("trafficPolicy.outlierDetection.interval: must be greater than zero" in e for e in errors)
    # The semantic check (duplicate subsets) waits until shapes are right; fix the shapes and it shows.
    raw["spec"]["trafficPolicy"] = {"loadBalancer": {"simple": "RANDOM", "warmupDurationSecs": "10s"}}
    assert messages(raw) == ["DestinationRule default/reviews: subsets[1].name: duplicate subset name 'v1'"]
    assert messages(raw, "warning") == [
        "DestinationRule default/reviews: trafficPolicy.loadBalancer.warmupDurationSecs: "
        "not supported by Mizzen yet; ignored"
    ]
    both = {"distribute": [{"from": "r/*", "to": {"r/z": 100}}], "failoverPriority": ["version"]}
    raw["spec"] = {"host": "reviews", "trafficPolicy": {"loadBalancer": {"localityLbSetting": both}}}
    assert messages(raw) == [
        "DestinationRule default/reviews: trafficPolicy.loadBalancer.localityLbSetting.failoverPriority: "
        "cannot be set together with distribute"
    ]


def test_service_entry_checks() -> None:
    raw = {
        "kind": "ServiceEntry",
        "metadata": {"name": "ext", "namespace": "default"},
        "spec": {
            "hosts": ["db.internal"],
            "resolution": "STATIC",
            "ports": [{"number": 5432, "name": "tcp", "protocol": "TCP"}],
            "endpoints": [{"address": "db.example.com", "ports": {"pg": 5433}}],
        },
    }
    assert messages(raw) == [
        "ServiceEntry default/ext: endpoints[0].address: resolution STATIC needs an IP address",
        "ServiceEntry default/ext: endpoints[0].ports[pg]: names no port of this ServiceEntry",
    ]
    selecting = {**raw["spec"], "workloadSelector": {"labels": {"app": "db"}}, "resolution": "DNS"}
    assert messages({**raw, "spec": selecting}) == [
        "ServiceEntry default/ext: endpoints[0].ports[pg]: names no port of this ServiceEntry",
        "ServiceEntry default/ext: workloadSelector: endpoints and workloadSelector cannot both be set",
        "ServiceEntry default/ext: resolution: must be STATIC with a workloadSelector (its endpoints are pod "
        "addresses)",
        "ServiceEntry default/ext: location: must be MESH_INTERNAL with a workloadSelector (it selects mesh "
        "workloads)",
    ]
    good = {**selecting, "resolution": "STATIC", "location": "MESH_INTERNAL", "endpoints": []}
    assert messages({**raw, "spec": good}) == [] and messages({**raw, "spec": good}, "warning") == []


def test_sidecar_egress_host_format() -> None:
    raw = {
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": "shop"},
        "spec": {"egress": [{"hosts": ["reviews"]}]},
    }
    assert messages(raw) == [
        "Sidecar shop/default: egress[0].hosts[0]: "
        "must be namespace/host, e.g. ./* or istio-system/* (got 'reviews')"
    ]


def test_gateway_tls_modes() -> None:
    def gw(protocol: str, tls: dict[str, Any], severity: str = "error") -> list[str]:
        server = {
            "port": {"number": 443, "name": "s", "protocol": protocol},
            "hosts": ["a.example"],
            "tls": tls,
        }
        raw = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "default"},
            "spec": {"servers": [server]},
        }
        return messages(raw, severity)

    for mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
        assert gw("HTTPS", {"mode": mode, "credentialName": "c"}) == []
        assert gw("HTTPS", {"mode": mode, "credentialName": "c"}, "warning") == []
        assert gw("HTTPS", {"mode": mode}) == [
            f"Gateway default/gw: servers[0].tls.credentialName: is required for TLS mode {mode} "
            "(or serverCertificate)"
        ]
    files = {"serverCertificate": "/etc/certs/tls.crt", "privateKey": "/etc/certs/tls.key"}
    assert gw("HTTPS", {"mode": "SIMPLE", **files, "cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256"]}) == []
    assert gw("HTTPS", {"mode": "SIMPLE", "serverCertificate": "/c"}) == [
        "Gateway default/gw: servers[0].tls.privateKey: serverCertificate and privateKey go together"
    ]
    assert gw("HTTPS", {"mode": "MUTUAL", **files}) == [
        "Gateway default/gw: servers[0].tls.caCertificates: "
        "is required for TLS mode MUTUAL with certificate files"
    ]
    assert gw("HTTPS", {"mode": "SIMPLE", "credentialName": "c", "cipherSuites": ["NOT-A-CIPHER"]}) == [
        "Gateway default/gw: servers[0].tls.cipherSuites: OpenSSL knows none of NOT-A-CIPHER"
    ]
    assert gw("HTTPS", {"mode": "ISTIO_MUTUAL"}) == []
    assert gw("HTTPS", {"mode": "ISTIO_MUTUAL"}, "warning") == []
    assert gw("HTTPS", {"mode": "ISTIO_MUTUAL", "credentialName": "c"}) == [
        "Gateway default/gw: servers[0].tls.credentialName: "
        "ISTIO_MUTUAL uses the gateway's workload certificate"
    ]
    assert gw("TLS", {"mode": "MUTUAL", "credentialName": "c"}, "warning") == []  # TCP after termination
    assert (
        gw("TLS", {"mode": "AUTO_PASSTHROUGH"}) == []
        and gw("TLS", {"mode": "AUTO_PASSTHROUGH"}, "warning") == []
    )
    assert gw("HTTPS", {"mode": "AUTO_PASSTHROUGH"}) == [
        "Gateway default/gw: servers[0].tls.mode: AUTO_PASSTHROUGH needs protocol TLS (HTTPS terminates TLS)"
    ]


def test_sidecar_ingress_default_endpoints() -> None:
    def ingress(endpoint: str) -> list[str]:
        listener = {"port": {"number": 80, "protocol": "HTTP", "name": "http"}, "defaultEndpoint": endpoint}
        return messages({"kind": "Sidecar", "metadata": {"name": "s"}, "spec": {"ingress": [listener]}})

    assert ingress("127.0.0.1:8080") == [] and ingress("0.0.0.0:8080") == []
    assert ingress("unix:///var/run/app.sock") == [
        "Sidecar default/s: ingress[0].defaultEndpoint: must be 127.0.0.1:PORT (the app on loopback) or "
        "0.0.0.0:PORT (the pod's address); got 'unix:///var/run/app.sock' (unix sockets are not supported)"
    ]
    assert ingress("10.0.0.1:8080") == [
        "Sidecar default/s: ingress[0].defaultEndpoint: must be 127.0.0.1:PORT (the app on loopback) or "
        "0.0.0.0:PORT (the pod's address); got '10.0.0.1:8080'"
    ]


def test_security_kinds_are_enforced_and_say_so_only_when_a_policy_cannot_act() -> None:
    raw = {
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny", "namespace": "default"},
        "spec": {"action": "DENY"},
    }
    assert messages(raw) == []
    # Enforced: the only warning left is that a DENY policy without rules matches nothing.
    assert messages(raw, "warning") == [
        "AuthorizationPolicy default/deny: rules: a DENY policy without rules matches nothing; it has no effect"
    ]


def test_metadata_and_kubernetes_kinds() -> None:
    assert messages({"kind": "Service", "metadata": {"name": "Bad_Name"}}) == [
        "Service default/Bad_Name: metadata.name: must be a DNS subdomain "
        "(lower case letters, digits, '-' and '.'; got 'Bad_Name')"
    ]
    svc = {
        "kind": "Service",
        "metadata": {"name": "a", "namespace": "x"},
        "spec": {"ports": [{"port": 0}, {"name": "b"}]},
    }
    assert messages(svc) == [
        "Service x/a: spec.ports[0].port: must be at least 1 (got 0)",
        "Service x/a: spec.ports[1].port: is required",
    ]


def test_validation_never_raises_on_garbage() -> None:
    for raw in (
        {},
        {"kind": "VirtualService"},
        {"kind": "VirtualService", "metadata": {"name": "a"}, "spec": 3},
        {"kind": "DestinationRule", "metadata": {"name": "a"}, "spec": {"subsets": "x"}},
    ):
        assert messages(raw)  # each has at least one error, none raises
