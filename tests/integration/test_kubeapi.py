"""The Kubernetes API test server on the wire, checked with a plain HTTP client against what a real
kube-apiserver answers (shapes, status codes, reasons, messages)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from support.kubeapi import CORE, KubeApiServer, istio_crds, running, status

Obj = dict[str, Any]


@pytest.fixture
async def api() -> AsyncIterator[KubeApiServer]:
    async with running(CORE + istio_crds(), bookmark_interval=0.2) as server:
        server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        yield server


@pytest.fixture
async def http(api: KubeApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {api.token}"}
    async with aiohttp.ClientSession(api.url, headers=headers) as session:
        yield session


def service(name: str, namespace: str = "shop", **labels: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
    }


async def get(http: aiohttp.ClientSession, path: str, **params: str) -> tuple[int, Obj]:
    async with http.get(path, params=params) as response:
        return response.status, await response.json()


async def watch_lines(http: aiohttp.ClientSession, path: str, count: int, **params: str) -> list[Obj]:
    """The first ``count`` events of a watch (or fewer if the server ends it)."""
    events: list[Obj] = []
    async with http.get(path, params={"watch": "true", **params}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        async for line in response.content:
            events.append(orjson.loads(line))
            if len(events) == count:
                break
    return events


async def test_discovery_documents(api: KubeApiServer, http: aiohttp.ClientSession) -> None:
    _, versions = await get(http, "/api")
    assert versions["kind"] == "APIVersions" and versions["versions"] == ["v1"]
    _, core = await get(http, "/api/v1")
    pods = next(r for r in core["resources"] if r["name"] == "pods")
    assert core["kind"] == "APIResourceList" and core["groupVersion"] == "v1"
    assert pods == {
        "name": "pods",
        "singularName": "pod",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        "shortNames": ["po"],
    }
    _, groups = await get(http, "/apis")
    networking = next(g for g in groups["groups"] if g["name"] == "networking.istio.io")
    assert networking["preferredVersion"] == {"groupVersion": "networking.istio.io/v1", "version": "v1"}
    assert [v["version"] for v in networking["versions"]] == ["v1", "v1beta1", "v1alpha3"]
    code, group = await get(http, "/apis/security.istio.io")
    assert code == 200 and group["kind"] == "APIGroup" and group["name"] == "security.istio.io"
    _, resources = await get(http, "/apis/networking.istio.io/v1alpha3")
    assert {r["kind"] for r in resources["resources"]} >= {"VirtualService", "Sidecar"}
    code, missing = await get(http, "/apis/networking.istio.io/v2")
    assert code == 404 and missing["reason"] == "NotFound"


async def test_list_pages_with_continue_and_remaining_count(
    api: KubeApiServer, http: aiohttp.ClientSession
) -> None:
    for i in range(5):
        api.create(service(f"svc-{i}"))
    code, first = await get(http, "/api/v1/namespaces/shop/services", limit="2")
    assert code == 200 and first["kind"] == "ServiceList" and first["apiVersion"] == "v1"
    assert [i["metadata"]["name"] for i in first["items"]] == ["svc-0", "svc-1"]
    assert "kind" not in first["items"][0]  # built-in lists leave TypeMeta off their items
    assert first["metadata"]["remainingItemCount"] == 3
    snapshot = first["metadata"]["resourceVersion"]
    api.create(service("svc-00"))  # after the snapshot: not in this list
    _, second = await get(
        http, "/api/v1/namespaces/shop/services", limit="2", **{"continue": first["metadata"]["continue"]}
    )
    _, third = await get(
        http, "/api/v1/namespaces/shop/services", limit="2", **{"continue": second["metadata"]["continue"]}
    )
    names = [i["metadata"]["name"] for page in (first, second, third) for i in page["items"]]
    assert names == [f"svc-{i}" for i in range(5)]
    assert second["metadata"]["resourceVersion"] == third["metadata"]["resourceVersion"] == snapshot
    assert "continue" not in third["metadata"] and "remainingItemCount" not in third["metadata"]


async def test_expired_continue_token_is_410_with_an_inconsistent_continuation(
    api: KubeApiServer, http: aiohttp.ClientSession
) -> None:
    for i in range(3):
        api.create(service(f"svc-{i}"))
    _, first = await get(http, "/api/v1/services", limit="1")
    api.create(service("svc-new"))
    api.compact()
    code, expired = await get(
        http, "/api/v1/services", limit="1", **{"continue": first["metadata"]["continue"]}
    )
    assert code == 410 and expired["reason"] == "Expired"
    assert expired["message"].startswith("The provided continue parameter is too old")
    _, rest = await get(http, "/api/v1/services", limit="10", **{"continue": expired["metadata"]["continue"]})
    assert [i["metadata"]["name"] for i in rest["items"]] == ["svc-1", "svc-2", "svc-new"]


async def test_resource_version_semantics(api: KubeApiServer, http: aiohttp.ClientSession) -> None:
    first = api.create(service("a"))
    api.create(service("b"))
    old = first["metadata"]["resourceVersion"]
    # "0": any state, from the cache, which ignores limit.
    _, any_state = await get(http, "/api/v1/services", resourceVersion="0", limit="1")
    assert len(any_state["items"]) == 2 and "continue" not in any_state["metadata"]
    # Exact at an older version: the state then.
    _, exact = await get(http, "/api/v1/services", resourceVersion=old, resourceVersionMatch="Exact")
    assert [i["metadata"]["name"] for i in exact["items"]] == ["a"] and exact["metadata"][
        "resourceVersion"
    ] == old
    # The legacy rule: a resourceVersion with a limit and no match is exact.
    _, legacy = await get(http, "/api/v1/services", resourceVersion=old, limit="10")
    assert [i["metadata"]["name"] for i in legacy["items"]] == ["a"]
    # Not older than: the newest state.
    _, newer = await get(http, "/api/v1/services", resourceVersion=old, resourceVersionMatch="NotOlderThan")
    assert len(newer["items"]) == 2
    api.compact()
    code, gone = await get(http, "/api/v1/services", resourceVersion=old, resourceVersionMatch="Exact")
    assert (code, gone["reason"], gone["message"]) == (
        410,
        "Expired",
        "The resourceVersion for the provided list is too old.",
    )
    future = str(api.storage.revision + 10)
    code, too_large = await get(
        http, "/api/v1/services", resourceVersion=future, resourceVersionMatch="Exact"
    )
    assert code == 504 and too_large["reason"] == "Timeout"
    assert too_large["details"]["causes"] == [
        {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
    ]
    assert too_large["message"].startswith("Timeout: Too large resource version: ")


async def test_not_older_than_waits_for_the_revision(api: KubeApiServer, http: aiohttp.ClientSession) -> None:
    wanted = str(api.storage.revision + 1)
    listing = asyncio.create_task(get(http, "/api/v1/services", resourceVersion=wanted))
    await asyncio.sleep(0.05)
    assert not listing.done()
    api.create(service("arrives"))
    code, body = await listing
    assert code == 200 and [i["metadata"]["name"] for i in body["items"]] == ["arrives"]
    api._lister.block_timeout = 0.05
    code, body = await get(http, "/api/v1/services", resourceVersion=str(api.storage.revision + 5))
    assert code == 504 and body["details"]["retryAfterSeconds"] == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"resourceVersionMatch": "Exact"},
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ),
        (
            {"resourceVersionMatch": "Exact", "resourceVersion": "0"},
            'resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
        ),
        ({"resourceVersionMatch": "Newest", "resourceVersion": "5"}, 'Unsupported value: "Newest"'),
        (
            {"resourceVersionMatch": "NotOlderThan", "resourceVersion": "5", "continue": "x"},
            "forbidden when continue is provided",
        ),
    ],
)
async def test_list_options_validation(
    http: aiohttp.ClientSession, params: dict[str, str], message: str
) -> None:
    code, body = await get(http, "/api/v1/pods", **params)
    assert code == 422 and body["reason"] == "Invalid"
    assert body["message"].startswith('ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: ')
    assert message in body["message"]
    assert body["details"]["causes"][0]["field"] == "resourceVersionMatch"


async def test_continue_with_a_resource_version_is_a_bad_request(http: aiohttp.ClientSession) -> None:
    code, body = await get(http, "/api/v1/pods", resourceVersion="7", **{"continue": "abc"})
    assert (code, body["reason"]) == (400, "BadRequest")
    assert body["message"] == "specifying resource version is not allowed when using continue"


async def test_selectors(api: KubeApiServer, http: aiohttp.ClientSession) -> None:
    api.create(service("a", app="web", tier="front"))
    api.create(service("b", app="web", tier="back"))
    api.create(service("c", app="db"))

    async def names(**params: str) -> list[str]:
        _, body = await get(http, "/api/v1/services", **params)
        return [i["metadata"]["name"] for i in body["items"]]

    assert await names(labelSelector="app=web") == ["a", "b"]
    assert await names(labelSelector="app=web,tier!=front") == ["b"]
    assert await names(labelSelector="tier in (front, back),app") == ["a", "b"]
    assert await names(labelSelector="!tier") == ["c"]
    assert await names(fieldSelector="metadata.name=c") == ["c"]
    assert await names(fieldSelector="metadata.namespace!=shop") == []
    code, body = await get(http, "/api/v1/services", fieldSelector="spec.clusterIP=1.2.3.4")
    assert (code, body["message"]) == (400, "field label not supported: spec.clusterIP")
    code, body = await get(http, "/api/v1/services", labelSelector="a in (b")
    assert code == 400 and body["reason"] == "BadRequest"


async def test_watch_from_zero_replays_state_then_streams(
    api: KubeApiServer, http: aiohttp.ClientSession
) -> None:
    api.create(service("a"))
    task = asyncio.create_task(watch_lines(http, "/api/v1/namespaces/shop/services", 3, resourceVersion="0"))
    await asyncio.sleep(0.1)
    api.create(service("b"))
    api.remove("Service", "a", "shop")
    events = await asyncio.wait_for(task, 10)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("DELETED", "a"),
    ]
    assert events[0]["object"]["kind"] == "Service" and events[0]["object"]["apiVersion"] == "v1"
    deleted_rv = int(events[2]["object"]["metadata"]["resourceVersion"])
    assert deleted_rv == api.storage.revision  # a DELETED carries the deletion's resourceVersion


async def test_watch_from_a_version_replays_only_later_events(
    api: KubeApiServer, http: aiohttp.ClientSession
) -> None:
    a = api.create(service("a"))
    api.apply({**service("a"), "spec": {"ports": [{"port": 80}]}})
    api.create(service("b"))
    events = await watch_lines(http, "/api/v1/services", 2, resourceVersion=a["metadata"]["resourceVersion"])
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "a"),
        ("ADDED", "b"),
    ]


async def test_watch_from_a_compacted_version_is_an_error_event(
    api: KubeApiServer, http: aiohttp.ClientSession
) -> None:
    old = api.create(service("a"))["metadata"]["resourceVersion"]
    api.create(service("b"))
    point = api.compact()
    events = await watch_lines(http, "/api/v1/services", 5, resourceVersion=old)
    assert events == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {old} ({point})",
                "reason": "Expired",
                "code": 410,
            },
        }
    ]


async def test_watch_selector_transitions(api: KubeApiServer, http: aiohttp.ClientSession) -> None:
    task = asyncio.create_task(
        watch_lines(http, "/api/v1/services", 3, resourceVersion="0", labelSelector="app=web")
    )
    await asyncio.sleep(0.1)
    api.create(service("a", app="db"))
    api.apply(service("a", app="web"))  # starts matching: ADDED
    api.apply(service("a", app="web", extra="x"))  # still matching: MODIFIED
    api.apply(service("a", app="db"))  # stops matching: DELETED
    events = await asyncio.wait_for(task, 10)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


async def test_bookmarks_carry_only_the_resource_version(
    api: KubeApiServer, http: aiohttp.ClientSession
) -> None:
    start = str(api.storage.revision)
    api.create(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}
    )  # another kind moves on
    events = await watch_lines(
        http,
        "/apis/networking.istio.io/v1beta1/virtualservices",
        1,
        resourceVersion=start,
        allowWatchBookmarks="true",
    )
    assert events == [
        {
            "type": "BOOKMARK",
            "object": {
                "kind": "VirtualService",
                "apiVersion": "networking.istio.io/v1beta1",
                "metadata": {"resourceVersion": str(api.storage.revision)},
            },
        }
    ]


async def test_watch_ends_cleanly_at_timeout_seconds(http: aiohttp.ClientSession) -> None:
    events = await asyncio.wait_for(watch_lines(http, "/api/v1/pods", 10, timeoutSeconds="1"), 10)
    assert events == []


async def test_custom_resources_keep_type_meta_and_serve_every_version(
    api: KubeApiServer, http: aiohttp.ClientSession
) -> None:
    vs: Obj = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"hosts": ["reviews"]},
    }
    async with http.post(
        "/apis/networking.istio.io/v1beta1/namespaces/shop/virtualservices", json=vs
    ) as response:
        assert response.status == 201
        created = await response.json()
    assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]
    _, listed = await get(http, "/apis/networking.istio.io/v1/virtualservices")
    assert (
        listed["items"][0]["apiVersion"] == "networking.istio.io/v1"
        and listed["items"][0]["kind"] == "VirtualService"
    )
    # Custom resources refuse an update without a resourceVersion; with a stale one it is a conflict.
    path = "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/reviews"
    body = {**vs, "apiVersion": "networking.istio.io/v1", "spec": {"hosts": ["reviews", "r2"]}}
    async with http.put(path, json=body) as response:
        assert response.status == 422
    stale = {**body, "metadata": {**vs["metadata"], "resourceVersion": "1"}}
    async with http.put(path, json=stale) as response:
        assert (response.status, (await response.json())["reason"]) == (409, "Conflict")
    fresh = {
        **body,
        "metadata": {**vs["metadata"], "resourceVersion": created["metadata"]["resourceVersion"]},
    }
    async with http.put(path, json=fresh) as response:
        updated = await response.json()
    assert updated["metadata"]["generation"] == 2 and updated["spec"]["hosts"] == ["reviews", "r2"]
    patch = {"metadata": {"labels": {"team": "x"}}}
    headers = {"Content-Type": "application/merge-patch+json"}
    async with http.patch(path, data=orjson.dumps(patch), headers=headers) as response:
        patched = await response.json()
    assert patched["metadata"]["labels"] == {"team": "x"} and patched["metadata"]["generation"] == 2
    async with http.patch(
        path, data=b"{}", headers={"Content-Type": "application/strategic-merge-patch+json"}
    ) as response:
        assert response.status == 415
    async with http.delete(path) as response:
        assert response.status == 200
    code, missing = await get(http, path)
    assert (code, missing["message"]) == (404, 'virtualservices.networking.istio.io "reviews" not found')


async def test_create_errors(api: KubeApiServer, http: aiohttp.ClientSession) -> None:
    async with http.post("/api/v1/namespaces/nowhere/services", json=service("a", "nowhere")) as response:
        body = await response.json()
        assert (response.status, body["message"]) == (404, 'namespaces "nowhere" not found')
    async with http.post("/api/v1/namespaces/shop/services", json=service("a")) as response:
        assert response.status == 201
    async with http.post("/api/v1/namespaces/shop/services", json=service("a")) as response:
        body = await response.json()
        assert (response.status, body["reason"], body["message"]) == (
            409,
            "AlreadyExists",
            'services "a" already exists',
        )
    async with http.post("/api/v1/namespaces/shop/services", json=service("Bad_Name")) as response:
        assert response.status == 422
    async with http.post("/api/v1/namespaces/shop/services", json=service("b", "other")) as response:
        assert response.status == 400


async def test_injected_429_carries_retry_after(api: KubeApiServer, http: aiohttp.ClientSession) -> None:
    api.inject(status.too_many_requests(3), verb="list", resource="pods")
    async with http.get("/api/v1/pods") as response:
        body = await response.json()
        assert response.status == 429 and response.headers["Retry-After"] == "3"
        assert body["reason"] == "TooManyRequests" and body["details"]["retryAfterSeconds"] == 3
    async with http.get("/api/v1/pods") as response:
        assert response.status == 200


async def test_unauthenticated_requests_are_refused(api: KubeApiServer) -> None:
    async with aiohttp.ClientSession(api.url) as anonymous, anonymous.get("/api/v1/pods") as response:
        assert response.status == 401 and (await response.json())["reason"] == "Unauthorized"


async def test_dropped_watch_is_a_broken_chunked_stream(
    api: KubeApiServer, http: aiohttp.ClientSession
) -> None:
    async with http.get("/api/v1/pods", params={"watch": "1"}) as response:
        await asyncio.sleep(0.1)
        assert api.drop_watches() == 1
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.content.read()


async def test_expired_watch_gets_an_error_event(api: KubeApiServer, http: aiohttp.ClientSession) -> None:
    task = asyncio.create_task(watch_lines(http, "/api/v1/pods", 5))
    while api.open_watches == 0:
        await asyncio.sleep(0.01)
    api.expire_watches()
    [event] = await asyncio.wait_for(task, 10)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410


async def test_crd_removed_and_added_back(api: KubeApiServer, http: aiohttp.ClientSession) -> None:
    api.unregister("networking.istio.io", "sidecars")
    code, _ = await get(http, "/apis/networking.istio.io/v1/sidecars")
    assert code == 404
    _, resources = await get(http, "/apis/networking.istio.io/v1")
    assert "sidecars" not in {r["name"] for r in resources["resources"]}
    api.register(istio_crds()[4])
    code, _ = await get(http, "/apis/networking.istio.io/v1/sidecars")
    assert code == 200
