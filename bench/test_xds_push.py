"""Control-plane benchmarks: cold translation, and pushing one change to many connected proxies.

Cold translation: 1k and 10k services with 5 endpoints each, model + translation for one proxy.
Push: 1000 simulated proxies (real gRPC streams, in a second process) connected to a controller with
1000 services; one VirtualService change and one endpoint change, over Delta and over SotW: time from
the start of the push (after debounce) to each proxy's ACK, and bytes sent per proxy. Memory: controller
RSS per connected proxy, and RSS with 1000 services and 2000 proxies.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controller.app import Controller
from controller.model.snapshot import MeshState
from controller.model.values import FrozenMap
from controller.sources.files import FilesSource
from controller.xds.generator import Translator
from controller.xds.node import ProxyNode
from controller.xds.resources import ENDPOINT, ROUTE

ENDPOINTS_PER_SERVICE = 5


def mesh(services: int) -> list[dict[str, Any]]:
    """``services`` HTTP services over 20 namespaces, 5 ready endpoints each, one VirtualService."""
    docs: list[dict[str, Any]] = []
    for i in range(services):
        ns = f"ns{i % 20}"
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"svc{i}", "namespace": ns},
                "spec": {
                    "clusterIP": f"10.96.{i // 256}.{i % 256}",
                    "selector": {"app": f"svc{i}"},
                    "ports": [{"name": "http", "port": 8080}],
                },
            }
        )
        docs.append(endpoint_slice(i, ready=ENDPOINTS_PER_SERVICE))
    docs.append(virtual_service(timeout="5s"))
    return docs


def endpoint_slice(i: int, ready: int) -> dict[str, Any]:
    addresses = [
        f"10.{1 + (i * 8 + j) // 65536}.{((i * 8 + j) // 256) % 256}.{(i * 8 + j) % 256}" for j in range(8)
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"svc{i}-1",
            "namespace": f"ns{i % 20}",
            "labels": {"kubernetes.io/service-name": f"svc{i}"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses[:ready]],
    }


def virtual_service(timeout: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "svc0", "namespace": "ns0"},
        "spec": {
            "hosts": ["svc0"],
            "http": [
                {
                    "match": [{"headers": {"x-canary": {"exact": "1"}}}],
                    "route": [{"destination": {"host": "svc1.ns1.svc.cluster.local"}}],
                },
                {"route": [{"destination": {"host": "svc0"}}], "timeout": timeout},
            ],
        },
    }


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- cold translation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("services", [1000, 10000])
def test_cold_translation(benchmark: Any, services: int) -> None:
    docs = mesh(services)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    node = ProxyNode(
        id="sidecar~10.0.0.1~client.ns0~ns0.svc.cluster.local", type="sidecar", ip="10.0.0.1", pod="client",
        namespace="ns0", labels=FrozenMap(), ips=("10.0.0.1",), generator="", cluster_id="", istio_version="",
        service_account="", workload_name="",
    )  # fmt: skip

    def cold() -> int:
        update = MeshState().load(by_kind)
        resources = Translator(update.snapshot).proxy_resources(node)
        return sum(len(v) for v in resources.values())

    count = benchmark.pedantic(cold, rounds=3, iterations=1)
    assert count >= 2 * services
    tracemalloc.start()
    cold()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    benchmark.extra_info["python_heap_peak_mb"] = round(peak / 1e6, 1)
    print(f"\ncold {services} services: python heap peak {peak / 1e6:.0f} MB (upb arenas not counted)")


# --- many proxies -------------------------------------------------------------------------------------------

CLIENTS = r"""
import asyncio, json, sys
import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

target, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
stats = {"responses": {}}
synced = 0

async def proxy(i, channel):
    # Like a real proxy, reconnect when the stream fails (grpcio's client fails a few of thousands of
    # streams opened at once with "Failed execute_batch", before anything was sent).
    while True:
        try:
            await stream(i, channel)
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.2)

synced_ids = set()

async def stream(i, channel):
    global synced
    q = asyncio.Queue()
    meta = struct_pb2.Struct(); meta.update({"NAMESPACE": "ns0"})
    node_id = f"sidecar~10.200.{i // 256}.{i % 256}~client-{i}.ns0~ns0.svc.cluster.local"
    node = base_pb2.Node(id=node_id, metadata=meta)
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    delta = mode == "delta"
    names = {}
    def req(type_url, subscribe=(), nonce=""):
        if delta:
            r = discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, resource_names_subscribe=list(subscribe), response_nonce=nonce
            )
        else:
            names.setdefault(type_url, list(subscribe))
            r = discovery_pb2.DiscoveryRequest(
                type_url=type_url, resource_names=names[type_url], response_nonce=nonce
            )
        if not req.sent:
            r.node.CopyFrom(node); req.sent = True
        q.put_nowait(r)
    req.sent = False
    async def requests():
        while True:
            yield await q.get()
    call = (stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources)(requests())
    req(CDS); req(LDS)
    acked = set()
    async for resp in call:
        t = resp.type_url
        stats["responses"][t] = stats["responses"].get(t, 0) + 1
        req(t, nonce=resp.nonce)
        if t == CDS and EDS not in acked and EDS not in names:
            if delta:
                eds = [r.name for r in resp.resources if r.name.startswith("outbound|")]
            else:
                eds = []
                for a in resp.resources:
                    c = cluster_pb2.Cluster(); c.ParseFromString(a.value)
                    if c.name.startswith("outbound|"): eds.append(c.name)
            names[EDS] = eds
            req(EDS, eds)
        if t == LDS and RDS not in names:
            names[RDS] = ["8080"]
            req(RDS, ["8080"])
        if t not in acked:
            acked.add(t)
            if len(acked) == 4 and i not in synced_ids:
                synced_ids.add(i)
                synced += 1
                if synced == count:
                    print(json.dumps({"synced": count}), flush=True)

async def commands():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"stats":
            print(json.dumps(stats), flush=True)

async def main():
    opts = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    channels = [grpc.aio.insecure_channel(target, options=opts) for _ in range(max(1, count // 10))]
    tasks = [asyncio.create_task(proxy(i, channels[i % len(channels)])) for i in range(count)]
    await commands()

asyncio.run(main())
"""


class Fleet:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self, timeout: float = 600) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert raw, "the client fleet died"
        return json.loads(raw)  # type: ignore[no-any-return]

    async def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        return await self.line()


async def start_fleet(tmp: Path, port: int, count: int, mode: str) -> Fleet:
    script = tmp / "fleet.py"
    script.write_text(CLIENTS)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), f"127.0.0.1:{port}", str(count), mode,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    fleet = Fleet(proc)
    assert (await fleet.line())["synced"] == count
    return fleet


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[tuple[Controller, FilesSource]]:
    (tmp_path / "mesh").mkdir()
    source = FilesSource(tmp_path / "mesh", poll_interval=3600)
    ctl = Controller(source, host="127.0.0.1", xds_port=0, debug_port=None, debounce_after=0.01)
    await ctl.start()
    try:
        yield ctl, source
    finally:
        await ctl.stop(grace=0)


async def converge(
    ctl: Controller, source: FilesSource, change: list[dict[str, Any]], type_url: str, n: int
) -> list[float]:
    """Apply ``change``; per proxy, seconds from the start of the push (after debounce) to its ACK."""
    acks: list[float] = []
    done = asyncio.Event()

    def observe(conn: Any, acked_type: str, pending: Any) -> None:
        if acked_type == type_url and pending.changed_at is not None:
            acks.append(time.monotonic())
            if len(acks) == n:
                done.set()

    ctl.ads.ack_observers.append(observe)
    try:
        pushes = ctl.pushes_done
        await source.apply(change)
        await asyncio.wait_for(done.wait(), 120)
        assert ctl.pushes_done == pushes + 1
        return [t - ctl.last_flush_started for t in acks]
    finally:
        ctl.ads.ack_observers.remove(observe)


def sent_bytes(ctl: Controller, type_url: str) -> float:
    short = {ROUTE: "rds", ENDPOINT: "eds"}[type_url]
    return ctl.metrics.sent_bytes.labels(short)._value.get()  # type: ignore[no-any-return]


SIDECAR = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Sidecar",
    "metadata": {"name": "default", "namespace": "ns0"},
    "spec": {"egress": [{"hosts": ["./*"]}]},
}


@pytest.mark.parametrize("mode", ["delta", "sotw", "delta+sidecar"])
async def test_one_change_to_1000_proxies(
    controller: tuple[Controller, FilesSource], tmp_path: Path, mode: str, benchmark: Any
) -> None:
    """``delta+sidecar``: the proxies' namespace has a Sidecar limiting egress to its own 50 services
    (Istio's advice for large meshes), so RouteConfiguration "8080" holds 50 virtual hosts, not 1000."""
    ctl, source = controller
    await source.apply(mesh(1000) + ([SIDECAR] if mode.endswith("+sidecar") else []))
    while ctl.state.snapshot.count("Service") < 1000:
        await asyncio.sleep(0.05)
    proxies = 1000
    fleet = await start_fleet(tmp_path, ctl.xds_port, proxies, mode.split("+")[0])
    figures: dict[str, Any] = {}
    for label, type_url, changes in (
        ("vs", ROUTE, [[virtual_service(timeout=f"{t}s")] for t in (6, 7, 8, 9, 10)]),
        ("endpoint", ENDPOINT, [[endpoint_slice(20, ready=r)] for r in (4, 5, 3, 5, 4)]),
    ):
        samples: list[float] = []
        totals: list[float] = []  # per change: until the last of the 1000 ACKs
        bytes_per_proxy: list[float] = []
        for change in changes:
            before = sent_bytes(ctl, type_url)
            times = await converge(ctl, source, change, type_url, proxies)
            bytes_per_proxy.append((sent_bytes(ctl, type_url) - before) / proxies)
            samples.extend(times)
            totals.append(max(times))
        q = statistics.quantiles(samples, n=10)
        figures[label] = {
            "p50_ms": round(statistics.median(samples) * 1000, 1),
            "p90_ms": round(q[8] * 1000, 1),
            "all_acked_ms": [round(t * 1000) for t in totals],
            "bytes_per_proxy": round(statistics.median(bytes_per_proxy)),
        }
    fleet.proc.kill()
    await fleet.proc.wait()
    benchmark.extra_info.update(figures)
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\n{mode}: {json.dumps(figures)}")


async def test_delta_endpoint_bytes_do_not_grow_with_the_mesh(
    controller: tuple[Controller, FilesSource], tmp_path: Path, benchmark: Any
) -> None:
    ctl, source = controller
    figures = {}
    for services in (1000, 10000):
        await source.apply(mesh(services))
        while ctl.state.snapshot.count("Service") < services:
            await asyncio.sleep(0.05)
        fleet = await start_fleet(tmp_path, ctl.xds_port, 10, "delta")
        before = sent_bytes(ctl, ENDPOINT)
        await converge(ctl, source, [endpoint_slice(7, ready=3)], ENDPOINT, 10)
        figures[services] = (sent_bytes(ctl, ENDPOINT) - before) / 10
        await converge(ctl, source, [endpoint_slice(7, ready=5)], ENDPOINT, 10)
        fleet.proc.kill()
        await fleet.proc.wait()
    benchmark.extra_info["endpoint_change_bytes_per_proxy"] = figures
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\ndelta endpoint change bytes per proxy by mesh size: {figures}")
    assert figures[1000] == figures[10000]


async def test_memory_1000_services_2000_proxies(
    controller: tuple[Controller, FilesSource], tmp_path: Path, benchmark: Any
) -> None:
    """Run alone (``-k memory``) for a clean process: RSS is the whole process's, pytest included."""
    ctl, source = controller
    started = rss_mb()
    await source.apply(mesh(1000))
    while ctl.state.snapshot.count("Service") < 1000:
        await asyncio.sleep(0.05)
    ctl.translator.view(ctl.translator.scope_key(  # type: ignore[union-attr]
        ProxyNode(id="x", type="sidecar", ip="", pod="", namespace="ns0", labels=FrozenMap(), ips=(),
                  generator="", cluster_id="", istio_version="", service_account="", workload_name="")
    ))  # fmt: skip
    meshed = rss_mb()
    fleet = await start_fleet(tmp_path, ctl.xds_port, 2000, "delta")
    connected = rss_mb()
    fleet.proc.kill()
    await fleet.proc.wait()
    figures = {
        "rss_mb_empty": round(started),
        "rss_mb_with_mesh": round(meshed),
        "rss_mb_with_2000_proxies": round(connected),
        "kb_per_proxy": round((connected - meshed) * 1024 / 2000, 1),
    }
    benchmark.extra_info.update(figures)
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\nmemory, 1000 services / 2000 Delta proxies: {json.dumps(figures)} (pid {os.getpid()})")
