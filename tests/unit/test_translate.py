"""Translation goldens: representative meshes -> the Envoy v3 resources one proxy receives, as JSON.

Regenerate after an intended change with ``MIZZEN_REGEN_GOLDEN=1 pytest tests/unit/test_translate.py``
and review the diff; without the variable a difference fails the test.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.model.snapshot import MeshState
from controller.model.values import FrozenMap
from controller.xds.dump import dump
from controller.xds.generator import Translator
from controller.xds.node import ProxyNode

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "xds"
REGEN = os.environ.get("MIZZEN_REGEN_GOLDEN") == "1"


def node(
    pod: str, namespace: str, ip: str, *, generator: str = "", labels: dict[str, str] | None = None
) -> ProxyNode:
    return ProxyNode(
        id=f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local",
        type="sidecar",
        ip=ip,
        pod=pod,
        namespace=namespace,
        labels=FrozenMap(labels or {}),
        ips=(ip,),
        generator=generator,
        cluster_id="Kubernetes",
        istio_version="1.24.0",
        service_account="default",
        workload_name=pod,
    )


def load_mesh(name: str) -> Translator:
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in yaml.safe_load_all((GOLDEN / f"{name}.yaml").read_text()):
        if doc:
            by_kind[doc["kind"]].append(doc)
    update = MeshState().load(by_kind)
    assert not update.rejected, [r.issues for r in update.rejected]
    return Translator(update.snapshot)


CASES = {
    "plain": [node("productpage-1", "default", "10.244.0.5")],
    "subsets_weighted": [node("reviews-v1-a", "default", "10.244.0.11")],
    "header_match": [node("client", "default", "10.244.9.9")],
    "sidecar_scoping": [node("cart-1", "shop", "10.244.3.1"), node("billing-1", "finance", "10.244.3.2")],
    "service_entry": [node("client", "default", "10.244.9.9")],
    "proxyless": [node("client", "default", "10.244.9.9", generator="grpc")],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    translator = load_mesh(case)
    got = {f"{n.pod}.{n.namespace}": dump(translator.proxy_resources(n)) for n in CASES[case]}
    text = json.dumps(got, indent=1, sort_keys=True) + "\n"
    path = GOLDEN / f"{case}.json"
    if REGEN:
        path.write_text(text)
    assert path.exists(), f"no golden for {case}: run with MIZZEN_REGEN_GOLDEN=1 and review it"
    assert json.loads(path.read_text()) == got, f"{case}: output differs from {path.name}"


# --- incremental translation: a change recomputes and reports only what it touches -------------------------


def _change(kind: str, obj: dict[str, Any], type_: str = "MODIFIED") -> Any:
    from controller.sources.base import Change

    meta = obj["metadata"]
    return Change(kind, f"{meta.get('namespace', 'default')}/{meta['name']}", type_, obj)  # type: ignore[arg-type]


def _mesh_docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((GOLDEN / f"{name}.yaml").read_text()) if d]


def _state(name: str) -> tuple[MeshState, Translator]:
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in _mesh_docs(name):
        by_kind[doc["kind"]].append(doc)
    state = MeshState()
    update = state.load(by_kind)
    return state, Translator(update.snapshot)


def _named(name: str, kind: str) -> dict[str, Any]:
    return next(d for d in _mesh_docs(name) if d["kind"] == kind)


def test_virtual_service_change_touches_only_its_route_configuration() -> None:
    state, translator = _state("subsets_weighted")
    proxy = CASES["subsets_weighted"][0]
    key = translator.scope_key(proxy)
    before = translator.proxy_resources(proxy)
    vs = _named("subsets_weighted", "VirtualService")
    vs["spec"]["http"][1]["route"][0]["weight"] = 50
    vs["spec"]["http"][1]["route"][1]["weight"] = 50
    update = state.apply([_change("VirtualService", vs)])
    summary = translator.update(update.snapshot, update.changes)
    changed = {t.rsplit(".", 1)[1]: names for t, names in summary.scopes[key].items() if names}
    assert changed == {"RouteConfiguration": {"9080"}}
    after = translator.proxy_resources(proxy)
    rc = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    assert after[rc]["9080"].version != before[rc]["9080"].version


def test_endpoint_change_touches_only_the_load_assignments_of_that_service() -> None:
    state, translator = _state("plain")
    proxy = CASES["plain"][0]
    key = translator.scope_key(proxy)
    translator.proxy_resources(proxy)
    eps = next(
        d for d in _mesh_docs("plain") if d["kind"] == "EndpointSlice" and d["metadata"]["name"] == "db-1"
    )
    eps["endpoints"][0]["conditions"]["ready"] = True
    update = state.apply([_change("EndpointSlice", eps)])
    summary = translator.update(update.snapshot, update.changes)
    changed = {t.rsplit(".", 1)[1]: names for t, names in summary.scopes[key].items() if names}
    assert changed == {"ClusterLoadAssignment": {"outbound|5432||db.default.svc.cluster.local"}}


def test_unrelated_scope_is_not_touched_by_a_change_it_cannot_see() -> None:
    state, translator = _state("sidecar_scoping")
    shop, finance = CASES["sidecar_scoping"]
    shop_key, finance_key = translator.scope_key(shop), translator.scope_key(finance)
    translator.proxy_resources(shop)
    translator.proxy_resources(finance)
    billing = next(d for d in _mesh_docs("sidecar_scoping") if d["metadata"]["name"] == "billing")
    billing["spec"]["ports"].append({"name": "http-admin", "port": 8081})
    update = state.apply([_change("Service", billing)])
    summary = translator.update(update.snapshot, update.changes)
    assert shop_key not in summary.scopes  # the Sidecar hides finance/* from shop
    assert (
        "outbound|8081||billing.finance.svc.cluster.local"
        in summary.scopes[finance_key]["type.googleapis.com/envoy.config.cluster.v3.Cluster"]
    )


def test_sidecar_change_rescopes_and_reports_removed_resources() -> None:
    state, translator = _state("sidecar_scoping")
    shop = CASES["sidecar_scoping"][0]
    key = translator.scope_key(shop)
    translator.proxy_resources(shop)
    sidecar = _named("sidecar_scoping", "Sidecar")
    sidecar["spec"]["egress"] = [{"hosts": ["./*"]}]
    update = state.apply([_change("Sidecar", sidecar)])
    summary = translator.update(update.snapshot, update.changes)
    cds = summary.scopes[key]["type.googleapis.com/envoy.config.cluster.v3.Cluster"]
    assert cds == {"outbound|15014||telemetry.istio-system.svc.cluster.local"}
    now = translator.proxy_resources(shop)["type.googleapis.com/envoy.config.cluster.v3.Cluster"]
    assert "outbound|15014||telemetry.istio-system.svc.cluster.local" not in now


def test_versions_are_content_digests() -> None:
    _, first = _state("plain")
    _, second = _state("plain")
    proxy = CASES["plain"][0]
    a, b = first.proxy_resources(proxy), second.proxy_resources(proxy)
    assert {t: {n: r.version for n, r in m.items()} for t, m in a.items()} == {
        t: {n: r.version for n, r in m.items()} for t, m in b.items()
    }


def test_incremental_registry_matches_a_full_rebuild() -> None:
    from controller.sources.base import Change
    from controller.xds.registry import Registry

    def svc(name: str, ns: str, port: int) -> dict[str, Any]:
        return {"kind": "Service", "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": "10.96.9.9", "ports": [{"name": "http", "port": port}]}}  # fmt: skip

    # A ServiceEntry for the same host as a Service: the Service wins while it exists.
    entry = {
        "kind": "ServiceEntry",
        "metadata": {"name": "shadow", "namespace": "default"},
        "spec": {"hosts": ["a.default.svc.cluster.local", "ext.example.com"], "resolution": "DNS",
                 "ports": [{"number": 81, "name": "http", "protocol": "HTTP"}]},
    }  # fmt: skip
    state = MeshState()
    registry = Registry(state.load({"Service": [svc("a", "default", 80)], "ServiceEntry": [entry]}).snapshot)
    assert registry.services["a.default.svc.cluster.local"].source.kind == "Service"
    steps = [
        [Change("Service", "default/b", "ADDED", svc("b", "default", 90))],
        [Change("Service", "default/a", "DELETED", svc("a", "default", 80))],
        [Change("Service", "default/b", "MODIFIED", svc("b", "default", 91))],
        [Change("ServiceEntry", "default/shadow", "DELETED", entry)],
        [Change("Service", "default/a", "ADDED", svc("a", "default", 82))],
    ]
    for step in steps:
        update = state.apply(step)
        registry = Registry(update.snapshot, registry, changes=update.changes)
        full = Registry(update.snapshot)
        assert registry.services == full.services
    assert registry.services["a.default.svc.cluster.local"].ports[0].port == 82
    assert "ext.example.com" not in registry.services


def test_external_name_service_is_a_dns_cluster_of_its_external_name() -> None:
    svc = {
        "kind": "Service",
        "metadata": {"name": "payments", "namespace": "default"},
        "spec": {
            "type": "ExternalName",
            "externalName": "pay.example.com",
            "ports": [{"name": "tcp", "port": 443}],
        },
    }
    translator = Translator(MeshState().load({"Service": [svc]}).snapshot)
    clusters = dump(translator.proxy_resources(CASES["plain"][0]))["CDS"]
    cluster = clusters["outbound|443||payments.default.svc.cluster.local"]
    assert cluster["type"] == "STRICT_DNS"
    (group,) = cluster["load_assignment"]["endpoints"]
    assert group["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": "pay.example.com",
        "port_value": 443,
    }
