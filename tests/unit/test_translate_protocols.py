"""Protocol selection in the translation (Istio's rules): the HTTP version each cluster speaks upstream
(HTTP/2 for gRPC and HTTP2 ports, the client's own for ports whose protocol is sniffed, DestinationRule's
h2UpgradePolicy, useClientProtocol and maxConcurrentStreams), outbound and inbound listeners that sniff a port
with no declared protocol (HTTP chains for HTTP/1.1 and h2c, and under mutual TLS for Istio's HTTP ALPN), and
the istio.alpn filter that makes a client's mutual TLS say which protocol it carries. The sidecar's own config
layer accepts all of it."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import yaml

from controller.model.snapshot import MeshState
from controller.model.values import FrozenMap
from controller.xds.dump import decode, dump
from controller.xds.generator import Translator
from controller.xds.node import ProxyNode
from controller.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from fastpath.config import ProxyConfig
from fastpath.config.listeners import select_chain

MESH = """
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: default}
spec:
  clusterIP: 10.96.0.30
  selector: {app: shop}
  ports:
  - {port: 8080}                              # no name: sniffed
  - {name: grpc-api, port: 50051}
  - {name: http, port: 80, targetPort: 8000}
  - {name: web, port: 81, appProtocol: kubernetes.io/h2c}
  - {name: db, port: 3306}                    # server-first: TCP, never sniffed
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: shop-1, namespace: default, labels: {kubernetes.io/service-name: shop}}
addressType: IPv4
ports: [{port: 8080}, {name: grpc-api, port: 50051}, {name: http, port: 8000}, {name: web, port: 81}]
endpoints:
- addresses: [10.244.1.1]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: shop-1, namespace: default}
---
apiVersion: v1
kind: Pod
metadata: {name: shop-1, namespace: default, labels: {app: shop}}
spec: {serviceAccountName: shop}
status: {podIP: 10.244.1.1}
"""

DR = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop, namespace: default}
spec:
  host: shop
  trafficPolicy:
    portLevelSettings:
    - port: {number: 80}
      connectionPool: {http: {h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 50}}
    - port: {number: 81}
      connectionPool: {http: {useClientProtocol: true}}
"""


def translator(extra: str = "") -> Translator:
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in yaml.safe_load_all(MESH + extra):
        if doc:
            by_kind[doc["kind"]].append(doc)
    update = MeshState().load(by_kind)
    assert not update.rejected, [r.issues for r in update.rejected]
    return Translator(update.snapshot)


def node(pod: str = "client", ip: str = "10.244.9.9") -> ProxyNode:
    return ProxyNode(
        id=f"sidecar~{ip}~{pod}.default~default.svc.cluster.local",
        type="sidecar",
        ip=ip,
        pod=pod,
        namespace="default",
        labels=FrozenMap({"app": "shop"} if pod == "shop-1" else {}),
        ips=(ip,),
        generator="",
        cluster_id="Kubernetes",
        istio_version="1.24.0",
        service_account="shop" if pod == "shop-1" else "default",
        workload_name=pod,
        locality="",
    )


def translate(t: Translator, proxy: ProxyNode) -> tuple[dict[str, dict[str, Any]], ProxyConfig]:
    got = t.proxy_resources(proxy)
    cfg = ProxyConfig()
    for type_url in (CLUSTER, ENDPOINT, ROUTE, LISTENER):
        cfg = cfg.with_changes(type_url, [decode(r) for r in got[type_url].values()])
    return dump(got), cfg


def upstream(cluster: dict[str, Any]) -> dict[str, Any] | None:
    options = cluster.get("typed_extension_protocol_options", {})
    found = options.get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    if found is None:
        return None
    return {k: v for k, v in found.items() if k in ("explicit_http_config", "use_downstream_protocol_config")}


def test_outbound_clusters_speak_the_ports_protocol() -> None:
    res, cfg = translate(translator(DR), node())
    cds = res["CDS"]
    host = "shop.default.svc.cluster.local"
    assert upstream(cds[f"outbound|50051||{host}"]) == {
        "explicit_http_config": {"http2_protocol_options": {}}
    }
    sniffed = upstream(cds[f"outbound|8080||{host}"])
    assert sniffed == {
        "use_downstream_protocol_config": {"http_protocol_options": {}, "http2_protocol_options": {}}
    }
    upgraded = upstream(cds[f"outbound|80||{host}"])
    assert upgraded == {"explicit_http_config": {"http2_protocol_options": {"max_concurrent_streams": 50}}}
    assert "use_downstream_protocol_config" in upstream(cds[f"outbound|81||{host}"])  # type: ignore[operator]
    assert upstream(cds[f"outbound|3306||{host}"]) is None  # TCP: no HTTP options at all
    # The sidecar reads them as it will use them.
    assert cfg.clusters[f"outbound|50051||{host}"].protocol == "http2"
    assert cfg.clusters[f"outbound|8080||{host}"].protocol == "downstream"
    assert cfg.clusters[f"outbound|80||{host}"].h2_max_concurrent_streams == 50


def test_without_a_destination_rule_http_ports_stay_http1() -> None:
    res, _ = translate(translator(), node())
    cds = res["CDS"]
    assert upstream(cds["outbound|80||shop.default.svc.cluster.local"]) is None
    # appProtocol kubernetes.io/h2c is HTTP2.
    h2: dict[str, Any] = {"explicit_http_config": {"http2_protocol_options": {}}}
    assert upstream(cds["outbound|81||shop.default.svc.cluster.local"]) == h2


def test_a_sniffed_port_routes_http_and_passes_the_rest_as_tcp() -> None:
    res, cfg = translate(translator(), node())
    listener = res["LDS"]["10.96.0.30_8080"]
    assert [f["name"] for f in listener["listener_filters"]] == ["envoy.filters.listener.http_inspector"]
    http, tcp = listener["filter_chains"]
    assert http["filter_chain_match"]["application_protocols"] == ["http/1.1", "h2c"]
    hcm = http["filters"][0]["typed_config"]
    assert hcm["rds"]["route_config_name"] == "8080" and hcm["http_filters"][0]["name"] == "istio.alpn"
    assert tcp["filters"][0]["typed_config"]["cluster"] == "outbound|8080||shop.default.svc.cluster.local"
    vhosts = {v["name"] for v in res["RDS"]["8080"]["virtual_hosts"]}
    assert "shop.default.svc.cluster.local:8080" in vhosts
    # The sidecar's own chain match picks HTTP for what its inspector called HTTP, TCP otherwise.
    compiled = cfg.listeners["10.96.0.30_8080"]
    http_side = compiled.select_chain("10.96.0.30", 8080, alpn=("h2c",))
    tcp_side = compiled.select_chain("10.96.0.30", 8080)
    assert http_side is not None and http_side.http is not None
    assert tcp_side is not None and tcp_side.http is None
    # The server-first port is never sniffed.
    assert "listener_filters" not in res["LDS"]["10.96.0.30_3306"]


def test_a_sniffed_inbound_port_under_mutual_tls() -> None:
    res, cfg = translate(translator(), node("shop-1", "10.244.1.1"))
    inbound = res["LDS"]["virtualInbound"]
    names = [f["name"] for f in inbound["listener_filters"]]
    assert (
        names[-1] == "envoy.filters.listener.http_inspector"
        and "envoy.filters.listener.tls_inspector" in names
    )
    chains = [c for c in inbound["filter_chains"] if c["filter_chain_match"].get("destination_port") == 8080]

    def kind(c: dict[str, Any]) -> str:
        return "http" if "http_connection_manager" in c["filters"][-1]["typed_config"]["@type"] else "tcp"

    by = {(kind(c), c["filter_chain_match"].get("transport_protocol", ""),
           tuple(c["filter_chain_match"].get("application_protocols", ()))) for c in chains}  # fmt: skip
    assert ("http", "tls", ("istio-http/1.0", "istio-http/1.1", "istio-h2")) in by
    assert ("tcp", "tls", ("istio-peer-exchange", "istio")) in by
    assert ("http", "raw_buffer", ("http/1.1", "h2c")) in by  # PERMISSIVE: plain text, sniffed
    assert ("tcp", "raw_buffer", ()) in by
    # Inbound clusters speak to the app what the port declares.
    cds = res["CDS"]
    assert upstream(cds["inbound|50051||"]) == {"explicit_http_config": {"http2_protocol_options": {}}}
    assert "use_downstream_protocol_config" in upstream(cds["inbound|8080||"])  # type: ignore[operator]
    assert upstream(cds["inbound|8000||"]) is None
    # The sidecar chooses by the ALPN a client's sidecar offers, in its order (Envoy's rule).
    compiled = cfg.listeners["virtualInbound"]
    http = compiled.select_chain(
        "10.244.1.1", 8080, transport="tls", alpn=("istio-http/1.1", "istio", "http/1.1")
    )
    tcp = compiled.select_chain("10.244.1.1", 8080, transport="tls", alpn=("istio-peer-exchange", "istio"))
    assert http is not None and http.http is not None
    assert tcp is not None and tcp.http is None


def test_alpn_chain_choice_follows_the_clients_order() -> None:
    _, cfg = translate(translator(), node("shop-1", "10.244.1.1"))
    chains = cfg.listeners["virtualInbound"].filter_chains
    first = select_chain(chains, "10.244.1.1", 8080, "", "tls", ("istio", "istio-http/1.1"))
    assert first is not None and first.http is None  # "istio" comes first: the TCP chain lists it
