"""The Telemetry API and the mesh config in the controller: validation that names the field, Istio's merge
rules (mesh, root namespace, namespace, workload; client and server), the translation into HCM tracing,
access logs and the istio.stats filter - accepted by our own sidecar's config compiler - and a Telemetry
change re-scoping the proxies it concerns."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.config.trace.v3 import opentelemetry_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controller.meshconfig import MeshConfigError, parse
from controller.model.snapshot import MeshState
from controller.model.telemetry import (
    CLIENT,
    SERVER,
    build_mesh_config,
    build_telemetry,
    mesh_config_object,
    resolve,
)
from controller.model.values import FrozenMap
from controller.validation import validate
from controller.xds import telemetry as telemetry_xds
from controller.xds.generator import Translator
from controller.xds.node import ProxyNode
from controller.xds.resources import LISTENER
from fastpath.config.listeners import compile_listener
from fastpath.filters.istio_stats import IstioStatsFilter
from fastpath.filters.tracing import TracingFilter

MESH = {
    "extensionProviders": [
        {
            "name": "otel",
            "opentelemetry": {
                "service": "otel-collector.observability.svc.cluster.local",
                "port": 4318,
                "http": {"path": "/v1/traces", "timeout": "2s"},
            },
        },
        {
            "name": "json-log",
            "envoyFileAccessLog": {
                "path": "/dev/stdout",
                "logFormat": {"labels": {"code": "%RESPONSE_CODE%"}},
            },
        },
    ],
    "defaultProviders": {"tracing": ["otel"]},
    "defaultConfig": {"tracing": {"sampling": 10.0}},
}


def telemetry(
    name: str, namespace: str, spec: dict[str, Any], created: str = "2026-01-01T00:00:00Z"
) -> dict[str, Any]:
    return {
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": spec,
    }


def errors(raw: dict[str, Any]) -> list[str]:
    return [f"{i.path}: {i.message}" for i in validate(raw) if i.severity == "error"]


# --- validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        (
            {"accessLogging": [{"filter": {"expression": "size(request.path) > 3"}}]},
            "accessLogging[0].filter.expression",
        ),
        ({"tracing": [{"randomSamplingPercentage": 101}]}, "tracing[0].randomSamplingPercentage"),
        ({"tracing": [{"match": {"mode": "SIDEWAYS"}}]}, "tracing[0].match.mode"),
        (
            {"metrics": [{"overrides": [{"match": {"metric": "LATENCY"}}]}]},
            "metrics[0].overrides[0].match.metric",
        ),
        (
            {"metrics": [{"overrides": [{"tagOverrides": {"host": {"value": "request.host"}}}]}]},
            "metrics[0].overrides[0].tagOverrides[host].value",
        ),
        (
            {"tracing": [{"customTags": {"t": {"literal": {"value": "x"}, "header": {"name": "h"}}}}]},
            "tracing[0].customTags[t]",
        ),
        ({"loging": []}, "loging"),
    ],
)
def test_telemetry_errors_name_the_field(spec: dict[str, Any], path: str) -> None:
    found = errors(telemetry("t", "default", spec))
    assert any(e.startswith(f"{path}:") for e in found), found


def test_mesh_config_validation() -> None:
    ok = validate(mesh_config_object({**MESH, "outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}))
    assert [i.path for i in ok if i.severity == "warning"] == [
        "outboundTrafficPolicy"
    ]  # read elsewhere: ignored
    assert not [i for i in ok if i.severity == "error"]
    bad = mesh_config_object({"defaultProviders": {"tracing": ["zipkin"]}, "accessLogEncoding": "XML"})
    assert set(errors(bad)) >= {
        "defaultProviders.tracing[0]: 'zipkin' is not one of the extensionProviders",
        "accessLogEncoding: must be one of TEXT, JSON (got 'XML')",
    }


def test_an_opentelemetry_provider_without_http_exports_over_grpc() -> None:
    spec = {
        "extensionProviders": [
            {
                "name": "o",
                "opentelemetry": {
                    "service": "c.ns.svc.cluster.local",
                    "port": 4317,
                    "grpc": {"timeout": "3s", "initialMetadata": [{"name": "x-tenant", "value": "blue"}]},
                },
            }
        ],
        "defaultProviders": {"tracing": ["o"]},
    }
    assert not validate(mesh_config_object(spec))
    settings = resolve(build_mesh_config(mesh_config_object(spec)), [], "default", {}, CLIENT)
    assert settings.tracing is not None
    out = telemetry_xds.tracing(settings.tracing)
    config = opentelemetry_pb2.OpenTelemetryConfig()
    out.provider.typed_config.Unpack(config)
    assert not config.HasField("http_service")
    assert config.grpc_service.envoy_grpc.cluster_name == "outbound|4317||c.ns.svc.cluster.local"
    assert config.grpc_service.timeout.seconds == 3
    assert [(h.key, h.value) for h in config.grpc_service.initial_metadata] == [("x-tenant", "blue")]


def test_mesh_config_file_forms() -> None:
    assert parse("enableTracing: false\n", "f")["spec"] == {"enableTracing": False}
    cm = "kind: ConfigMap\ndata:\n  mesh: |\n    accessLogFile: /dev/stdout\n"
    assert parse(cm, "f")["spec"] == {"accessLogFile": "/dev/stdout"}
    with pytest.raises(MeshConfigError):
        parse("- a list\n", "f")


# --- resolution -----------------------------------------------------------------------------------------


def test_merge_rules_mesh_namespace_workload_and_direction() -> None:
    mesh = build_mesh_config(mesh_config_object(MESH))
    root = build_telemetry(
        telemetry(
            "mesh", "istio-system", {"tracing": [{"customTags": {"team": {"literal": {"value": "core"}}}}]}
        )
    )
    ns = build_telemetry(
        telemetry(
            "ns",
            "shop",
            {
                "tracing": [{"randomSamplingPercentage": 50, "match": {"mode": "SERVER"}}],
                "accessLogging": [
                    {"providers": [{"name": "json-log"}], "filter": {"expression": "response.code >= 400"}}
                ],
                "metrics": [
                    {
                        "overrides": [
                            {
                                "match": {"metric": "REQUEST_COUNT"},
                                "tagOverrides": {"team": {"value": "'shop'"}},
                            }
                        ]
                    }
                ],
            },
        )
    )
    workload = build_telemetry(
        telemetry(
            "cart",
            "shop",
            {
                "selector": {"matchLabels": {"app": "cart"}},
                "accessLogging": [{"disabled": True, "match": {"mode": "CLIENT"}}],
                "metrics": [
                    {
                        "overrides": [
                            {"match": {"metric": "REQUEST_COUNT", "mode": "CLIENT"}, "disabled": True}
                        ]
                    }
                ],
            },
        )
    )
    telemetries = [root, ns, workload]
    cart_client = resolve(mesh, telemetries, "shop", {"app": "cart"}, CLIENT)
    cart_server = resolve(mesh, telemetries, "shop", {"app": "cart"}, SERVER)
    other_client = resolve(mesh, telemetries, "shop", {"app": "web"}, CLIENT)
    assert cart_client.tracing is not None and cart_client.tracing.percent == 10.0  # the mesh default
    assert cart_server.tracing is not None and cart_server.tracing.percent == 50.0  # SERVER-only rule
    assert cart_client.tracing.provider is not None and cart_client.tracing.provider.port == 4318
    assert [t.name for t in cart_client.tracing.custom_tags] == ["team"]  # from the root namespace
    assert cart_client.access_logs == ()  # the workload turned client logs off
    [log] = cart_server.access_logs
    assert log.provider.name == "json-log" and log.filter == "response.code >= 400"
    assert other_client.access_logs == cart_server.access_logs
    [count] = cart_client.metrics
    assert count.name == "requests_total" and count.drop and count.upsert == (("team", "'shop'"),)
    assert not other_client.metrics[0].drop
    # A second namespace-level Telemetry: the oldest wins, as in Istio.
    newer = build_telemetry(
        telemetry("late", "shop", {"tracing": [{"randomSamplingPercentage": 99}]}, "2026-06-01T00:00:00Z")
    )
    again = resolve(mesh, [*telemetries, newer], "shop", {"app": "cart"}, SERVER)
    assert again.tracing is not None and again.tracing.percent == 50.0


def test_no_provider_and_no_rule_means_no_tracing() -> None:
    mesh = build_mesh_config(mesh_config_object({}))
    assert resolve(mesh, [], "default", {}, CLIENT).tracing is None
    off = build_telemetry(telemetry("t", "default", {"tracing": [{"disableSpanReporting": True}]}))
    quiet = resolve(build_mesh_config(mesh_config_object(MESH)), [off], "default", {}, CLIENT).tracing
    assert quiet is not None and quiet.provider is None  # decided and propagated, not reported


# --- translation ----------------------------------------------------------------------------------------


def cluster_objects() -> list[dict[str, Any]]:
    def pod(name: str, app: str, ip: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "labels": {"app": app}},
            "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080}]}]},
            "status": {"podIP": ip, "phase": "Running"},
        }

    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "cart", "namespace": "shop"},
            "spec": {
                "clusterIP": "10.96.0.10",
                "selector": {"app": "cart"},
                "ports": [{"name": "http", "port": 8080}],
            },
        },
        pod("cart-1", "cart", "10.244.0.10"),
        pod("web-1", "web", "10.244.0.11"),
    ]


def node(pod: str, ip: str, app: str) -> ProxyNode:
    return ProxyNode(
        id=f"sidecar~{ip}~{pod}.shop~shop.svc.cluster.local",
        type="sidecar",
        ip=ip,
        pod=pod,
        namespace="shop",
        labels=FrozenMap({"app": app}),
        ips=(ip,),
        generator="",
        cluster_id="Kubernetes",
        istio_version="",
        service_account="default",
        workload_name=pod,
    )


def load(extra: list[dict[str, Any]]) -> tuple[MeshState, Translator]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in [*cluster_objects(), *extra]:
        by_kind.setdefault(doc["kind"], []).append(doc)
    state = MeshState()
    update = state.load(by_kind)
    assert not update.rejected, [r.issues for r in update.rejected]
    return state, Translator(update.snapshot)


def hcm_of(resources: Any, name: str) -> tuple[Any, hcm_pb2.HttpConnectionManager]:
    lst = listener_pb2.Listener.FromString(resources[LISTENER][name].body)
    for chain in lst.filter_chains:
        for f in chain.filters:
            if f.typed_config.type_url.endswith("HttpConnectionManager"):
                hcm = hcm_pb2.HttpConnectionManager()
                f.typed_config.Unpack(hcm)
                return lst, hcm
    raise AssertionError(f"no HCM in {name}")


def test_translation_reaches_hcms_and_our_sidecar_accepts_it() -> None:
    ns_rule = telemetry(
        "shop",
        "shop",
        {
            "tracing": [
                {"randomSamplingPercentage": 25, "customTags": {"user": {"header": {"name": "x-user"}}}}
            ],
            "accessLogging": [{"filter": {"expression": "response.code >= 500"}}],
            "metrics": [{"overrides": [{"match": {"metric": "REQUEST_DURATION"}, "disabled": True}]}],
        },
    )
    _, translator = load([mesh_config_object(MESH), ns_rule])
    resources = translator.proxy_resources(node("web-1", "10.244.0.11", "web"))
    lst, out = hcm_of(resources, "0.0.0.0_8080")
    assert out.tracing.random_sampling.value == 25.0
    assert out.tracing.provider.name == "envoy.tracers.opentelemetry"
    assert (
        "outbound|4318||otel-collector.observability.svc.cluster.local"
        in out.tracing.provider.typed_config.value.decode("latin-1")
    )
    assert [f.name for f in out.http_filters][-2:] == ["istio.stats", "envoy.filters.http.router"]
    assert len(out.access_log) == 1 and out.access_log[0].HasField("filter")
    config = compile_listener(lst)  # the sidecar takes it as it is
    [chain] = list(config.chains())
    assert isinstance(chain.http.tracer, TracingFilter) and not chain.http.filters  # not a filter call
    assert chain.http.tracer.config.percent == 25.0
    assert any(isinstance(f, IstioStatsFilter) for f in chain.http.all_filters)
    assert len(chain.http.access_logs) == 1
    inbound = translator.proxy_resources(node("cart-1", "10.244.0.10", "cart"))
    lst_in, hcm_in = hcm_of(inbound, "virtualInbound")
    assert hcm_in.tracing.random_sampling.value == 25.0 and len(hcm_in.access_log) == 1
    compile_listener(lst_in)


def test_without_telemetry_nothing_is_added() -> None:
    _, translator = load([])
    resources = translator.proxy_resources(node("web-1", "10.244.0.11", "web"))
    _, out = hcm_of(resources, "0.0.0.0_8080")
    assert not out.HasField("tracing") and not out.access_log
    assert [f.name for f in out.http_filters][-1] == "envoy.filters.http.router"
    assert "istio.stats" not in [f.name for f in out.http_filters]


def test_a_telemetry_change_rescopes_the_workloads_it_selects() -> None:
    state, translator = load([mesh_config_object(MESH)])
    web, cart = node("web-1", "10.244.0.11", "web"), node("cart-1", "10.244.0.10", "cart")
    before_web, before_cart = translator.scope_key(web), translator.scope_key(cart)
    from controller.sources.base import Change

    rule = telemetry(
        "cart",
        "shop",
        {"selector": {"matchLabels": {"app": "cart"}}, "tracing": [{"randomSamplingPercentage": 100}]},
    )
    update = state.apply([Change("Telemetry", "shop/cart", "ADDED", rule)])
    summary = translator.update(update.snapshot, update.changes)
    assert summary.namespaces_rescoped is None and len(summary.pods) == 2
    assert translator.scope_key(web) == before_web  # not selected: same scope, same config
    after = translator.scope_key(cart)
    assert after != before_cart and after.telemetry is not None and after.telemetry.tracing is not None
    assert after.telemetry.tracing.percent == 100.0
    _, out = hcm_of(translator.proxy_resources(cart, after), "0.0.0.0_8080")
    assert out.tracing.random_sampling.value == 100.0


def test_gateways_get_their_telemetry_too() -> None:
    gateway_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ingress-1", "namespace": "shop", "labels": {"istio": "ingressgateway"}},
        "spec": {"containers": [{"name": "istio-proxy", "ports": [{"containerPort": 8080}]}]},
        "status": {"podIP": "10.244.0.20", "phase": "Running"},
    }
    gateway = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "ingress", "namespace": "shop"},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [{"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
        },
    }
    route = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "cart", "namespace": "shop"},
        "spec": {
            "hosts": ["*"],
            "gateways": ["ingress"],
            "http": [{"route": [{"destination": {"host": "cart"}}]}],
        },
    }
    logs = telemetry("logs", "istio-system", {"accessLogging": [{"providers": [{"name": "json-log"}]}]})
    _, translator = load([mesh_config_object(MESH), gateway_pod, gateway, route, logs])
    router = ProxyNode(
        id="router~10.244.0.20~ingress-1.shop~shop.svc.cluster.local",
        type="router",
        ip="10.244.0.20",
        pod="ingress-1",
        namespace="shop",
        labels=FrozenMap({"istio": "ingressgateway"}),
        ips=("10.244.0.20",),
        generator="",
        cluster_id="Kubernetes",
        istio_version="",
        service_account="default",
        workload_name="ingress",
    )
    listeners = translator.local_resources(router)[LISTENER]
    assert listeners, "the gateway has a listener"
    for name in listeners:
        lst, hcm = hcm_of({LISTENER: listeners}, name)
        assert hcm.tracing.random_sampling.value == 10.0 and len(hcm.access_log) == 1
        compile_listener(lst)
