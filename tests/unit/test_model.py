"""The model: raw objects -> typed immutable snapshots, versions, indexes, invalid objects skipped."""

from __future__ import annotations

from typing import Any

import pytest

from controller.model.istio import DEFAULT_RETRY_ON
from controller.model.protocol import MeshProtocol, resolve_port_protocol
from controller.model.snapshot import MeshState
from controller.model.values import ResourceKey, parse_duration
from controller.sources.base import Change


def service(
    name: str, ns: str = "default", port: int = 80, port_name: str = "http", **spec: Any
) -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"clusterIP": "10.0.0.1", "ports": [{"name": port_name, "port": port}], **spec},
    }


def change(obj: dict[str, Any], type_: str = "MODIFIED") -> Change:
    meta = obj["metadata"]
    return Change(obj["kind"], f"{meta.get('namespace', 'default')}/{meta['name']}", type_, obj)  # type: ignore[arg-type]


def test_each_batch_yields_a_new_version_and_old_snapshots_stay_intact() -> None:
    state = MeshState()
    first = state.load({"Service": [service("a")]}).snapshot
    second = state.apply([change(service("b"), "ADDED")]).snapshot
    assert (first.version, second.version) == (1, 2)
    assert first.service_by_host("b.default.svc.cluster.local") is None
    assert second.service_by_host("b.default.svc.cluster.local") is not None
    assert second.revision(ResourceKey("Service", "default", "a")) == 1
    assert second.revision(ResourceKey("Service", "default", "b")) == 2


def test_unchanged_object_is_not_a_change() -> None:
    state = MeshState()
    state.load({"Service": [service("a")]})
    raw = service("a")
    raw["metadata"]["resourceVersion"] = "99"  # e.g. a status-only update
    update = state.apply([change(raw)])
    assert update.changes == ()
    assert update.snapshot.version == 1


def test_invalid_update_keeps_last_valid_version_and_is_reported() -> None:
    state = MeshState()
    state.load({"Service": [service("a", port=80)]})
    bad = service("a", port=0)
    update = state.apply([change(bad)])
    assert [r.key for r in update.rejected] == [ResourceKey("Service", "default", "a")]
    assert update.rejected[0].kept_previous
    svc = update.snapshot.service_by_host("a.default.svc.cluster.local")
    assert svc is not None and svc.ports[0].port == 80
    assert ResourceKey("Service", "default", "a") in update.snapshot.invalid
    # A later valid version clears the report.
    fixed = state.apply([change(service("a", port=81))])
    assert fixed.snapshot.invalid == {}
    assert fixed.snapshot.service_by_host("a.default.svc.cluster.local").ports[0].port == 81  # type: ignore[union-attr]


def test_invalid_new_object_is_skipped_while_others_apply() -> None:
    state = MeshState()
    update = state.load({"Service": [service("good"), service("bad", port=-1)]})
    assert update.snapshot.count("Service") == 1
    assert len(update.rejected) == 1 and not update.rejected[0].kept_previous


def test_endpoint_slice_index_and_pod_ip_index_follow_changes() -> None:
    state = MeshState()
    eps: dict[str, Any] = {
        "kind": "EndpointSlice",
        "metadata": {"name": "a-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "a"}},
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": ["10.1.0.1"], "conditions": {"ready": False, "serving": True, "terminating": True}}
        ],
    }
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "status": {"podIP": "10.1.0.1"}}
    snap = state.load({"EndpointSlice": [eps], "Pod": [pod]}).snapshot
    (slice_,) = snap.slices_of("default", "a")
    ep = slice_.endpoints[0]
    assert (ep.ready, ep.serving, ep.terminating) == (False, True, True)
    assert snap.pod_by_ip("10.1.0.1").name == "p"  # type: ignore[union-attr]
    eps2 = {**eps, "metadata": {**eps["metadata"], "labels": {"kubernetes.io/service-name": "b"}}}
    snap = state.apply([change(eps2)]).snapshot
    assert snap.slices_of("default", "a") == [] and len(snap.slices_of("default", "b")) == 1
    snap = state.apply([change(pod, "DELETED")]).snapshot
    assert snap.pod_by_ip("10.1.0.1") is None


def test_virtual_service_hosts_resolved_and_defaults() -> None:
    vs = {
        "kind": "VirtualService",
        "metadata": {"name": "r", "namespace": "shop"},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews"}}], "retries": {"attempts": 5}}],
        },
    }
    snap = MeshState().load({"VirtualService": [vs]}).snapshot
    (obj,) = snap.virtual_services()
    assert obj.hosts == ("reviews.shop.svc.cluster.local",)
    assert obj.http[0].route[0].weight == 100
    assert obj.http[0].retries.retry_on == DEFAULT_RETRY_ON  # type: ignore[union-attr]
    assert obj.applies_to_mesh


@pytest.mark.parametrize(
    ("port", "name", "app", "expected"),
    [
        (80, "http", None, MeshProtocol.HTTP),
        (80, "http2-web", None, MeshProtocol.HTTP2),
        (80, "grpc-web", None, MeshProtocol.GRPC_WEB),
        (80, "tcp-x", None, MeshProtocol.TCP),
        (80, "web", None, MeshProtocol.UNKNOWN),
        (3306, "", None, MeshProtocol.TCP),
        (80, "tcp", "http", MeshProtocol.HTTP),  # appProtocol decides alone
        (80, "", "kubernetes.io/h2c", MeshProtocol.HTTP2),
    ],
)
def test_protocol_selection(port: int, name: str, app: str | None, expected: MeshProtocol) -> None:
    assert resolve_port_protocol(port, name, "TCP", app) is expected


def test_durations() -> None:
    assert parse_duration("1.5s").nanos == 1_500_000_000
    assert parse_duration("1h30m").nanos == 5_400_000_000_000
    assert str(parse_duration("250ms")) == "0.25s"
    with pytest.raises(ValueError):
        parse_duration("-1s")


def test_warnings_are_kept_with_the_object_until_it_changes_or_goes() -> None:
    state = MeshState()
    vs = {
        "kind": "VirtualService",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {
            "hosts": ["r"],
            "http": [{"route": [{"destination": {"host": "r"}}], "match": [{"statPrefix": "r"}]}],
        },
    }
    snap = state.load({"VirtualService": [vs]}).snapshot
    key = ResourceKey("VirtualService", "default", "r")
    assert [i.format(key) for i in snap.warnings[key]] == [
        "VirtualService default/r: http[0].match[0].statPrefix: not supported by Mizzen yet; ignored"
    ]
    del vs["spec"]["http"][0]["match"]
    assert state.apply([change(vs)]).snapshot.warnings == {}
