"""Istio traffic-management fields -> the Envoy config one sidecar receives, and the sidecar's own config
layer accepting it. The behaviour behind each is checked through real proxies in tests/e2e/; here the shape
of the translation, which is what another Envoy-speaking proxy would read."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import yaml

from controller.model.snapshot import MeshState
from controller.model.values import FrozenMap
from controller.xds.dump import dump
from controller.xds.generator import Translator
from controller.xds.node import ProxyNode
from controller.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from fastpath import config as proxy_config
from fastpath.config import ProxyConfig

BASE = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.20
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  clusterIP: 10.96.0.21
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-1, namespace: default, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{name: http, port: 9080}]
endpoints:
- {addresses: [10.244.1.1], conditions: {ready: true}, zone: z1,
   targetRef: {kind: Pod, name: reviews-v1, namespace: default}}
- {addresses: [10.244.1.2], conditions: {ready: true}, zone: z2,
   targetRef: {kind: Pod, name: reviews-v2, namespace: default}}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, version: v1}}
status: {podIP: 10.244.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: default, labels: {app: reviews, version: v2}}
status: {podIP: 10.244.1.2}
"""


def translator(extra: str) -> Translator:
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in yaml.safe_load_all(BASE + "---\n" + extra):
        if doc:
            by_kind[doc["kind"]].append(doc)
    update = MeshState().load(by_kind)
    assert not update.rejected, [r.issues for r in update.rejected]
    return Translator(update.snapshot)


def node(labels: dict[str, str] | None = None, locality: str = "", namespace: str = "default") -> ProxyNode:
    return ProxyNode(
        id=f"sidecar~10.244.9.9~client.{namespace}~{namespace}.svc.cluster.local",
        type="sidecar",
        ip="10.244.9.9",
        pod="client",
        namespace=namespace,
        labels=FrozenMap(labels or {}),
        ips=("10.244.9.9",),
        generator="",
        cluster_id="Kubernetes",
        istio_version="1.24.0",
        service_account="default",
        workload_name="client",
        locality=locality,
    )


def resources(t: Translator, proxy: ProxyNode | None = None) -> dict[str, dict[str, Any]]:
    got = t.proxy_resources(proxy or node())
    compiled = compile_in_proxy(got)
    assert compiled.listeners  # the sidecar's own config layer took all of it
    return dump(got)


def compile_in_proxy(got: Any) -> ProxyConfig:
    from controller.xds.dump import decode

    cfg = ProxyConfig()
    for type_url in (CLUSTER, ENDPOINT, ROUTE, LISTENER):
        cfg = cfg.with_changes(type_url, [decode(r) for r in got[type_url].values()])
    return cfg


def vhost(res: dict[str, Any], port: str, host: str) -> dict[str, Any]:
    return next(v for v in res["RDS"][port]["virtual_hosts"] if v["name"] == host)


def vs(http: list[dict[str, Any]], host: str = "reviews", **spec: Any) -> str:
    body = {"hosts": [host], "http": http, **spec}
    return yaml.safe_dump(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": host, "namespace": "default"},
            "spec": body,
        }
    )


def dr(spec: dict[str, Any], host: str = "reviews") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": host, "namespace": "default"},
            "spec": {"host": host, **spec},
        }
    )


DEST = {"destination": {"host": "reviews"}}
REVIEWS = "reviews.default.svc.cluster.local:9080"


def test_fault_and_cors_become_per_route_filter_config_and_the_filters_are_in_the_chain() -> None:
    res = resources(
        translator(
            vs(
                [
                    {
                        "route": [DEST],
                        "fault": {
                            "delay": {"fixedDelay": "2s", "percentage": {"value": 12.5}},
                            "abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 50}},
                        },
                        "corsPolicy": {
                            "allowOrigins": [{"exact": "https://a.example"}, {"regex": ".*\\.b\\.example"}],
                            "allowMethods": ["GET", "POST"],
                            "allowHeaders": ["x-a"],
                            "maxAge": "24h",
                            "allowCredentials": True,
                            "unmatchedPreflights": "IGNORE",
                        },
                    }
                ]
            )
        )
    )
    route = vhost(res, "9080", REVIEWS)["routes"][0]
    fault = route["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["delay"]["fixed_delay"] == "2s"
    assert fault["delay"]["percentage"] == {"numerator": 125000, "denominator": "MILLION"}
    assert fault["abort"]["grpc_status"] == 14
    assert fault["abort"]["percentage"] == {"numerator": 500000, "denominator": "MILLION"}
    cors = route["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert cors["allow_origin_string_match"] == [
        {"exact": "https://a.example"},
        {"safe_regex": {"regex": ".*\\.b\\.example"}},
    ]
    assert (cors["allow_methods"], cors["max_age"], cors["allow_credentials"]) == ("GET,POST", "86400", True)
    assert cors["forward_not_matching_preflights"] is False
    hcm = res["LDS"]["0.0.0.0_9080"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == [
        "istio.alpn",
        "envoy.filters.http.cors",
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]


def test_mirror_headers_redirect_direct_response_and_rewrite() -> None:
    http = [
        {
            "match": [{"uri": {"prefix": "/old"}}],
            "redirect": {"uri": "/new", "authority": "other.example", "redirectCode": 308, "scheme": "https"},
        },
        {
            "match": [{"uri": {"exact": "/teapot"}}],
            "directResponse": {"status": 418, "body": {"string": "tea"}},
        },
        {
            "match": [{"uri": {"prefix": "/api"}}],
            "rewrite": {"uriRegexRewrite": {"match": "^/api/(.*)$", "rewrite": "/\\1"}, "authority": "inner"},
            "headers": {
                "request": {"set": {"x-a": "1"}, "remove": ["x-b"]},
                "response": {"add": {"x-c": "3"}},
            },
            "route": [
                {
                    "destination": {"host": "reviews", "subset": "v1"},
                    "weight": 70,
                    "headers": {"request": {"set": {"x-dest": "v1"}}},
                },
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 30},
            ],
            "mirror": {"host": "ratings"},
            "mirrorPercentage": {"value": 25},
        },
    ]
    subsets = {
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]
    }
    res = resources(translator(vs(http) + "---\n" + dr(subsets)))
    redirect, direct, api = vhost(res, "9080", REVIEWS)["routes"]
    assert redirect["redirect"] == {
        "path_redirect": "/new",
        "host_redirect": "other.example",
        "scheme_redirect": "https",
        "response_code": "PERMANENT_REDIRECT",
    }
    assert direct["direct_response"] == {"status": 418, "body": {"inline_string": "tea"}}
    action = api["route"]
    assert action["regex_rewrite"] == {"pattern": {"regex": "^/api/(.*)$"}, "substitution": "/\\1"}
    assert action["host_rewrite_literal"] == "inner"
    assert action["request_mirror_policies"] == [
        {
            "cluster": "outbound|9080||ratings.default.svc.cluster.local",
            "runtime_fraction": {"default_value": {"numerator": 250000, "denominator": "MILLION"}},
        }
    ]
    v1, v2 = action["weighted_clusters"]["clusters"]
    assert v1["request_headers_to_add"] == [
        {"header": {"key": "x-dest", "value": "v1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    ]
    assert "request_headers_to_add" not in v2
    assert api["request_headers_to_add"] == [
        {"header": {"key": "x-a", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    ]
    assert api["request_headers_to_remove"] == ["x-b"]
    assert api["response_headers_to_add"] == [{"header": {"key": "x-c", "value": "3"}}]


def test_retries_with_a_backoff() -> None:
    rule = {"route": [DEST], "retries": {"attempts": 4, "perTryTimeout": "2s", "backoff": "200ms"}}
    t = translator(vs([rule]))
    [route] = vhost(resources(t), "9080", REVIEWS)["routes"]
    policy = route["route"]["retry_policy"]
    assert policy["num_retries"] == 4 and policy["per_try_timeout"] == "2s"
    assert policy["retry_back_off"] == {"base_interval": "0.200s"}
    # The sidecar waits from that base (jittered, doubling, capped at ten times it, as Envoy).
    cfg = compile_in_proxy(t.proxy_resources(node()))
    retry = cfg.routes["9080"].vhost(b"reviews:9080").routes[0].action.retry
    assert (retry.num_retries, retry.base_interval, retry.max_interval) == (4, 0.2, 2.0)


def test_match_conditions_decided_for_the_client_and_inverted_headers() -> None:
    http = [
        {"match": [{"sourceLabels": {"version": "canary"}}], "route": [{"destination": {"host": "ratings"}}]},
        {"match": [{"sourceNamespace": "other"}], "route": [{"destination": {"host": "ratings"}}]},
        {"match": [{"gateways": ["istio-system/ingress"]}], "route": [{"destination": {"host": "ratings"}}]},
        {"match": [{"withoutHeaders": {"x-debug": {}}, "scheme": {"exact": "http"}}], "route": [DEST]},
    ]
    t = translator(vs(http))
    plain = vhost(resources(t), "9080", REVIEWS)["routes"]
    assert [r["name"] for r in plain] == ["default/reviews.http[3]"]
    assert plain[0]["match"]["headers"] == [
        {"name": ":scheme", "string_match": {"exact": "http"}},
        {"name": "x-debug", "present_match": True, "invert_match": True},
    ]
    canary = vhost(resources(t, node({"version": "canary", "app": "client"})), "9080", REVIEWS)["routes"]
    assert [r["name"] for r in canary] == ["default/reviews.http[0]", "default/reviews.http[3]"]
    # Proxies differing only in labels no sourceLabels names share one scope.
    assert t.scope_key(node({"app": "a"})) == t.scope_key(node({"app": "b"}))
    assert t.scope_key(node({"version": "canary"})) != t.scope_key(node({"version": "v1"}))


def test_delegate_rules_are_merged_under_the_root_match() -> None:
    delegate = yaml.safe_dump(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews-api", "namespace": "default"},
            "spec": {
                "http": [
                    {
                        "match": [{"uri": {"prefix": "/api/v2"}}],
                        "route": [{"destination": {"host": "ratings"}}],
                    },
                    {"match": [{"uri": {"prefix": "/elsewhere"}}], "route": [DEST]},
                    {"route": [DEST], "timeout": "3s"},
                ]
            },
        }
    )
    root = vs(
        [
            {
                "match": [{"uri": {"prefix": "/api"}, "headers": {"x-team": {"exact": "a"}}}],
                "delegate": {"name": "reviews-api"},
                "timeout": "9s",
            }
        ]
    )
    routes = vhost(resources(translator(root + "---\n" + delegate)), "9080", REVIEWS)["routes"]
    # The /elsewhere rule is outside the root's /api: it drops out.
    assert [(r["match"]["prefix"], r["route"]["timeout"]) for r in routes] == [
        ("/api/v2", "9s"),
        ("/api", "3s"),
    ]
    assert all(r["match"]["headers"] == [{"name": "x-team", "string_match": {"exact": "a"}}] for r in routes)
    assert routes[0]["route"]["cluster"] == "outbound|9080||ratings.default.svc.cluster.local"


def test_consistent_hash_sets_the_cluster_policy_and_the_route_key() -> None:
    spec = {
        "trafficPolicy": {
            "loadBalancer": {
                "consistentHash": {
                    "httpCookie": {"name": "u", "ttl": "60s"},
                    "ringHash": {"minimumRingSize": 2048},
                }
            }
        },
        "subsets": [
            {
                "name": "v2",
                "labels": {"version": "v2"},
                "trafficPolicy": {
                    "loadBalancer": {
                        "consistentHash": {"httpHeaderName": "X-User", "maglev": {"tableSize": 65537}}
                    }
                },
            }
        ],
    }
    http = [
        {
            "match": [{"headers": {"x-v2": {"exact": "1"}}}],
            "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
        },
        {"route": [DEST]},
    ]
    res = resources(translator(dr(spec) + "---\n" + vs(http)))
    top = res["CDS"]["outbound|9080||reviews.default.svc.cluster.local"]
    assert (top["lb_policy"], top["ring_hash_lb_config"]) == ("RING_HASH", {"minimum_ring_size": "2048"})
    sub = res["CDS"]["outbound|9080|v2|reviews.default.svc.cluster.local"]
    assert (sub["lb_policy"], sub["maglev_lb_config"]) == ("MAGLEV", {"table_size": "65537"})
    v2, rest = vhost(res, "9080", REVIEWS)["routes"]
    assert v2["route"]["hash_policy"] == [{"header": {"header_name": "x-user"}}]
    assert rest["route"]["hash_policy"] == [{"cookie": {"name": "u", "ttl": "60s"}}]


def test_outlier_detection_and_connection_pool() -> None:
    spec = {
        "trafficPolicy": {
            "outlierDetection": {
                "consecutiveErrors": 3,
                "interval": "2s",
                "baseEjectionTime": "10s",
                "maxEjectionPercent": 50,
                "splitExternalLocalOriginErrors": True,
                "consecutiveLocalOriginFailures": 2,
            },
            "connectionPool": {
                "tcp": {
                    "tcpKeepalive": {"probes": 3, "time": "30s", "interval": "5s"},
                    "maxConnectionDuration": "1h",
                },
                "http": {"idleTimeout": "15s", "maxRequestsPerConnection": 10},
            },
        }
    }
    res = resources(translator(dr(spec)))
    cluster = res["CDS"]["outbound|9080||reviews.default.svc.cluster.local"]
    assert cluster["outlier_detection"] == {
        "consecutive_5xx": 0,
        "enforcing_consecutive_5xx": 0,
        "consecutive_gateway_failure": 3,
        "enforcing_consecutive_gateway_failure": 100,
        "interval": "2s",
        "base_ejection_time": "10s",
        "max_ejection_percent": 50,
        "enforcing_success_rate": 0,
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": 2,
        "enforcing_consecutive_local_origin_failure": 100,
        "enforcing_local_origin_success_rate": 0,
    }
    # Istio turns panic mode off unless minHealthPercent asks for it.
    assert cluster["common_lb_config"] == {"healthy_panic_threshold": {}}
    assert cluster["upstream_connection_options"]["tcp_keepalive"] == {
        "keepalive_probes": 3,
        "keepalive_time": 30,
        "keepalive_interval": 5,
    }
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert options["common_http_protocol_options"] == {
        "idle_timeout": "15s",
        "max_requests_per_connection": 10,
        "max_connection_duration": "3600s",
    }


def test_locality_failover_orders_endpoints_by_the_clients_locality() -> None:
    spec = {"trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 1}}}
    t = translator(dr(spec))
    name = "outbound|9080||reviews.default.svc.cluster.local"
    in_z2 = resources(t, node(locality="/z2/"))["EDS"][name]["endpoints"]
    assert {e["locality"].get("zone"): e.get("priority", 0) for e in in_z2} == {"z1": 1, "z2": 0}
    nowhere = resources(t)["EDS"][name]["endpoints"]
    assert all("priority" not in e for e in nowhere)


def test_failover_priority_orders_endpoints_by_the_clients_labels() -> None:
    lb = {"localityLbSetting": {"failoverPriority": ["version", "topology.kubernetes.io/zone"]}}
    spec = {"trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 1}, "loadBalancer": lb}}
    t = translator(dr(spec))
    name = "outbound|9080||reviews.default.svc.cluster.local"

    def priorities(labels: dict[str, str], locality: str = "") -> dict[str, int]:
        groups = resources(t, node(labels, locality))["EDS"][name]["endpoints"]
        return {
            lb["endpoint"]["address"]["socket_address"]["address"]: group.get("priority", 0)
            for group in groups
            for lb in group["lb_endpoints"]
        }

    # A v2 client in z2: reviews-v2 (v2, z2) agrees on both entries, reviews-v1 on none.
    assert priorities({"version": "v2"}, "/z2/") == {"10.244.1.2": 0, "10.244.1.1": 1}
    # A v1 client in z2: reviews-v1 agrees on the first entry only, reviews-v2 on none (the order counts).
    assert priorities({"version": "v1"}, "/z2/") == {"10.244.1.1": 0, "10.244.1.2": 1}
    # The client's label value is part of its scope: two clients differing in it get different config.
    assert t.scope_key(node({"version": "v1"})) != t.scope_key(node({"version": "v2"}))
    # Without outlier detection nothing ever fails over: no priorities, as Istio.
    plain = translator(dr({"trafficPolicy": {"loadBalancer": lb}}))
    groups = resources(plain, node({"version": "v2"}, "/z2/"))["EDS"][name]["endpoints"]
    assert all("priority" not in g for g in groups)


def test_locality_distribute_sets_locality_weights() -> None:
    spec = {
        "trafficPolicy": {
            "loadBalancer": {
                "localityLbSetting": {"distribute": [{"from": "/z1/*", "to": {"/z1/*": 80, "/z2/*": 20}}]}
            }
        }
    }
    res = resources(translator(dr(spec)), node(locality="/z1/"))
    name = "outbound|9080||reviews.default.svc.cluster.local"
    weights = {e["locality"]["zone"]: e["load_balancing_weight"] for e in res["EDS"][name]["endpoints"]}
    assert weights == {"z1": 80, "z2": 20}
    assert "locality_weighted_lb_config" in res["CDS"][name]["common_lb_config"]


def test_tcp_routes_by_destination_subnet_and_tls_routes_by_sni() -> None:
    extra = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.internal]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tls, namespace: default}
spec:
  hosts: [a.example.com, b.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db.internal]
  tcp:
  - match: [{destinationSubnets: [10.1.0.0/16]}]
    route: [{destination: {host: reviews, port: {number: 9080}}, weight: 60},
            {destination: {host: ratings, port: {number: 9080}}, weight: 40}]
  - route: [{destination: {host: db.internal}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls, namespace: default}
spec:
  hosts: [a.example.com]
  tls:
  - match: [{sniHosts: [a.example.com], port: 443}]
    route: [{destination: {host: reviews, port: {number: 9080}}}]
"""
    res = resources(translator(extra))
    db = res["LDS"]["0.0.0.0_5432"]["filter_chains"]
    assert db[0]["filter_chain_match"] == {
        "prefix_ranges": [{"address_prefix": "10.1.0.0", "prefix_len": 16}]
    }
    assert db[0]["filters"][0]["typed_config"]["weighted_clusters"]["clusters"] == [
        {"name": "outbound|9080||reviews.default.svc.cluster.local", "weight": 60},
        {"name": "outbound|9080||ratings.default.svc.cluster.local", "weight": 40},
    ]
    assert "filter_chain_match" not in db[1]
    tls = res["LDS"]["0.0.0.0_443"]
    assert [f["name"] for f in tls["listener_filters"]] == ["envoy.filters.listener.tls_inspector"]
    chains = {
        tuple(c["filter_chain_match"]["server_names"]): c["filters"][0]["typed_config"]["cluster"]
        for c in tls["filter_chains"]
    }
    # a.example.com's SNI goes where its tls rule says; b.example.com (no rule) to itself, by its SNI;
    # any other destination on 443 passes through (ALLOW_ANY), as the capture listener would send it.
    assert chains == {
        ("a.example.com",): "outbound|9080||reviews.default.svc.cluster.local",
        ("b.example.com",): "outbound|443||b.example.com",
    }
    assert tls["default_filter_chain"]["filters"][0]["typed_config"]["cluster"] == "PassthroughCluster"


def test_registry_only_answers_502() -> None:
    sidecar = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""
    res = resources(translator(sidecar))
    block = next(v for v in res["RDS"]["9080"]["virtual_hosts"] if v["name"] == "block_all")
    assert block["routes"][0]["direct_response"] == {"status": 502}
    assert res["LDS"]["virtualOutbound"]["default_filter_chain"]["filters"][0]["typed_config"]["cluster"] == (
        "BlackHoleCluster"
    )


def test_every_field_compiles_in_the_sidecar() -> None:
    # The same config through fastpath's build() (which also checks that routes name known clusters).
    t = translator(
        vs([{"route": [DEST], "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100}}}}])
    )
    got = t.proxy_resources(node())
    from controller.xds.dump import decode

    cfg = proxy_config.build(
        [decode(r) for r in got[LISTENER].values()],
        [decode(r) for r in got[CLUSTER].values()],
        [decode(r) for r in got[ENDPOINT].values()],
        [decode(r) for r in got[ROUTE].values()],
        static=False,
    )
    table = cfg.routes["9080"]
    route = table.vhost(b"reviews:9080").routes[0]
    assert route.typed_per_filter_config["envoy.filters.http.fault"].abort_http == 503


def test_service_entries_with_address_ranges_share_a_tcp_port_by_subnet() -> None:
    extra = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy-a, namespace: default}
spec:
  hosts: [a.legacy]
  addresses: [192.168.10.0/24]
  ports: [{number: 3306, name: tcp, protocol: TCP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy-b, namespace: default}
spec:
  hosts: [b.legacy]
  addresses: [192.168.20.0/24, 10.9.9.9]
  ports: [{number: 3306, name: tcp, protocol: TCP}]
  resolution: NONE
"""
    res = resources(translator(extra))
    chains = res["LDS"]["0.0.0.0_3306"]["filter_chains"]
    by_range = {
        c["filter_chain_match"]["prefix_ranges"][0]["address_prefix"]: c["filters"][0]["typed_config"][
            "cluster"
        ]
        for c in chains
    }
    assert by_range == {"192.168.10.0": "outbound|3306||a.legacy", "192.168.20.0": "outbound|3306||b.legacy"}
    # b's plain address is a VIP: its own listener, no range needed.
    assert res["LDS"]["10.9.9.9_3306"]["filter_chains"][0]["filters"][0]["typed_config"]["cluster"] == (
        "outbound|3306||b.legacy"
    )
