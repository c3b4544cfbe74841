"""The informer (Reflector, queue, Store, SharedInformer) over real HTTP against the API test server:
initial sync, updates, deletes, a dropped watch, a 410 mid-stream, bookmarks, a hanging server, paging,
429 backoff, and deletions noticed by a re-list."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from support.kubeapi import CORE, KubeApiServer, running, status
from support.kubeapi.clock import FakeClock

from controller.informer.informer import SharedInformer
from controller.informer.kubeclient import KubeClient
from controller.informer.queue import Delta, DeltaType
from controller.informer.reflector import ReflectorOptions
from controller.informer.resource import ResourceClient, ResourceType

Obj = dict[str, Any]
SERVICES = ResourceType("", "v1", "services", "Service")


class Recorder:
    def __init__(self) -> None:
        self.deltas: list[Delta] = []
        self.batches = 0

    def __call__(self, batch: Sequence[Delta]) -> None:
        self.deltas.extend(batch)
        self.batches += 1

    def seen(self) -> list[tuple[str, str]]:
        return [(d.type.value, d.key) for d in self.deltas]


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Waits until ``condition()`` holds (a bound on waiting, not a timing assertion)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def cut_watches(api: KubeApiServer, how: Callable[[], int]) -> None:
    """Ends the open watches with ``how`` while the server hangs, and waits until they are gone: changes
    made next happen while nobody watches (the client's retries wait until ``api.resume()``)."""
    api.hang()
    how()
    await eventually(lambda: api.open_watches == 0)


def service(name: str, **spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec,
    }


@pytest.fixture
async def api() -> AsyncIterator[KubeApiServer]:
    async with running(CORE, bookmark_interval=3600) as server:
        server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        yield server


@pytest.fixture
async def client(api: KubeApiServer, tmp_path: Path) -> AsyncIterator[KubeClient]:
    kube = await KubeClient.connect(str(api.write_kubeconfig(tmp_path / "kubeconfig")))
    yield kube
    await kube.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_informer(client: KubeClient, clock: FakeClock) -> AsyncIterator[Callable[..., SharedInformer]]:
    started: list[SharedInformer] = []

    def make(page_size: int = 500, read_timeout: float = 30.0) -> SharedInformer:
        lw = ResourceClient(client, SERVICES, read_timeout=read_timeout)
        informer = SharedInformer("services", lw, clock=clock, options=ReflectorOptions(page_size=page_size))
        started.append(informer)
        return informer

    yield make
    for informer in started:
        await informer.stop()


async def synced(informer: SharedInformer, recorder: Recorder | None = None) -> Recorder:
    recorder = recorder or Recorder()
    informer.add_handler(recorder)
    await informer.start()
    await asyncio.wait_for(informer.wait_synced(), 10)
    return recorder


async def test_initial_sync_updates_and_deletes(
    api: KubeApiServer, make_informer: Callable[..., SharedInformer]
) -> None:
    for name in ("a", "b", "c"):
        api.create(service(name))
    informer = make_informer()
    assert not informer.has_synced()
    seen = await synced(informer)
    assert informer.has_synced()
    assert sorted(seen.seen()) == [("ADDED", "shop/a"), ("ADDED", "shop/b"), ("ADDED", "shop/c")]
    obj = informer.store.get("shop/a")
    assert obj is not None and obj["kind"] == "Service" and obj["apiVersion"] == "v1"  # stamped on list items
    [first_list] = api.requests_for("list", "services")
    assert first_list.query["resourceVersion"] == "0"
    await eventually(lambda: api.open_watches == 1)
    [watch] = api.requests_for("watch", "services")
    assert watch.query["allowWatchBookmarks"] == "true"
    assert 300 <= int(watch.query["timeoutSeconds"]) <= 600
    assert watch.query["resourceVersion"] == str(api.storage.revision)

    api.apply(service("a", ports=[{"port": 80}]))
    await eventually(lambda: len(seen.deltas) == 4)
    update = seen.deltas[-1]
    assert update.type is DeltaType.UPDATED and update.old is not None and update.new is not None
    assert update.old.get("spec") == {} and update.new["spec"] == {"ports": [{"port": 80}]}

    api.remove("Service", "b", "shop")
    await eventually(lambda: len(seen.deltas) == 5)
    delete = seen.deltas[-1]
    assert (delete.type, delete.key, delete.final_state_unknown) == (DeltaType.DELETED, "shop/b", False)
    assert delete.old is not None and delete.old["metadata"]["name"] == "b"
    assert informer.store.get("shop/b") is None
    assert [o["metadata"]["name"] for o in informer.store.by_index("namespace", "shop")] == ["a", "c"]
    assert len(api.requests_for("list", "services")) == 1  # all of it over one watch


async def test_dropped_watch_resumes_from_the_last_resource_version(
    api: KubeApiServer, make_informer: Callable[..., SharedInformer]
) -> None:
    api.create(service("a"))
    informer = make_informer()
    seen = await synced(informer)
    await eventually(lambda: api.open_watches == 1)
    last = informer.reflector.last_sync_resource_version
    await cut_watches(api, api.drop_watches)
    api.create(service("b"))
    api.resume()
    await eventually(lambda: ("ADDED", "shop/b") in seen.seen())
    second = api.requests_for("watch", "services")[1]
    assert second.query["resourceVersion"] == last
    assert len(api.requests_for("list", "services")) == 1


async def test_410_mid_stream_relists_and_emits_deletes_it_missed(
    api: KubeApiServer, make_informer: Callable[..., SharedInformer]
) -> None:
    api.create(service("a"))
    api.create(service("b"))
    informer = make_informer()
    seen = await synced(informer)
    await eventually(lambda: api.open_watches == 1)
    # While nobody watches: b is deleted, c created, a changed, and history compacted away.
    await cut_watches(api, api.expire_watches)
    api.remove("Service", "b", "shop")
    api.create(service("c"))
    api.apply(service("a", ports=[{"port": 1}]))
    api.compact()
    api.resume()
    await eventually(lambda: len(seen.deltas) == 5)
    after = sorted((d.type.value, d.key, d.final_state_unknown) for d in seen.deltas[2:])
    assert after == [("ADDED", "shop/c", False), ("DELETED", "shop/b", True), ("UPDATED", "shop/a", False)]
    deleted = next(d for d in seen.deltas if d.type is DeltaType.DELETED)
    assert deleted.old is not None and deleted.old["metadata"]["name"] == "b"  # the last state we knew
    relist = api.requests_for("list", "services")[1]
    assert relist.query.get("resourceVersionMatch") == "NotOlderThan"
    assert sorted(informer.store.keys()) == ["shop/a", "shop/c"]


async def test_watch_from_a_compacted_version_relists(
    api: KubeApiServer, make_informer: Callable[..., SharedInformer]
) -> None:
    api.create(service("a"))
    informer = make_informer()
    seen = await synced(informer)
    await eventually(lambda: api.open_watches == 1)
    await cut_watches(api, api.drop_watches)
    api.remove("Service", "a", "shop")
    api.compact()
    api.resume()  # the re-watch gets ERROR 410 "too old resource version"
    await eventually(lambda: ("DELETED", "shop/a") in seen.seen())
    assert seen.deltas[-1].final_state_unknown
    assert len(api.requests_for("list", "services")) == 2


async def test_bookmarks_keep_the_resource_version_fresh(
    api: KubeApiServer, make_informer: Callable[..., SharedInformer]
) -> None:
    informer = make_informer()
    await synced(informer)
    await eventually(lambda: api.open_watches == 1)
    for name in ("x", "y"):  # other kinds move the revision on; services do not change
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    api.send_bookmarks()
    await eventually(lambda: informer.reflector.bookmarks == 1)
    assert informer.reflector.last_sync_resource_version == str(api.storage.revision)
    # Thanks to the bookmark, a re-watch after compaction needs no re-list.
    await cut_watches(api, api.drop_watches)
    api.compact()
    api.resume()
    await eventually(lambda: len(api.requests_for("watch", "services")) == 2 and api.open_watches == 1)
    assert len(api.requests_for("list", "services")) == 1


async def test_hanging_server_read_timeout_then_recovery(
    api: KubeApiServer, make_informer: Callable[..., SharedInformer]
) -> None:
    informer = make_informer(read_timeout=0.3)
    seen = await synced(informer)
    await eventually(lambda: api.open_watches == 1)
    api.hang()  # the open watch goes silent, as over a half-open connection
    await eventually(lambda: informer.reflector.watches >= 3)  # timed out, tried again (and again)
    api.create(service("late"))
    api.resume()
    await eventually(lambda: ("ADDED", "shop/late") in seen.seen())
    assert len(api.requests_for("list", "services")) == 1


async def test_consistent_list_is_paged(
    api: KubeApiServer, make_informer: Callable[..., SharedInformer], clock: FakeClock
) -> None:
    for i in range(5):
        api.create(service(f"s{i}"))
    # The cached first list is refused as expired: the informer falls back to a consistent, paged list.
    api.inject(status.expired("The resourceVersion for the provided list is too old."), verb="list")
    informer = make_informer(page_size=2)
    seen = await synced(informer)
    lists = api.requests_for("list", "services")
    assert [r.query.get("resourceVersion") for r in lists] == ["0", None, None, None]
    assert [r.query.get("limit") for r in lists[1:]] == ["2", "2", "2"]
    assert [bool(r.query.get("continue")) for r in lists[1:]] == [False, True, True]
    assert len(seen.deltas) == 5
    assert len(clock.sleeps) == 1  # one backoff after the refused list


async def test_continue_token_expiring_mid_list_falls_back_to_one_unpaged_list(
    api: KubeApiServer, make_informer: Callable[..., SharedInformer]
) -> None:
    for i in range(5):
        api.create(service(f"s{i}"))
    api.inject(status.expired("expired"), verb="list", count=1)  # first (cached) list refused
    informer = make_informer(page_size=2)
    original = api._lister.list
    calls = 0

    async def compact_after_first_page(target: Any, query: dict[str, str]) -> Obj:
        nonlocal calls
        calls += 1
        result = await original(target, query)
        if calls == 1:
            api.create(service("s9"))
            api.compact()
        return result

    api._lister.list = compact_after_first_page  # type: ignore[method-assign]
    seen = await synced(informer)
    lists = api.requests_for("list", "services")
    # The refused cached list, the first consistent page, the next page (its token expired), one unpaged.
    assert [r.query.get("limit") for r in lists] == ["2", "2", "2", None]
    assert [bool(r.query.get("continue")) for r in lists] == [False, False, True, False]
    assert "resourceVersion" not in lists[3].query
    assert len(seen.deltas) == 6


async def test_429_waits_as_long_as_the_server_asks(
    api: KubeApiServer, make_informer: Callable[..., SharedInformer], clock: FakeClock
) -> None:
    api.create(service("a"))
    api.inject(status.too_many_requests(7), verb="list", count=2)
    informer = make_informer()
    await synced(informer)
    assert len(clock.sleeps) == 2 and all(s >= 7 for s in clock.sleeps)
    # Throttled watches keep their resourceVersion: no re-list.
    await eventually(lambda: api.open_watches == 1)
    api.inject(status.too_many_requests(4), verb="watch", count=1)
    await cut_watches(api, api.drop_watches)
    api.resume()
    await eventually(lambda: len(api.requests_for("watch", "services")) == 3 and api.open_watches == 1)
    assert clock.sleeps[-1] >= 4
    assert len(api.requests_for("list", "services")) == 3  # 2 refused + 1


async def test_backoff_grows_on_repeated_failures(
    api: KubeApiServer, make_informer: Callable[..., SharedInformer], clock: FakeClock
) -> None:
    api.inject(
        status.StatusError(status.status(500, "InternalError", "etcd is unhappy")), verb="list", count=4
    )
    informer = make_informer()
    await synced(informer)
    bases = [0.8, 1.6, 3.2, 6.4]
    assert len(clock.sleeps) == 4
    for waited, base in zip(clock.sleeps, bases, strict=True):
        assert base <= waited <= 2 * base  # exponential, with up to 100% jitter


async def test_too_large_resource_version_on_watch_means_a_consistent_relist(
    api: KubeApiServer, make_informer: Callable[..., SharedInformer]
) -> None:
    informer = make_informer()
    await synced(informer)
    await eventually(lambda: api.open_watches == 1)
    api.inject(status.too_large_resource_version(5000, 1000), verb="watch")
    await cut_watches(api, api.drop_watches)
    api.resume()
    await eventually(lambda: len(api.requests_for("list", "services")) == 2)
    assert "resourceVersion" not in api.requests_for("list", "services")[1].query


async def test_a_late_handler_sees_existing_objects(
    api: KubeApiServer, make_informer: Callable[..., SharedInformer]
) -> None:
    api.create(service("a"))
    informer = make_informer()
    await synced(informer)
    late = Recorder()
    informer.add_handler(late)
    assert late.seen() == [("ADDED", "shop/a")]
