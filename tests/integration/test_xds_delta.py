"""Delta ADS over real gRPC against a controller running on the files source.

A client connects and gets the full set; one VirtualService change then brings only the changed
RouteConfiguration, one endpoint change only the changed ClusterLoadAssignments; NACKs are tracked and
shown; a reconnect with the versions already held resumes without a resend.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from controller.app import Controller
from controller.sources.files import FilesSource
from controller.xds.client import DeltaClient, make_node
from controller.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "xds"
PROXY_ID = "sidecar~10.244.0.11~reviews-v1-a.default~default.svc.cluster.local"
CLUSTER_V1 = "outbound|9080|v1|reviews.default.svc.cluster.local"
CLUSTER_ALL = "outbound|9080||reviews.default.svc.cluster.local"


def write_docs(path: Path, docs: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(docs))
    tmp.replace(path)


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[Controller]:
    shutil.copy(GOLDEN / "subsets_weighted.yaml", tmp_path / "mesh.yaml")
    source = FilesSource(tmp_path, poll_interval=0.05)
    ctl = Controller(source, host="127.0.0.1", xds_port=0, debug_port=0, debounce_after=0.05)
    await ctl.start()
    try:
        yield ctl
    finally:
        await ctl.stop(grace=0)


async def sync_all(client: DeltaClient) -> dict[str, Any]:
    """What Envoy does on start: CDS and LDS wildcard, then EDS and RDS for what they name; ACK all."""
    got: dict[str, Any] = {}
    client.subscribe(CLUSTER)
    got[CLUSTER] = await client.recv()
    client.ack(got[CLUSTER])
    eds_names = [r.name for r in got[CLUSTER].resources if r.name.startswith("outbound|")]
    client.subscribe(ENDPOINT, eds_names)
    got[ENDPOINT] = await client.recv()
    client.ack(got[ENDPOINT])
    client.subscribe(LISTENER)
    got[LISTENER] = await client.recv()
    client.ack(got[LISTENER])
    client.subscribe(ROUTE, ["9080"])
    got[ROUTE] = await client.recv()
    client.ack(got[ROUTE])
    return got


async def quiet(ctl: Controller, pushes_before: int) -> None:
    """Wait until the controller has finished the push for the change just made."""
    for _ in range(400):
        if ctl.pushes_done > pushes_before:
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the controller never pushed the change")


def pushed_now(ctl: Controller) -> list[tuple[str, list[str]]]:
    """(type, changed names) of every response the controller sent for its current snapshot version."""
    version = ctl.state.snapshot.version
    return [(e["type"], e["changed"]) for e in ctl.push_log.entries if e["snapshot"] == version]


async def syncz(ctl: Controller) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{ctl.debug_port}/debug/syncz") as resp:
            return await resp.json()  # type: ignore[no-any-return]


async def test_full_set_then_only_what_changed(controller: Controller, tmp_path: Path) -> None:
    client = DeltaClient(f"127.0.0.1:{controller.xds_port}", make_node(PROXY_ID, {"NAMESPACE": "default"}))
    await client.start()
    try:
        got = await sync_all(client)
        assert {r.name for r in got[CLUSTER].resources} >= {CLUSTER_ALL, CLUSTER_V1, "PassthroughCluster"}
        assert {r.name for r in got[LISTENER].resources} == {
            "virtualOutbound",
            "virtualInbound",
            "0.0.0.0_9080",
        }
        assert [r.name for r in got[ROUTE].resources] == ["9080"]
        # The last ACK is on its way: wait for the controller to read it.
        for _ in range(200):
            status = await syncz(controller)
            if all(s["status"] == "SYNCED" for s in status[0]["types"].values()):
                break
            await asyncio.sleep(0.02)
        assert {t.rsplit(".", 1)[1]: s["status"] for t, s in status[0]["types"].items()} == {
            "Cluster": "SYNCED",
            "ClusterLoadAssignment": "SYNCED",
            "Listener": "SYNCED",
            "RouteConfiguration": "SYNCED",
        }

        # One VirtualService change: only RouteConfiguration "9080" comes.
        docs = [d for d in yaml.safe_load_all((tmp_path / "mesh.yaml").read_text()) if d]
        vs = next(d for d in docs if d["kind"] == "VirtualService")
        vs["spec"]["http"][1]["route"][0]["weight"] = 10
        vs["spec"]["http"][1]["route"][1]["weight"] = 90
        before_version = client.held[ROUTE]["9080"]
        pushes = controller.pushes_done
        write_docs(tmp_path / "mesh.yaml", docs)
        response = await client.recv()
        await quiet(controller, pushes)
        assert response.type_url == ROUTE
        assert [r.name for r in response.resources] == ["9080"] and not response.removed_resources
        assert pushed_now(controller) == [("RDS", ["9080"])]  # nothing else was sent
        client.ack(response)
        assert client.held[ROUTE]["9080"] != before_version

        # One endpoint change (a new v1 pod behind reviews): only the affected assignments come.
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "reviews-v1-b",
                "namespace": "default",
                "labels": {"app": "reviews", "version": "v1"},
            },
            "status": {"podIP": "10.244.0.13"},
        }
        eps = next(d for d in docs if d["kind"] == "EndpointSlice")
        eps["endpoints"].append(
            {
                "addresses": ["10.244.0.13"],
                "conditions": {"ready": True},
                "targetRef": {"kind": "Pod", "name": "reviews-v1-b", "namespace": "default"},
            }
        )
        pushes = controller.pushes_done
        write_docs(tmp_path / "mesh.yaml", [*docs, pod])
        response = await client.recv()
        await quiet(controller, pushes)
        assert response.type_url == ENDPOINT
        assert sorted(r.name for r in response.resources) == [CLUSTER_V1, CLUSTER_ALL]
        assert pushed_now(controller) == [("EDS", [CLUSTER_V1, CLUSTER_ALL])]
        client.ack(response)

        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{controller.debug_port}/debug/push_log?limit=1") as resp:
                (entry,) = await resp.json()
        assert entry["type"] == "EDS" and entry["changed"] == [CLUSTER_V1, CLUSTER_ALL]
        assert "EndpointSlice default/reviews-abc" in entry["causes"]
    finally:
        await client.close()


async def test_nack_is_tracked_and_not_resent(controller: Controller, tmp_path: Path) -> None:
    client = DeltaClient(f"127.0.0.1:{controller.xds_port}", make_node(PROXY_ID, {"NAMESPACE": "default"}))
    await client.start()
    try:
        client.subscribe(CLUSTER)
        response = await client.recv()
        client.nack(response, "cluster outbound|9080||x: lb_policy not supported")
        for _ in range(200):
            status = await syncz(controller)
            if status and status[0]["types"][CLUSTER]["status"] == "NACKED":
                break
            await asyncio.sleep(0.02)
        cds = status[0]["types"][CLUSTER]
        assert cds["status"] == "NACKED"
        assert cds["error"] == "cluster outbound|9080||x: lb_policy not supported"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{controller.debug_port}/metrics") as resp:
                metrics = await resp.text()
        assert 'pilot_total_xds_rejects{type="cds"} 1.0' in metrics  # istiod's name, no _total
        assert client.pending() == 0  # the rejected config is not pushed again
    finally:
        await client.close()


async def test_reconnect_resumes_without_resend(controller: Controller) -> None:
    first = DeltaClient(f"127.0.0.1:{controller.xds_port}", make_node(PROXY_ID, {"NAMESPACE": "default"}))
    await first.start()
    await sync_all(first)
    held = {t: dict(v) for t, v in first.held.items()}
    await first.close()

    second = DeltaClient(f"127.0.0.1:{controller.xds_port}", make_node(PROXY_ID, {"NAMESPACE": "default"}))
    await second.start()
    try:
        for type_url in (CLUSTER, LISTENER):
            second.subscribe(type_url, initial_versions=held[type_url])
            response = await second.recv()
            assert response.type_url == type_url
            assert list(response.resources) == [] and list(response.removed_resources) == []
            second.ack(response)
        # One stale version and one the server no longer has: only those two are answered.
        routes = dict(held[ROUTE])
        routes["9080"] = "stale"
        routes["8080"] = "gone"
        second.subscribe(ROUTE, ["9080", "8080"], initial_versions=routes)
        response = await second.recv()
        assert [r.name for r in response.resources] == ["9080"]
        assert list(response.removed_resources) == ["8080"]
    finally:
        await second.close()


async def test_invalid_config_is_skipped_reported_and_the_rest_keeps_working(
    controller: Controller, tmp_path: Path
) -> None:
    bad = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "broken", "namespace": "default"},
        "spec": {
            "hosts": ["ratings"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "ratings"}, "weight": 30},
                        {"destination": {"host": "x"}, "weight": 30},
                    ]
                }
            ],
        },
    }
    pushes = controller.pushes_done
    write_docs(tmp_path / "broken.yaml", [bad])
    for _ in range(200):
        if controller.invalid():
            break
        await asyncio.sleep(0.025)
    assert controller.invalid() == [
        {
            "object": "VirtualService default/broken",
            "kept_previous": False,
            "errors": [
                "VirtualService default/broken: http[0].route[0].weight: "
                "weights must sum to 100 (they sum to 60)"
            ],
        }
    ]
    assert controller.pushes_done == pushes  # nothing valid changed, nothing pushed
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{controller.debug_port}/metrics") as resp:
            assert 'mizzen_invalid_configs{kind="VirtualService"} 1.0' in await resp.text()
        async with http.get(f"http://127.0.0.1:{controller.debug_port}/ready") as resp:
            assert resp.status == 200


async def test_routes_to_undefined_subsets_are_listed_at_debug_warnings(
    controller: Controller, tmp_path: Path
) -> None:
    docs = [d for d in yaml.safe_load_all((tmp_path / "mesh.yaml").read_text()) if d]
    vs = next(d for d in docs if d["kind"] == "VirtualService")
    vs["spec"]["http"][0]["route"][0]["destination"]["subset"] = "v3"
    pushes = controller.pushes_done
    write_docs(tmp_path / "mesh.yaml", docs)
    await quiet(controller, pushes)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{controller.debug_port}/debug/warnings") as resp:
            warnings = await resp.json()
        async with http.get(f"http://127.0.0.1:{controller.debug_port}/metrics") as resp:
            assert "mizzen_config_analysis_warnings 1.0" in await resp.text()
    assert warnings == [
        {
            "object": "VirtualService default/reviews",
            "warnings": [
                "VirtualService default/reviews: http[0].route[0].destination.subset: "
                "subset 'v3' is not defined by any DestinationRule for reviews.default.svc.cluster.local "
                "(requests routed to it fail with 503)"
            ],
        }
    ]
