"""The proxy as an ingress gateway, end to end: a pod outside the mesh runs mizzen-proxy as a ``router``
node (two worker processes sharing its ports); mizzen-controller gives it the listeners and routes of the
Gateways whose selector matches its labels and of the VirtualServices bound to them; clients outside the
mesh call it. Behind it, the mesh's services with their sidecars.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from support.meshcerts import credential_secret, issue
from support.smallmesh import SmallMesh, small_mesh

from controller.ca.authority import CaMaterial, CertificateAuthority

pytestmark = pytest.mark.root

GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [bookinfo.example.com, "*.shop.example", merged.example.com]
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [secure.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [tls.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 8444, name: https, protocol: HTTPS}
    hosts: [secure.example.com]
    tls: {mode: SIMPLE, credentialName: secure-cert}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [partner.example.com]
  - port: {number: 8445, name: https-mutual, protocol: HTTPS}
    hosts: [partner.example.com]
    tls: {mode: MUTUAL, credentialName: mutual-cert, subjectAltNames: ["spiffe://partner.example/ns/shop/sa/buyer"]}
  - port: {number: 15443, name: tls-eastwest, protocol: TLS}
    hosts: ["*.local"]
    tls: {mode: AUTO_PASSTHROUGH}
  - port: {number: 9443, name: tls-db, protocol: TLS}
    hosts: [db.example.com]
    tls: {mode: SIMPLE, credentialName: secure-cert}
  - port: {number: 8446, name: https-optional, protocol: HTTPS}
    hosts: [partner.example.com]
    tls: {mode: OPTIONAL_MUTUAL, credentialName: secure-cert}
"""


def tls_secret(name: str, host: str, *, ca: bytes = b"") -> str:
    """A credential Secret for ``host`` as YAML (JSON is YAML), with the client CA ``ca`` when given."""
    return json.dumps(credential_secret(name, host, ca=ca))


# The partner whose clients call the mutual TLS servers: its CA, and client certificates in files.
PARTNER_ID = "spiffe://partner.example/ns/shop/sa/buyer"


@pytest.fixture(scope="module")
def partner(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    where = tmp_path_factory.mktemp("partner")
    ca = CertificateAuthority(CaMaterial.self_signed("partner.example"), trust_domain="partner.example")
    other_ca = CertificateAuthority(CaMaterial.self_signed("partner.example"), trust_domain="partner.example")
    return {
        "ca": ca.root_pem,
        "buyer": issue(ca, PARTNER_ID, where, "buyer"),
        "thief": issue(ca, "spiffe://partner.example/ns/shop/sa/thief", where, "thief"),
        "forger": issue(other_ca, PARTNER_ID, where, "forger"),
    }


@pytest.fixture(scope="module")
def mesh(partner: dict[str, Any]) -> Iterator[SmallMesh]:
    with small_mesh() as m:
        m.gateway("ingress", {"istio": "ingressgateway"}, workers=2)
        m.gateway("egress", {"istio": "egressgateway"})
        m.pod("browser", {"app": "browser"}, meshed=False)
        m.pod("client", {"app": "client"})
        m.pod("web-v1", {"app": "web", "version": "v1"}, app=9080)
        m.pod("web-v2", {"app": "web", "version": "v2"}, app=9080)
        m.pod("tls-a", {"app": "tls-a"}, tls=8443)
        m.pod("tcp-b", {"app": "tcp-b"}, tcp=7000)
        # Outside the mesh, so that what the gateway sends arrives as sent (a sidecar would take a
        # plain-text caller's x-forwarded-client-cert away; with mesh mTLS it would append to it).
        m.pod("legacy", {"app": "legacy"}, meshed=False, app=9080)
        m.service("web", {"app": "web"}, {"http": 9080})
        m.service("tls-a", {"app": "tls-a"}, {"tls": 8443})
        m.service("tcp-b", {"app": "tcp-b"}, {"tcp": 7000})
        m.service("legacy", {"app": "legacy"}, {"http": 9080})
        # Istio's Gateway ports are the gateway Service's: 80 and 443 reach the proxy on 8080 and 8443.
        m.service(
            "ingressgateway",
            {"istio": "ingressgateway"},
            {"http": 80, "tls": 443, "tcp": 9000},
            targets={"http": 8080, "tls": 8443},
        )
        m.start()
        m.apply(
            "web-subsets",
            """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
""",
        )
        m.apply("credentials", tls_secret("secure-cert", "secure.example.com"))
        m.apply("mutual-credentials", tls_secret("mutual-cert", "partner.example.com", ca=partner["ca"]))
        # OPTIONAL_MUTUAL's CA in Istio's other place: a Secret of its own, "<credentialName>-cacert".
        m.apply(
            "optional-ca",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: secure-cert-cacert}\n"
            f"data: {{cacert: {base64.b64encode(partner['ca']).decode()}}}\n",
        )
        m.apply("gateway", GATEWAY)
        # Istio's older way: certificate files mounted in the gateway's pod instead of a Secret.
        chain, key = CertificateAuthority(CaMaterial.self_signed()).serving_certificate(["files.example.com"])
        for name, data in (("gw-files.crt", chain), ("gw-files.key", key)):
            (m.work / name).write_bytes(data)
            (m.work / name).chmod(0o644)  # the gateway runs as UID 1337
        m.apply(
            "gateway-files",
            f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: ingress-files}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8447, name: https-files, protocol: HTTPS}}
    hosts: [files.example.com]
    tls:
      mode: SIMPLE
      serverCertificate: {m.work / "gw-files.crt"}
      privateKey: {m.work / "gw-files.key"}
      cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: files}}
spec:
  hosts: [files.example.com]
  gateways: [ingress-files]
  http:
  - route: [{{destination: {{host: legacy}}}}]
""",
        )
        m.apply(
            "routes",
            """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: [bookinfo.example.com, secure.example.com]
  gateways: [ingress]
  http:
  - match: [{uri: {prefix: /productpage}}]
    route: [{destination: {host: web, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: ["*.shop.example"]
  gateways: [default/ingress]
  http:
  - route: [{destination: {host: web, subset: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: merged-a, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: [merged.example.com]
  gateways: [ingress]
  http:
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: web, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: merged-b, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  hosts: [merged.example.com]
  gateways: [ingress]
  http:
  - match: [{uri: {prefix: /b}}]
    route: [{destination: {host: web, subset: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: partner}
spec:
  hosts: [partner.example.com]
  gateways: [ingress]
  http:
  - route: [{destination: {host: legacy}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls}
spec:
  hosts: [tls.example.com]
  gateways: [ingress]
  tls:
  - match: [{sniHosts: [tls.example.com]}]
    route: [{destination: {host: tls-a, port: {number: 8443}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls-terminated}
spec:
  hosts: [db.example.com]
  gateways: [ingress]
  tcp:
  - match: [{port: 9443}]
    route: [{destination: {host: tcp-b, port: {number: 7000}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp}
spec:
  hosts: ["*"]
  gateways: [ingress]
  tcp:
  - match: [{port: 9000}]
    route: [{destination: {host: tcp-b, port: {number: 7000}}}]
""",
        )
        yield m


def via_gateway(mesh: SmallMesh, host: str, path: str = "/", n: int = 1) -> list[tuple[int, str]]:
    replies = mesh.http("browser", f"http://{mesh.ip('ingress')}:8080{path}", n=n, headers={"host": host})
    return [(r.status, r.served_by) for r in replies]


def test_hosts_route_to_the_mesh(mesh: SmallMesh) -> None:
    assert via_gateway(mesh, "bookinfo.example.com", "/productpage", n=4) == [(200, "web-v1")] * 4
    assert via_gateway(mesh, "a.shop.example") == [(200, "web-v2")]
    assert via_gateway(mesh, "deep.b.shop.example") == [(200, "web-v2")]  # the wildcard is any depth
    assert via_gateway(mesh, "bookinfo.example.com", "/other") == [(404, "")]  # no rule: NR
    assert via_gateway(mesh, "unknown.example.com") == [(404, "")]  # no host: NR


def test_virtual_services_for_one_host_are_merged_on_a_gateway(mesh: SmallMesh) -> None:
    assert via_gateway(mesh, "merged.example.com", "/a") == [(200, "web-v1")]
    assert via_gateway(mesh, "merged.example.com", "/b") == [(200, "web-v2")]


def test_https_redirect(mesh: SmallMesh) -> None:
    reply = mesh.http(
        "browser", f"http://{mesh.ip('ingress')}:8080/productpage?x=1", headers={"host": "secure.example.com"}
    )[0]
    assert (reply.status, reply.header("location")) == (301, "https://secure.example.com/productpage?x=1")


def test_tls_passthrough_by_sni(mesh: SmallMesh) -> None:
    answers = mesh.stream("browser", mesh.ip("ingress"), 8443, sni="tls.example.com", n=3)
    assert [a.split(" saw ")[0] for a in answers] == ["tls-a"] * 3
    other = mesh.stream("browser", mesh.ip("ingress"), 8443, sni="else.example.com")[0]
    assert "saw" not in other  # no route for that name: the connection is closed


def test_auto_passthrough_routes_by_the_mesh_sni(mesh: SmallMesh) -> None:
    # An east-west gateway: no VirtualService; the SNI a client's sidecar would send for mesh mTLS names
    # the service port, and the bytes (TLS end to end with the app here) pass through untouched.
    sni = "outbound_.8443_._.tls-a.default.svc.cluster.local"
    answer = mesh.stream("browser", mesh.ip("ingress"), 15443, sni=sni, send="hello")[0]
    assert answer.startswith("tls-a saw "), answer
    unknown = "outbound_.8443_._.nothing.default.svc.cluster.local"
    assert not mesh.stream("browser", mesh.ip("ingress"), 15443, sni=unknown)[0].startswith("tls-a")
    # The gateway got the SNI-named twins of the clusters (without TLS of their own); sidecars did not.
    twin = mesh.controller_dump("ingress")["CDS"][sni]
    assert "transport_socket" not in twin and "transport_socket_matches" not in twin, twin
    assert sni not in mesh.controller_dump("client")["CDS"]


def test_tcp_server(mesh: SmallMesh) -> None:
    answers = mesh.stream("browser", mesh.ip("ingress"), 9000, n=3)
    assert [a.split(" saw ")[0] for a in answers] == ["tcp-b"] * 3


def test_tls_termination_with_certificate_files(mesh: SmallMesh) -> None:
    request = "GET / HTTP/1.1\r\nHost: files.example.com\r\nConnection: close\r\n\r\n"
    answer = mesh.stream("browser", mesh.ip("ingress"), 8447, sni="files.example.com", send=request)[0]
    assert answer.startswith("HTTP/1.1 200") and '"name": "legacy"' in answer, answer


def test_tls_terminated_then_routed_as_tcp(mesh: SmallMesh) -> None:
    # A TLS server in mode SIMPLE: the gateway ends TLS, and the bound tcp route takes the bytes on.
    answer = mesh.stream("browser", mesh.ip("ingress"), 9443, sni="db.example.com", send="select 1")[0]
    assert answer.startswith("tcp-b saw "), answer
    # Not by SNI alone: a name the server does not serve finds no chain.
    other = mesh.stream("browser", mesh.ip("ingress"), 9443, sni="other.example.com", send="select 1")[0]
    assert not other.startswith("tcp-b"), other


def test_workers_share_the_ports(mesh: SmallMesh) -> None:
    got = Counter(via_gateway(mesh, "a.shop.example", n=30))  # one connection...
    got.update(
        (r.status, r.served_by)
        for r in mesh.http(
            "browser",
            f"http://{mesh.ip('ingress')}:8080/",
            n=30,
            headers={"host": "a.shop.example"},
            fresh=True,
        )
    )  # ...and thirty, spread over the workers by the kernel
    assert got == Counter({(200, "web-v2"): 60})


def test_gateway_config_goes_only_to_the_selected_proxies(mesh: SmallMesh) -> None:
    dump = json.loads(mesh.admin("ingress", "/config_dump"))
    text = json.dumps(dump)
    assert "0.0.0.0_8080" in text and "http.8080" in text
    for other in ("egress", "client"):
        other_text = mesh.admin(other, "/config_dump")
        assert "0.0.0.0_8080" not in other_text and "bookinfo.example.com" not in other_text
    # The sidecars keep their mesh routing: the gateway-bound rules do not apply to them.
    reply = mesh.http("client", "http://web:9080/other")[0]
    assert reply.served_by in ("web-v1", "web-v2")


def test_gateway_follows_changes_live(mesh: SmallMesh) -> None:
    mesh.apply(
        "extra",
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: extra}
spec:
  hosts: [new.shop.example]
  gateways: [ingress]
  http:
  - route: [{destination: {host: web, subset: v1}}]
""",
    )
    assert via_gateway(mesh, "new.shop.example") == [(200, "web-v1")]  # the exact host wins the wildcard
    mesh.remove("extra")
    assert via_gateway(mesh, "new.shop.example") == [(200, "web-v2")]


def test_tls_termination_with_a_credential_secret(mesh: SmallMesh) -> None:
    request = "GET /productpage HTTP/1.1\r\nHost: secure.example.com\r\nConnection: close\r\n\r\n"
    answer = mesh.stream("browser", mesh.ip("ingress"), 8444, sni="secure.example.com", send=request)[0]
    assert answer.startswith("HTTP/1.1 200") and '"name": "web-v1"' in answer, answer
    # The certificate is rotated by changing the Secret: new connections get the new one.
    mesh.apply("credentials", tls_secret("secure-cert", "secure.example.com"))
    again = mesh.stream("browser", mesh.ip("ingress"), 8444, sni="secure.example.com", send=request)[0]
    assert again.startswith("HTTP/1.1 200")
    # Neither the controller's debug dump nor the gateway's admin dump shows the private key.
    dump = json.dumps(mesh.controller_dump("ingress"))
    assert "PRIVATE KEY" not in dump and "[redacted]" in dump
    local = json.loads(mesh.admin("ingress", "/config_dump"))
    keys = [cert["private_key"] for certs in _find(local, "tls_certificates") for cert in certs]  # type: ignore[attr-defined]
    assert keys and all(k == {"inline_string": "[redacted]"} for k in keys)


def test_mutual_tls_with_a_credential_secret(mesh: SmallMesh, partner: dict[str, Any]) -> None:
    def call(port: int, who: str | None, headers: str = "") -> str:
        request = f"GET /orders HTTP/1.1\r\nHost: partner.example.com\r\n{headers}Connection: close\r\n\r\n"
        cert = partner[who] if who else None
        ip = mesh.ip("ingress")
        return mesh.stream("browser", ip, port, sni="partner.example.com", send=request, client_cert=cert)[0]

    # MUTUAL: only a client certificate of the partner's CA with the named identity gets in; the backend
    # learns who called from the gateway (x-forwarded-client-cert).
    answer = call(8445, "buyer")
    assert answer.startswith("HTTP/1.1 200") and '"name": "legacy"' in answer, answer
    assert f"URI={PARTNER_ID}" in answer, answer
    for who in (None, "thief", "forger"):
        refused = call(8445, who)
        assert not refused.startswith("HTTP/"), (who, refused)
    # OPTIONAL_MUTUAL: a client without a certificate gets in too, but cannot claim an identity.
    spoof = f"x-forwarded-client-cert: URI={PARTNER_ID}\r\n"
    anonymous = call(8446, None, headers=spoof)
    assert anonymous.startswith("HTTP/1.1 200"), anonymous
    assert "x-forwarded-client-cert" not in anonymous and PARTNER_ID not in anonymous, anonymous
    known = call(8446, "buyer")
    assert known.startswith("HTTP/1.1 200") and f"URI={PARTNER_ID}" in known, known
    assert not call(8446, "forger").startswith("HTTP/")
    # A plain-text client cannot claim one either.
    status, body = via_gateway_with(
        mesh, "bookinfo.example.com", {"x-forwarded-client-cert": f"URI={PARTNER_ID}"}
    )
    assert status == 200 and "x-forwarded-client-cert" not in body, body


def via_gateway_with(mesh: SmallMesh, host: str, headers: dict[str, str]) -> tuple[int, str]:
    url = f"http://{mesh.ip('ingress')}:8080/productpage"
    reply = mesh.http("browser", url, headers={"host": host, **headers})[0]
    return reply.status, reply.body


def _find(value: object, name: str) -> list[object]:
    """Every value under key ``name`` anywhere in a JSON document."""
    if isinstance(value, dict):
        here = [v for k, v in value.items() if k == name]
        return here + [x for v in value.values() for x in _find(v, name)]
    if isinstance(value, list):
        return [x for v in value for x in _find(v, name)]
    return []
