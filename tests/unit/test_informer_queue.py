"""The coalescing DeltaQueue and the indexed Store, without any I/O."""

from __future__ import annotations

import asyncio
from typing import Any

from controller.informer.queue import Delta, DeltaQueue, DeltaType, resolve
from controller.informer.store import SERVICE_NAME_INDEX, Store, service_name_index

Obj = dict[str, Any]


def obj(name: str, rv: str, uid: str = "u1", namespace: str = "ns", **labels: str) -> Obj:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": rv,
            "uid": uid,
            "labels": labels,
        }
    }


class Harness:
    """A queue wired to a store the way the informer wires them."""

    def __init__(self) -> None:
        self.store = Store()
        self.queue = DeltaQueue(self.store)
        self.seen: list[Delta] = []

    def process(self, deltas: list[Delta]) -> None:
        for delta in deltas:
            if delta.type is DeltaType.DELETED:
                self.store.delete(delta.key)
            else:
                assert delta.new is not None
                self.store.upsert(delta.key, delta.new)
        self.seen.extend(deltas)

    async def drain(self) -> list[tuple[str, str]]:
        start = len(self.seen)
        while len(self.queue):
            await self.queue.pop(self.process, limit=2)
        return [(d.type.value, d.key) for d in self.seen[start:]]


async def test_a_burst_of_updates_is_one_net_change() -> None:
    h = Harness()
    h.queue.replace([obj("a", "1")])
    assert not h.queue.has_synced()
    assert await h.drain() == [("ADDED", "ns/a")]
    assert h.queue.has_synced() and h.queue.synced.is_set()
    for rv in range(2, 50):
        h.queue.update(obj("a", str(rv)))
    assert len(h.queue) == 1
    assert await h.drain() == [("UPDATED", "ns/a")]
    assert h.seen[-1].old is not None and h.seen[-1].old["metadata"]["resourceVersion"] == "1"
    assert h.seen[-1].new is not None and h.seen[-1].new["metadata"]["resourceVersion"] == "49"


async def test_created_and_deleted_within_a_burst_is_nothing() -> None:
    h = Harness()
    h.queue.replace([])
    h.queue.update(obj("a", "1"))
    h.queue.delete(obj("a", "2"))
    assert await h.drain() == []


async def test_deleted_and_recreated_under_the_same_name_is_both_halves() -> None:
    h = Harness()
    h.queue.replace([obj("a", "1", uid="old")])
    await h.drain()
    h.queue.delete(obj("a", "2", uid="old"))
    h.queue.update(obj("a", "3", uid="new"))
    assert await h.drain() == [("DELETED", "ns/a"), ("ADDED", "ns/a")]


async def test_relist_emits_missing_keys_as_deleted_final_state_unknown() -> None:
    h = Harness()
    h.queue.replace([obj("a", "1"), obj("b", "1")])
    await h.drain()
    h.queue.replace([obj("a", "1")])  # unchanged a; b is gone
    assert await h.drain() == [("DELETED", "ns/b")]
    deleted = h.seen[-1]
    assert deleted.final_state_unknown and deleted.old == obj("b", "1")


async def test_relist_keeps_a_watched_delete_with_its_real_final_state() -> None:
    h = Harness()
    h.queue.replace([obj("a", "1")])
    await h.drain()
    h.queue.delete(obj("a", "5"))  # the watch saw it go, then a relist happens before processing
    h.queue.replace([])
    await h.drain()
    assert not h.seen[-1].final_state_unknown
    assert h.seen[-1].old is not None and h.seen[-1].old["metadata"]["resourceVersion"] == "5"


async def test_has_synced_survives_a_relist_that_drops_unprocessed_keys() -> None:
    h = Harness()
    h.queue.replace([obj("a", "1"), obj("b", "1")])
    h.queue.replace([obj("a", "1")])  # b vanished before anyone processed it
    assert await h.drain() == [("ADDED", "ns/a")]
    assert h.queue.has_synced()


async def test_empty_first_list_is_synced_at_once() -> None:
    h = Harness()
    h.queue.replace([])
    assert h.queue.has_synced()


async def test_pop_waits_for_work() -> None:
    h = Harness()
    h.queue.replace([])
    waiting = asyncio.create_task(h.queue.pop(h.process))
    await asyncio.sleep(0)
    assert not waiting.done()
    h.queue.update(obj("a", "1"))
    await asyncio.wait_for(waiting, 5)
    assert [(d.type.value, d.key) for d in h.seen] == [("ADDED", "ns/a")]


def test_resolve_same_resource_version_is_no_change() -> None:
    known = obj("a", "7")
    from controller.informer.queue import _Upsert

    assert resolve("ns/a", known, _Upsert(obj("a", "7"))) == []


def test_store_indexes_follow_updates_and_deletes() -> None:
    store = Store()
    store.add_indexer(SERVICE_NAME_INDEX, service_name_index)
    slice_v1 = {
        "metadata": {"name": "s1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}}
    }
    store.upsert("shop/s1", slice_v1)
    store.upsert("shop/p", obj("p", "1", namespace="shop", app="web", version="v1"))
    assert [o["metadata"]["name"] for o in store.by_index(SERVICE_NAME_INDEX, "shop/web")] == ["s1"]
    assert store.index_keys("label", "app=web") == ["shop/p"]
    store.upsert("shop/p", obj("p", "2", namespace="shop", app="api"))
    assert store.index_keys("label", "app=web") == []
    assert store.select({"app": "api"}, "shop") == [obj("p", "2", namespace="shop", app="api")]
    assert store.select({"app": "api"}, "other") == []
    assert len(store.select({})) == 2
    store.delete("shop/s1")
    assert store.by_index(SERVICE_NAME_INDEX, "shop/web") == []
    assert store.index_values("namespace") == ["shop"]
