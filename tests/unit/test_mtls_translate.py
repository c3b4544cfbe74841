"""The controller's mutual-TLS translation, checked as the sidecar reads it (fastpath.config): auto mTLS on
clusters, DestinationRule tls modes, PeerAuthentication modes on virtualInbound, and what decides them."""

from __future__ import annotations

import base64
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from support.meshcerts import credential_secret

from controller.model.snapshot import MeshState
from controller.sources.base import Change
from controller.xds import clusters as cds
from controller.xds import listeners as lds
from controller.xds import security
from controller.xds.generator import Translator, inbound_resources
from controller.xds.resources import CLUSTER, ENDPOINT, LISTENER
from controller.xds.scope import ScopeKey
from fastpath.config.clusters import compile_cluster, compile_endpoints
from fastpath.config.listeners import compile_listener

HOST = "db.shop.svc.cluster.local"
NAME = "outbound|5432||" + HOST


def mesh(*extra: dict[str, Any], tls_mode: bool = True) -> MeshState:
    labels = {"app": "db", **({"security.istio.io/tlsMode": "istio"} if tls_mode else {})}
    state = MeshState()
    state.load(
        {
            "Namespace": [{"metadata": {"name": "shop"}}],
            "Service": [
                {
                    "metadata": {"name": "db", "namespace": "shop"},
                    "spec": {
                        "clusterIP": "10.96.0.5",
                        "selector": {"app": "db"},
                        "ports": [{"name": "tcp", "port": 5432}],
                    },
                }
            ],
            "EndpointSlice": [
                {
                    "metadata": {
                        "name": "db-1",
                        "namespace": "shop",
                        "labels": {"kubernetes.io/service-name": "db"},
                    },
                    "addressType": "IPv4",
                    "ports": [{"name": "tcp", "port": 5432}],
                    "endpoints": [
                        {
                            "addresses": ["10.0.0.7"],
                            "conditions": {"ready": True},
                            "targetRef": {"kind": "Pod", "name": "db-0", "namespace": "shop"},
                        }
                    ],
                }
            ],
            "Pod": [
                {
                    "metadata": {"name": "db-0", "namespace": "shop", "labels": labels},
                    "spec": {
                        "serviceAccountName": "postgres",
                        "containers": [{"name": "c", "ports": [{"containerPort": 5432}]}],
                    },
                    "status": {"podIP": "10.0.0.7"},
                }
            ],
            "DestinationRule": [x for x in extra if x["kind"] == "DestinationRule"],
            "PeerAuthentication": [x for x in extra if x["kind"] == "PeerAuthentication"],
        }
    )
    return state


def outbound(state: MeshState) -> tuple[Any, Any]:
    view = Translator(state.snapshot).view(ScopeKey("shop", None, False))
    c = cluster_pb2.Cluster.FromString(view.resources[CLUSTER][NAME].body)
    e = endpoint_pb2.ClusterLoadAssignment.FromString(view.resources[ENDPOINT][NAME].body)
    return compile_cluster(c), compile_endpoints(e)


def dr(tls: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "DestinationRule",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"host": "db", "trafficPolicy": {"tls": tls}},
    }


def pa(mode: str, namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    return {
        "kind": "PeerAuthentication",
        "metadata": {"name": f"pa-{namespace}-{mode.lower()}", "namespace": namespace},
        "spec": {"mtls": {"mode": mode}, **spec},
    }


def test_auto_mtls_to_endpoints_with_a_sidecar_plain_text_to_the_rest() -> None:
    cluster, endpoints = outbound(mesh())
    assert cluster.tls is None and len(cluster.tls_matches) == 2
    tls = cluster.tls_for(endpoints[0])
    assert tls is not None
    assert tls.sni == "outbound_.5432_._." + HOST
    assert tls.common.cert_sds == "default" and tls.common.roots_sds == "ROOTCA"
    assert tls.common.alpn == ("istio-peer-exchange", "istio")
    assert tls.common.san is not None and tls.common.san.exact == {
        "spiffe://cluster.local/ns/shop/sa/postgres"
    }
    # Without the injector's label the same cluster reaches the pod in plain text.
    cluster, endpoints = outbound(mesh(tls_mode=False))
    assert cluster.tls_for(endpoints[0]) is None


def test_destination_rule_tls_modes() -> None:
    cluster, _ = outbound(mesh(dr({"mode": "DISABLE"})))
    assert cluster.tls is None and not cluster.tls_matches
    cluster, _ = outbound(mesh(dr({"mode": "ISTIO_MUTUAL"}), tls_mode=False))
    assert cluster.tls is not None and cluster.tls.common.cert_sds == "default"  # even without the label
    cluster, _ = outbound(
        mesh(
            dr(
                {
                    "mode": "MUTUAL",
                    "clientCertificate": "/c.pem",
                    "privateKey": "/k.pem",
                    "caCertificates": "/ca.pem",
                    "sni": "db.example",
                }
            )
        )
    )
    assert cluster.tls is not None
    assert (
        cluster.tls.common.cert_files == ("/c.pem", "/k.pem") and cluster.tls.common.roots_file == "/ca.pem"
    )
    assert cluster.tls.sni == "db.example"
    cluster, _ = outbound(mesh(dr({"mode": "SIMPLE"})))
    assert cluster.tls is not None and cluster.tls.common.cert_files is None
    assert cluster.tls.common.roots_file == security.SYSTEM_CA_BUNDLE and cluster.tls.sni == HOST


def test_a_service_entrys_subject_alt_names_are_what_its_servers_must_name() -> None:
    vm_id = "spiffe://cluster.local/ns/shop/sa/vm"

    def entry_cluster(*extra: dict[str, Any], sans: tuple[str, ...] = (vm_id,), account: str = "") -> Any:
        endpoint: dict[str, Any] = {"address": "10.0.9.9", "labels": {"security.istio.io/tlsMode": "istio"}}
        if account:
            endpoint["serviceAccount"] = account
        entry = {
            "kind": "ServiceEntry",
            "metadata": {"name": "vm", "namespace": "shop"},
            "spec": {
                "hosts": ["vm.shop.internal"],
                "location": "MESH_INTERNAL",
                "resolution": "STATIC",
                "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
                "endpoints": [endpoint],
                **({"subjectAltNames": list(sans)} if sans else {}),
            },
        }
        state = MeshState()
        state.load(
            {
                "Namespace": [{"metadata": {"name": "shop"}}],
                "ServiceEntry": [entry],
                "DestinationRule": [{**x, "spec": {**x["spec"], "host": "vm.shop.internal"}} for x in extra],
            }
        )
        name = "outbound|8080||vm.shop.internal"
        view = Translator(state.snapshot).view(ScopeKey("shop", None, False))
        c = cluster_pb2.Cluster.FromString(view.resources[CLUSTER][name].body)
        e = endpoint_pb2.ClusterLoadAssignment.FromString(view.resources[ENDPOINT][name].body)
        return compile_cluster(c), compile_endpoints(e)

    # Auto mTLS to an endpoint with a sidecar: the server must be the identity the entry declares.
    cluster, endpoints = entry_cluster()
    tls = cluster.tls_for(endpoints[0])
    assert tls is not None and tls.common.san is not None and tls.common.san.exact == {vm_id}
    cluster, endpoints = entry_cluster(sans=())
    tls = cluster.tls_for(endpoints[0])
    assert tls is not None and tls.common.san is None  # nothing declared: the mesh root alone decides
    cluster, endpoints = entry_cluster(sans=(), account="vm")  # the endpoint names its identity
    tls = cluster.tls_for(endpoints[0])
    assert tls is not None and tls.common.san is not None and tls.common.san.exact == {vm_id}
    # DestinationRule SIMPLE: the entry's names unless the rule names its own.
    cluster, _ = entry_cluster(dr({"mode": "SIMPLE"}))
    assert cluster.tls is not None and cluster.tls.common.san.exact == {vm_id}
    cluster, _ = entry_cluster(dr({"mode": "SIMPLE", "subjectAltNames": ["vm.example"]}))
    assert cluster.tls is not None and cluster.tls.common.san.exact == {"vm.example"}


def test_peer_authentication_disable_turns_auto_mtls_off_towards_the_namespace() -> None:
    cluster, _ = outbound(mesh(pa("DISABLE")))
    assert not cluster.tls_matches
    cluster, _ = outbound(mesh(pa("DISABLE", "istio-system"), pa("PERMISSIVE")))
    assert cluster.tls_matches  # the namespace's policy wins over the mesh's


def inbound_chains(state: MeshState) -> dict[str, Any]:
    snapshot = state.snapshot
    pod = snapshot.pod("shop", "db-0")
    resources = inbound_resources(snapshot, pod)[LISTENER]
    listener = compile_listener(listener_pb2.Listener.FromString(resources[lds.VIRTUAL_INBOUND].body))
    assert listener.inspect_tls and listener.default_chain is None
    return {c.name: c for c in listener.filter_chains}


def test_inbound_chains_per_mode() -> None:
    chains = inbound_chains(mesh())  # PERMISSIVE by default
    name = cds.inbound_name(5432)
    assert set(chains) == {
        f"{name}-mtls",
        f"{name}-plaintext",
        f"{name}-tls-passthrough",
        "virtualInbound-catchall-mtls",
        "virtualInbound-catchall-plaintext",
        "virtualInbound-catchall-tls-passthrough",
    }
    mtls = chains[f"{name}-mtls"]
    assert mtls.tls is not None and mtls.tls.require_client_certificate
    assert mtls.match.transport_protocol == "tls" and "istio" in mtls.match.application_protocols
    strict = inbound_chains(mesh(pa("STRICT")))
    assert set(strict) == {f"{name}-mtls", "virtualInbound-catchall-mtls"}
    disabled = inbound_chains(mesh(pa("STRICT", "istio-system"), pa("DISABLE")))
    assert set(disabled) == {name, "virtualInbound-catchall"} and disabled[name].tls is None
    # Port-level: STRICT on the workload, PERMISSIVE on its port.
    port_level = pa(
        "STRICT", selector={"matchLabels": {"app": "db"}}, portLevelMtls={"5432": {"mode": "PERMISSIVE"}}
    )
    chains = inbound_chains(mesh(port_level))
    assert f"{name}-plaintext" in chains and "virtualInbound-catchall-plaintext" not in chains


def test_strict_leaves_nothing_for_plain_text() -> None:
    from fastpath.config.listeners import select_chain

    chains = tuple(inbound_chains(mesh(pa("STRICT"))).values())
    assert select_chain(chains, "10.0.0.7", 5432, "", "raw_buffer", ()) is None
    assert select_chain(chains, "10.0.0.7", 8080, "", "raw_buffer", ()) is None
    chosen = select_chain(chains, "10.0.0.7", 5432, "", "tls", ("istio",))
    assert chosen is not None and chosen.tls is not None


def gateway_chains(
    *servers: dict[str, Any], secrets: tuple[dict[str, Any], ...] = (), extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The filter chains of the listener on port 443 the controller gives a gateway, as its proxy compiled
    them (config the proxy would refuse fails here)."""
    from controller.model.values import FrozenMap
    from controller.xds.gateway import gateway_resources

    state = MeshState()
    gateway = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "edge"},
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": list(servers)},
    }
    state.load(
        {
            "Namespace": [{"metadata": {"name": "edge"}}],
            "Gateway": [gateway],
            "Secret": list(secrets),
            **(extra or {}),
        }
    )
    out = gateway_resources(Translator(state.snapshot).registry, FrozenMap({"istio": "ingressgateway"}), None)
    body = out[LISTENER].get("0.0.0.0_443")
    if body is None:
        return {}
    return {c.name: c for c in compile_listener(listener_pb2.Listener.FromString(body.body)).filter_chains}


def test_gateway_mutual_tls_modes_reach_the_proxy() -> None:
    from controller.ca.authority import CaMaterial

    ca = CaMaterial.self_signed("clients.example").root
    secret = credential_secret("a-cert", "a.example", namespace="edge")
    cacert = {
        "kind": "Secret",
        "metadata": {"name": "a-cert-cacert", "namespace": "edge"},
        "data": {"cacert": base64.b64encode(ca).decode()},
    }

    def server(mode: str, **tls: Any) -> dict[str, Any]:
        tls = {"mode": mode, **tls}
        return {
            "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
            "hosts": ["a.example"],
            "tls": tls,
        }

    [simple] = gateway_chains(server("SIMPLE", credentialName="a-cert"), secrets=(secret,)).values()
    assert simple.tls is not None and not simple.tls.require_client_certificate
    assert not simple.tls.common.roots_sds and simple.tls.common.san is None
    # MUTUAL needs the client CA: without one the server is left out rather than served without it.
    assert gateway_chains(server("MUTUAL", credentialName="a-cert"), secrets=(secret,)) == {}
    [mutual] = gateway_chains(
        server("MUTUAL", credentialName="a-cert", subjectAltNames=["spiffe://p/ns/a/sa/b"]),
        secrets=(secret, cacert),
    ).values()
    assert mutual.tls is not None and mutual.tls.require_client_certificate
    assert mutual.tls.common.roots_sds.startswith("inline-ca:")
    assert mutual.tls.common.san is not None and mutual.tls.common.san.matches(("spiffe://p/ns/a/sa/b",))
    assert not mutual.tls.common.san.matches(("spiffe://p/ns/a/sa/c",))
    [optional] = gateway_chains(
        server("OPTIONAL_MUTUAL", credentialName="a-cert"), secrets=(secret, cacert)
    ).values()
    assert optional.tls is not None and not optional.tls.require_client_certificate
    assert optional.tls.common.roots_sds == mutual.tls.common.roots_sds
    # ISTIO_MUTUAL: the gateway's own workload certificate and the mesh root, from its SDS.
    [istio] = gateway_chains(server("ISTIO_MUTUAL")).values()
    assert istio.tls is not None and istio.tls.require_client_certificate
    assert (istio.tls.common.cert_sds, istio.tls.common.roots_sds) == ("default", "ROOTCA")
    assert istio.tls.common.alpn == ("http/1.1",)
    # Certificate files mounted in the gateway's pod instead of a Secret, and cipher suites.
    files = {
        "serverCertificate": "/etc/gw/tls.crt",
        "privateKey": "/etc/gw/tls.key",
        "caCertificates": "/etc/gw/ca",
    }
    [from_files] = gateway_chains(
        server("MUTUAL", cipherSuites=["ECDHE-ECDSA-AES128-GCM-SHA256"], **files)
    ).values()
    assert from_files.tls is not None and from_files.tls.require_client_certificate
    assert from_files.tls.common.cert_files == ("/etc/gw/tls.crt", "/etc/gw/tls.key")
    assert from_files.tls.common.roots_file == "/etc/gw/ca"
    assert from_files.tls.common.ciphers == "ECDHE-ECDSA-AES128-GCM-SHA256"
    # TLS: terminated, then the bound VirtualService's tcp route for the port (no HTTP ALPN offered).
    tcp_server = {
        **server("SIMPLE", credentialName="a-cert"),
        "port": {"number": 443, "name": "t", "protocol": "TLS"},
    }
    assert gateway_chains(tcp_server, secrets=(secret,)) == {}  # nothing bound: left out
    bound = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "db", "namespace": "edge"},
        "spec": {
            "hosts": ["a.example"],
            "gateways": ["gw"],
            "tcp": [
                {"match": [{"port": 443}], "route": [{"destination": {"host": "db.edge.svc.cluster.local"}}]}
            ],
        },
    }
    [tcp] = gateway_chains(tcp_server, secrets=(secret,), extra={"VirtualService": [bound]}).values()
    assert tcp.tls is not None and tcp.tls.common.alpn == () and tcp.http is None
    assert tcp.tcp_proxy is not None and tcp.match.server_names == ("a.example",)


def test_a_service_entry_selecting_pods_follows_them() -> None:
    from controller.sources.base import Change

    def pod(name: str, ip: str, labels: dict[str, str], account: str = "vm") -> dict[str, Any]:
        return {
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "labels": labels},
            "spec": {"serviceAccountName": account, "containers": [{"name": "c"}]},
            "status": {"podIP": ip, "phase": "Running"},
        }

    meshed = {"app": "legacy", "security.istio.io/tlsMode": "istio"}
    entry = {
        "kind": "ServiceEntry",
        "metadata": {"name": "legacy", "namespace": "shop"},
        "spec": {
            "hosts": ["legacy.shop.internal"],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 8080}],
            "workloadSelector": {"labels": {"app": "legacy"}},
        },
    }
    state = MeshState()
    update = state.load(
        {
            "Namespace": [{"metadata": {"name": "shop"}}],
            "ServiceEntry": [entry],
            "Pod": [
                pod("a", "10.0.1.1", meshed),
                pod("b", "10.0.1.2", meshed),
                pod("c", "10.0.1.3", {"app": "x"}),
            ],
        }
    )
    translator = Translator(update.snapshot)
    key = ScopeKey("shop", None, False)
    name = "outbound|80||legacy.shop.internal"

    def compiled() -> tuple[Any, Any]:
        view = translator.view(key)
        c = cluster_pb2.Cluster.FromString(view.resources[CLUSTER][name].body)
        e = endpoint_pb2.ClusterLoadAssignment.FromString(view.resources[ENDPOINT][name].body)
        return compile_cluster(c), compile_endpoints(e)

    cluster, endpoints = compiled()
    assert sorted((e.host, e.port) for e in endpoints) == [("10.0.1.1", 8080), ("10.0.1.2", 8080)]
    # The pods run as their service account: that is who the sidecar accepts at the other end.
    tls = cluster.tls_for(endpoints[0])
    assert tls is not None and tls.common.san is not None
    assert tls.common.san.exact == {"spiffe://cluster.local/ns/shop/sa/vm"}
    # A pod that stops matching leaves, one that starts matching joins: the pod's change alone does it.
    update = state.apply(
        [
            Change("Pod", "shop/b", "MODIFIED", pod("b", "10.0.1.2", {"app": "other"})),  # type: ignore[arg-type]
            Change("Pod", "shop/c", "MODIFIED", pod("c", "10.0.1.3", {"app": "legacy"}, "batch")),  # type: ignore[arg-type]
        ]
    )
    summary = translator.update(update.snapshot, update.changes)
    assert name in summary.scopes[key][ENDPOINT]
    cluster, endpoints = compiled()
    assert sorted(e.host for e in endpoints) == ["10.0.1.1", "10.0.1.3"]
    tls = cluster.tls_for(endpoints[0])
    assert tls is not None and tls.common.san is not None
    assert tls.common.san.exact == {
        "spiffe://cluster.local/ns/shop/sa/vm",
        "spiffe://cluster.local/ns/shop/sa/batch",
    }


def test_sidecar_ingress_listeners_are_the_inbound_side() -> None:
    sidecar = {
        "kind": "Sidecar",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {
            "workloadSelector": {"labels": {"app": "db"}},
            "ingress": [
                {
                    "port": {"number": 6000, "protocol": "TCP", "name": "tcp"},
                    "defaultEndpoint": "127.0.0.1:5432",
                },
                {
                    "port": {"number": 7000, "protocol": "HTTP", "name": "http"},
                    "defaultEndpoint": "0.0.0.0:7001",
                },
            ],
        },
    }
    state = mesh()
    state.apply([Change("Sidecar", "shop/db", "ADDED", sidecar)])  # type: ignore[arg-type]
    snapshot = state.snapshot
    out = inbound_resources(snapshot, snapshot.pod("shop", "db-0"))
    assert set(out[CLUSTER]) == {"inbound|6000||", "inbound|7000||"}  # the Service's 5432 is not among them
    loopback = compile_cluster(cluster_pb2.Cluster.FromString(out[CLUSTER]["inbound|6000||"].body))
    pod_ip = compile_cluster(cluster_pb2.Cluster.FromString(out[CLUSTER]["inbound|7000||"].body))
    assert [(e.host, e.port) for e in loopback.endpoints] == [("127.0.0.1", 5432)]
    assert [(e.host, e.port) for e in pod_ip.endpoints] == [("10.0.0.7", 7001)]
    assert loopback.source_address == "127.0.0.6"
