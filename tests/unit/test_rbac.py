"""AuthorizationPolicy end to end without sockets: Istio YAML -> the controller's RBAC config -> the sidecar's
compiled engine -> a verdict, for each kind of rule, on HTTP and on TCP chains."""

from __future__ import annotations

from typing import Any

import pytest

from controller.model.security import build_authorization_policy
from controller.xds import security
from fastpath.config.errors import ConfigError, Resource
from fastpath.rbac import ALLOW, DENY, LOG, RbacEngine, RbacInput, compile_rbac

CLIENT = "spiffe://cluster.local/ns/default/sa/client"
OTHER = "spiffe://cluster.local/ns/other/sa/robot"


def engines(*specs: dict[str, Any], tcp: bool = False) -> list[RbacEngine]:
    policies = [
        build_authorization_policy({"metadata": {"name": f"p{i}", "namespace": "default"}, "spec": spec})
        for i, spec in enumerate(specs)
    ]
    return [
        compile_rbac(Resource("Listener", "x"), "", rbac) for _, rbac in security.rbac_configs(policies, tcp)
    ]


def allowed(found: list[RbacEngine], **kw: Any) -> bool:
    headers = {k.encode(): v.encode() for k, v in (kw.pop("headers", None) or {}).items()}
    ctx = RbacInput(
        principal=kw.get("principal", ""),
        source_ip=kw.get("ip", "10.0.0.1"),
        dest_ip=kw.get("dest_ip", "10.0.0.9"),
        dest_port=kw.get("port", 8080),
        sni=kw.get("sni", ""),
        headers=(headers.get if not kw.get("tcp") else None),
        method=None if kw.get("tcp") else kw.get("method", "GET"),
        path=None if kw.get("tcp") else kw.get("path", "/"),
        host=None if kw.get("tcp") else kw.get("host", "web.default.svc.cluster.local"),
    )
    for engine in found:  # Istio's order: AUDIT, DENY, ALLOW -- the first refusal wins
        ok, _ = engine.evaluate(ctx)
        if engine.action != LOG and not ok:
            return False
    return True


def test_no_policy_allows_and_an_allow_policy_without_rules_denies_all() -> None:
    assert allowed(engines())
    deny_all = engines({"action": "ALLOW"})
    assert not allowed(deny_all, principal=CLIENT)
    allow_all = engines({"rules": [{}]})
    assert allowed(allow_all) and allowed(allow_all, principal=OTHER)
    # A DENY policy without rules matches nothing.
    assert allowed(engines({"action": "DENY"}))


@pytest.mark.parametrize(
    ("source", "yes", "no"),
    [
        ({"principals": ["cluster.local/ns/default/sa/client"]}, {"principal": CLIENT}, {"principal": OTHER}),
        ({"principals": ["*"]}, {"principal": OTHER}, {"principal": ""}),
        ({"principals": ["cluster.local/ns/other/*"]}, {"principal": OTHER}, {"principal": CLIENT}),
        ({"principals": ["*/sa/client"]}, {"principal": CLIENT}, {"principal": OTHER}),
        (
            {"notPrincipals": ["cluster.local/ns/default/sa/client"]},
            {"principal": OTHER},
            {"principal": CLIENT},
        ),
        ({"namespaces": ["other"]}, {"principal": OTHER}, {"principal": CLIENT}),
        ({"namespaces": ["oth*"]}, {"principal": OTHER}, {"principal": CLIENT}),
        ({"notNamespaces": ["other"]}, {"principal": CLIENT}, {"principal": OTHER}),
        ({"ipBlocks": ["10.1.0.0/16"]}, {"ip": "10.1.2.3"}, {"ip": "10.2.0.1"}),
        ({"notIpBlocks": ["10.1.0.0/16"]}, {"ip": "10.2.0.1"}, {"ip": "10.1.2.3"}),
        ({"remoteIpBlocks": ["192.168.0.1"]}, {"ip": "192.168.0.1"}, {"ip": "192.168.0.2"}),
    ],
)
def test_sources(source: dict[str, Any], yes: dict[str, Any], no: dict[str, Any]) -> None:
    found = engines({"rules": [{"from": [{"source": source}]}]})
    assert allowed(found, **yes)
    assert not allowed(found, **no)


@pytest.mark.parametrize(
    ("operation", "yes", "no"),
    [
        ({"paths": ["/api/*"]}, {"path": "/api/v1"}, {"path": "/admin"}),
        ({"paths": ["*.html"]}, {"path": "/a/b.html"}, {"path": "/a/b.json"}),
        ({"paths": ["/exact"]}, {"path": "/exact"}, {"path": "/exact/more"}),
        ({"notPaths": ["/private*"]}, {"path": "/public"}, {"path": "/private/x"}),
        ({"methods": ["GET", "HEAD"]}, {"method": "HEAD"}, {"method": "POST"}),
        ({"notMethods": ["DELETE"]}, {"method": "GET"}, {"method": "DELETE"}),
        ({"hosts": ["*.example.com"]}, {"host": "API.example.com"}, {"host": "example.org"}),
        ({"notHosts": ["internal*"]}, {"host": "public"}, {"host": "internal.svc"}),
        ({"ports": ["8080"]}, {"port": 8080}, {"port": 9090}),
        ({"notPorts": ["8080"]}, {"port": 9090}, {"port": 8080}),
    ],
)
def test_operations(operation: dict[str, Any], yes: dict[str, Any], no: dict[str, Any]) -> None:
    found = engines({"rules": [{"to": [{"operation": operation}]}]})
    assert allowed(found, **yes)
    assert not allowed(found, **no)


@pytest.mark.parametrize(
    ("condition", "yes", "no"),
    [
        (
            {"key": "request.headers[x-user]", "values": ["alice", "bob*"]},
            {"headers": {"x-user": "bobby"}},
            {},
        ),
        (
            {"key": "request.headers[x-user]", "notValues": ["mallory"]},
            {"headers": {"x-user": "al"}},
            {"headers": {"x-user": "mallory"}},
        ),
        ({"key": "source.ip", "values": ["10.0.0.0/8"]}, {"ip": "10.9.9.9"}, {"ip": "11.0.0.1"}),
        ({"key": "source.namespace", "values": ["default"]}, {"principal": CLIENT}, {"principal": OTHER}),
        (
            {"key": "source.principal", "values": ["cluster.local/ns/other/sa/robot"]},
            {"principal": OTHER},
            {"principal": CLIENT},
        ),
        ({"key": "destination.port", "values": ["8080"]}, {"port": 8080}, {"port": 1}),
        ({"key": "destination.ip", "values": ["10.0.0.9"]}, {"dest_ip": "10.0.0.9"}, {"dest_ip": "10.0.0.8"}),
        ({"key": "connection.sni", "values": ["*.local"]}, {"sni": "a.local"}, {"sni": "a.remote"}),
    ],
)
def test_when(condition: dict[str, Any], yes: dict[str, Any], no: dict[str, Any]) -> None:
    found = engines({"rules": [{"when": [condition]}]})
    assert allowed(found, **yes)
    assert not allowed(found, **no)


def test_deny_is_evaluated_before_allow() -> None:
    found = engines(
        {"rules": [{"from": [{"source": {"principals": ["*"]}}]}]},
        {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]},
    )
    assert [e.action for e in found] == [DENY, ALLOW]
    assert allowed(found, principal=CLIENT, path="/")
    assert not allowed(found, principal=CLIENT, path="/admin/users")
    assert not allowed(found, principal="", path="/")


def test_audit_only_records() -> None:
    found = engines({"action": "AUDIT", "rules": [{"to": [{"operation": {"paths": ["/audited"]}}]}]})
    assert [e.action for e in found] == [LOG]
    ok, policy = found[0].evaluate(RbacInput(path="/audited", method="GET", host="x"))
    assert ok and policy == "ns[default]-policy[p0]-rule[0]"
    assert allowed(found, path="/other")


def test_tcp_chains_fail_closed_on_http_only_rules() -> None:
    # ALLOW: a rule that needs HTTP cannot match a TCP connection (so it is denied) ...
    allow_http = engines({"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}, tcp=True)
    assert not allowed(allow_http, tcp=True, principal=CLIENT)
    # ... while the TCP-visible parts of a rule still work there.
    allow_port = engines({"rules": [{"to": [{"operation": {"ports": ["8080"]}}]}]}, tcp=True)
    assert allowed(allow_port, tcp=True, port=8080)
    # DENY: the HTTP-only parts are dropped, so the rule denies more, never less.
    deny = engines(
        {
            "action": "DENY",
            "rules": [
                {"from": [{"source": {"namespaces": ["other"]}}], "to": [{"operation": {"paths": ["/x"]}}]}
            ],
        },
        tcp=True,
    )
    assert not allowed(deny, tcp=True, principal=OTHER)
    assert allowed(deny, tcp=True, principal=CLIENT)
    when_header = engines(
        {"action": "DENY", "rules": [{"when": [{"key": "request.headers[x]", "values": ["1"]}]}]}, tcp=True
    )
    assert not allowed(when_header, tcp=True)


def test_the_sidecar_refuses_rbac_it_cannot_evaluate() -> None:
    from envoy.config.rbac.v3 import rbac_pb2

    rbac = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW)
    policy = rbac.policies["p"]
    policy.permissions.add().any = True
    policy.principals.add().metadata.filter = "istio_authn"
    with pytest.raises(ConfigError, match=r"policies\['p'\]\.principals\[0\]\.metadata: not supported"):
        compile_rbac(Resource("Listener", "virtualInbound"), "rules", rbac)
