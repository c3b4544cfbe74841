"""Watch events per second through the informer path: raw dicts with orjson (what the kube source does)
against kubernetes-asyncio's generated models (what its own watch helper does).

Each round handles the same 2000 watch lines of realistic Pods (~3 KB of JSON each, labels, annotations,
two containers with probes, status with conditions). Figures are in bench/README.md.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from kubernetes_asyncio.client import ApiClient

from controller.informer.listwatch import WatchEvent
from controller.informer.queue import Delta, DeltaQueue
from controller.informer.store import Store

EVENTS = 2000


def pod(i: int) -> dict[str, Any]:
    container = {
        "name": "app",
        "image": "registry.example.com/shop/reviews:1.17.0",
        "ports": [{"name": "http", "containerPort": 9080, "protocol": "TCP"}],
        "env": [{"name": f"SETTING_{n}", "value": f"value-{n}"} for n in range(6)],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 9080}, "periodSeconds": 5},
        "volumeMounts": [
            {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
        ],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"reviews-v1-{i:05d}",
            "namespace": "shop",
            "uid": f"00000000-0000-0000-0000-{i:012d}",
            "resourceVersion": str(100000 + i),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": "reviews", "version": "v1", "pod-template-hash": "7d9f8b6c5"},
            "annotations": {
                "sidecar.istio.io/status": '{"containers":["istio-proxy"]}',
                "prometheus.io/port": "15020",
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "reviews-v1-7d9f8b6c5",
                    "uid": "x",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "serviceAccountName": "reviews",
            "nodeName": "node-1",
            "containers": [container, {**container, "name": "istio-proxy", "image": "mizzen/proxy:0.1"}],
            "volumes": [
                {
                    "name": "kube-api-access",
                    "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
                }
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": f"10.0.{i // 250}.{i % 250}",
            "podIPs": [{"ip": f"10.0.{i // 250}.{i % 250}"}],
            "hostIP": "192.168.0.10",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
        },
    }


LINES = [orjson.dumps({"type": "MODIFIED", "object": pod(i)}) + b"\n" for i in range(EVENTS)]


def raw_decode() -> None:
    for line in LINES:
        event = orjson.loads(line)
        WatchEvent(event["type"], event["object"])


def model_decode(client: ApiClient) -> None:
    # kubernetes-asyncio's Watch.unmarshal_event: json.loads of the line, json.dumps of the object, and that
    # deserialised into its model.
    for line in LINES:
        event = json.loads(line)
        response: Any = SimpleNamespace(data=json.dumps(event["object"]))
        client.deserialize(response, "V1Pod")


def raw_informer_path() -> None:
    """Decode, coalescing queue, indexed store, one handler: everything after the socket."""
    store = Store()
    queue = DeltaQueue(store)
    queue.replace([])
    handled = 0

    def process(deltas: list[Delta]) -> None:
        nonlocal handled
        for delta in deltas:
            assert delta.new is not None
            store.upsert(delta.key, delta.new)
        handled += len(deltas)

    for line in LINES:
        event = orjson.loads(line)
        queue.update(event["object"])
    while len(queue):
        _pop_now(queue, process)
    assert handled == EVENTS


def _pop_now(queue: DeltaQueue, process: Any) -> None:
    coroutine = queue.pop(process)
    try:
        coroutine.send(None)  # pending keys: pop completes without suspending
    except StopIteration:
        return
    raise AssertionError("pop suspended with keys pending")


@pytest.mark.benchmark(group="informer-watch-events")
def test_raw_orjson_decode(benchmark: Any) -> None:
    benchmark.extra_info["events"] = EVENTS
    benchmark.pedantic(raw_decode, rounds=10, warmup_rounds=1)


@pytest.mark.benchmark(group="informer-watch-events")
def test_raw_full_informer_path(benchmark: Any) -> None:
    benchmark.extra_info["events"] = EVENTS
    benchmark.pedantic(raw_informer_path, rounds=10, warmup_rounds=1)


@pytest.fixture(scope="module")
def model_client() -> Iterator[ApiClient]:
    # Its constructor opens an aiohttp session, which wants a running loop; deserialising needs none.
    loop = asyncio.new_event_loop()

    async def make() -> ApiClient:
        return ApiClient()

    client = loop.run_until_complete(make())
    yield client
    loop.run_until_complete(client.close())
    loop.close()


@pytest.mark.benchmark(group="informer-watch-events")
def test_kubernetes_asyncio_models(benchmark: Any, model_client: ApiClient) -> None:
    client = model_client
    benchmark.extra_info["events"] = EVENTS
    benchmark.pedantic(model_decode, args=(client,), rounds=3, warmup_rounds=1)
