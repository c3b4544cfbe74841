"""Scopes follow the proxy's pod: new labels can put it under a workload-selected Sidecar."""

from __future__ import annotations

from typing import Any

from controller.model.snapshot import MeshState
from controller.model.values import FrozenMap
from controller.sources.base import Change
from controller.xds.connection import Connection
from controller.xds.generator import Translator
from controller.xds.node import ProxyNode
from controller.xds.resources import CLUSTER

BILLING = "outbound|80||billing.finance.svc.cluster.local"
CART = "outbound|80||cart.shop.svc.cluster.local"


def objects(app: str) -> dict[str, list[dict[str, Any]]]:
    return {
        "Service": [
            {"kind": "Service", "metadata": {"name": "cart", "namespace": "shop"},
             "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "http", "port": 80}]}},
            {"kind": "Service", "metadata": {"name": "billing", "namespace": "finance"},
             "spec": {"clusterIP": "10.96.0.2", "ports": [{"name": "http", "port": 80}]}},
        ],
        "Pod": [pod(app)],
        "Sidecar": [
            {"kind": "Sidecar", "metadata": {"name": "narrow", "namespace": "shop"},
             "spec": {"workloadSelector": {"labels": {"app": "narrow"}}, "egress": [{"hosts": ["./*"]}]}}
        ],
    }  # fmt: skip


def pod(app: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "shop", "labels": {"app": app}},
        "status": {"podIP": "10.244.0.9"},
    }


def test_pod_relabelled_under_a_selecting_sidecar_is_rescoped() -> None:
    state = MeshState()
    translator = Translator(state.load(objects("wide")).snapshot)
    node = ProxyNode(
        id="sidecar~10.244.0.9~p.shop~shop.svc.cluster.local", type="sidecar", ip="10.244.0.9", pod="p",
        namespace="shop", labels=FrozenMap(), ips=("10.244.0.9",), generator="", cluster_id="",
        istio_version="", service_account="", workload_name="",
    )  # fmt: skip
    conn = Connection(node, translator, "delta")
    assert conn.scope_key.sidecar is None
    assert conn.current(CLUSTER, BILLING) is not None

    update = state.apply([Change("Pod", "shop/p", "MODIFIED", pod("narrow"))])
    summary = translator.update(update.snapshot, update.changes)
    conn.watch(CLUSTER)
    changed = dict(conn.changed_names(summary))
    assert changed == {CLUSTER: None}  # a full comparison for every watched type
    assert conn.scope_key.sidecar is not None and conn.scope_key.sidecar.name == "narrow"
    assert conn.current(CLUSTER, BILLING) is None
    assert conn.current(CLUSTER, CART) is not None
