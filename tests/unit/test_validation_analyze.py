"""Cross-object analysis: routes to subsets or hosts that nothing defines."""

from __future__ import annotations

from typing import Any

from controller.model.snapshot import MeshState
from controller.validation.analyze import analyze


def objects(subsets: list[str], route_host: str = "reviews") -> dict[str, list[dict[str, Any]]]:
    defined = [{"name": s, "labels": {"version": s}} for s in subsets]
    return {
        "Service": [
            {"kind": "Service", "metadata": {"name": "reviews", "namespace": "default"},
             "spec": {"clusterIP": "10.96.0.5", "ports": [{"name": "http", "port": 9080}]}},
        ],
        "ServiceEntry": [
            {"kind": "ServiceEntry", "metadata": {"name": "google", "namespace": "default"},
             "spec": {"hosts": ["*.googleapis.com"], "resolution": "NONE",
                      "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}]}},
        ],
        "DestinationRule": [
            {"kind": "DestinationRule", "metadata": {"name": "reviews", "namespace": "default"},
             "spec": {"host": "reviews", "subsets": defined}},
        ],
        "VirtualService": [
            {"kind": "VirtualService", "metadata": {"name": "reviews", "namespace": "default"},
             "spec": {"hosts": ["reviews"], "http": [
                 {"route": [{"destination": {"host": route_host, "subset": "v1"}, "weight": 50},
                            {"destination": {"host": route_host, "subset": "v2"}, "weight": 50}]},
                 {"route": [{"destination": {"host": "storage.googleapis.com"}}]},
             ]}},
        ],
    }  # fmt: skip


def messages(raw: dict[str, list[dict[str, Any]]]) -> list[str]:
    snapshot = MeshState().load(raw).snapshot
    return [issue.format(key) for key, issues in analyze(snapshot).items() for issue in issues]


def test_route_to_an_undefined_subset_is_reported() -> None:
    assert messages(objects(["v1"])) == [
        "VirtualService default/reviews: http[0].route[1].destination.subset: subset 'v2' is not defined by "
        "any DestinationRule for reviews.default.svc.cluster.local (requests routed to it fail with 503)"
    ]


def test_everything_defined_means_no_report() -> None:
    assert messages(objects(["v1", "v2"])) == []


def test_route_to_an_unknown_host_is_reported() -> None:
    found = messages(objects(["v1", "v2"], route_host="ratings"))
    assert found == [
        "VirtualService default/reviews: http[0].route[0].destination.host: "
        "no Service or ServiceEntry provides ratings.default.svc.cluster.local",
        "VirtualService default/reviews: http[0].route[1].destination.host: "
        "no Service or ServiceEntry provides ratings.default.svc.cluster.local",
    ]


def test_two_virtual_services_for_one_mesh_host_are_reported() -> None:
    def vs(name: str, stamp: str, gateways: list[str] | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews"}}]}],
        }
        if gateways:
            spec["gateways"] = gateways
        return {
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": stamp},
            "spec": spec,
        }

    raw = objects(["v1"])
    raw["VirtualService"] = [vs("older", "2024-01-01T00:00:00Z"), vs("newer", "2024-06-01T00:00:00Z")]
    assert messages(raw) == [
        "VirtualService default/newer: hosts[0]: reviews.default.svc.cluster.local is also defined by "
        "VirtualService default/older, which sidecars use for it; this one is ignored there (merge them, or "
        "bind one to a gateway)"
    ]
    raw["VirtualService"][1] = vs("newer", "2024-06-01T00:00:00Z", gateways=["ingress"])
    assert messages(raw) == []  # bound to a gateway only: gateways merge them
