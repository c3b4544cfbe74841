"""WATCH: one ``Watcher`` per open watch request, fed by storage events, and the stream it writes.

Behaviour follows the API server's watch cache (1.30s): a watch from resourceVersion "" or "0" first
replays the current objects as ADDED; a watch from an older resourceVersion than the server keeps gets
HTTP 200 and a single ERROR event (410 Expired, "too old resource version: N (M)"), then the stream ends;
a watch from a version the server has not reached yet is accepted and quiet until it has. Objects that
start or stop matching the watch's selectors arrive as ADDED / DELETED. Bookmarks (when asked for) carry
only ``metadata.resourceVersion``, go out about once per ``bookmark_interval`` and 2 s before the watch's
deadline, and only when the server's revision has moved past what the watcher last got. At
``timeoutSeconds`` the stream ends cleanly.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from . import status as st
from .listing import int_param, invalid_list_options, parse_rv, predicate
from .objects import Target
from .resources import ResourceDef
from .storage import CompactedError, Event, Storage

Obj = dict[str, Any]
Predicate = Callable[[Obj], bool]


@dataclass(eq=False)
class Watcher:
    """An open watch: what it filters on and the events waiting to be written."""

    resource: ResourceDef
    version: str
    namespace: str | None
    matches: Predicate
    bookmarks: bool
    deadline: float
    last_revision: int
    queue: asyncio.Queue[tuple[str, Obj]] = field(default_factory=asyncio.Queue)
    transport: asyncio.BaseTransport | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    final: Obj | None = None  # an ERROR status to send, then end (a test's expire_watches)

    def offer(self, event: Event) -> None:
        """Queues ``event`` as this watcher sees it (filtered by namespace and selectors)."""
        if event.resource != self.resource.group_resource:
            return
        if self.namespace and event.key[0] != self.namespace:
            return
        now = self.matches(event.obj)
        before = event.prev is not None and self.matches(event.prev)
        if event.type == "DELETED":
            kind = "DELETED" if before else None
        elif now and before:
            kind = "MODIFIED"
        elif now:
            kind = "ADDED"
        elif before:
            # Stopped matching: a DELETED with the old body, stamped with this event's revision.
            kind = "DELETED"
            prev = dict(event.prev or {})
            prev["metadata"] = {**(prev.get("metadata") or {}), "resourceVersion": str(event.revision)}
            self.queue.put_nowait((kind, prev))
            return
        else:
            kind = None
        if kind is not None:
            self.queue.put_nowait((kind, event.obj))

    def bookmark(self, revision: int) -> Obj:
        meta: Obj = {"resourceVersion": str(revision)}
        if self.resource.builtin:
            meta["creationTimestamp"] = None  # what an empty typed object serialises with
        return {
            "kind": self.resource.kind,
            "apiVersion": self.resource.api_version(self.version),
            "metadata": meta,
        }

    def encode(self, event_type: str, obj: Obj) -> bytes:
        if event_type not in ("ERROR", "BOOKMARK"):
            obj = {**obj, "kind": self.resource.kind, "apiVersion": self.resource.api_version(self.version)}
        return orjson.dumps({"type": event_type, "object": obj}) + b"\n"


def next_bookmark(now: float, deadline: float, interval: float) -> float:
    """The API server's schedule: every ``interval``, but no later than 2 s before the deadline."""
    at = min(now + interval, deadline - 2.0)
    return at if at > now else math.inf


class WatchHub:
    """Every open watch, fed by the storage, plus the knobs tests turn (hang, drop, expire, bookmark)."""

    def __init__(self, storage: Storage, *, bookmark_interval: float, default_timeout: float) -> None:
        self._storage = storage
        self.bookmark_interval = bookmark_interval
        self.default_timeout = default_timeout
        self.watchers: set[Watcher] = set()
        self.resumed = asyncio.Event()
        self.resumed.set()

    def offer(self, event: Event) -> None:
        for watcher in self.watchers:
            watcher.offer(event)

    def close(self, resource: ResourceDef | None = None) -> None:
        """Ends the watches of ``resource`` (all when None) cleanly."""
        for watcher in list(self.watchers):
            if resource is None or watcher.resource is resource:
                watcher.closed.set()

    def drop(self) -> int:
        watchers = list(self.watchers)
        for watcher in watchers:
            if isinstance(watcher.transport, asyncio.Transport):
                watcher.transport.abort()
            watcher.closed.set()
        return len(watchers)

    def expire(self, message: str) -> int:
        watchers = list(self.watchers)
        for watcher in watchers:
            watcher.final = st.status(410, "Expired", message)
            watcher.closed.set()
        return len(watchers)

    def bookmark_now(self) -> None:
        revision = self._storage.revision
        for watcher in self.watchers:
            if watcher.bookmarks and revision > watcher.last_revision:
                watcher.queue.put_nowait(("BOOKMARK", watcher.bookmark(revision)))

    async def serve(self, request: web.Request, target: Target, query: dict[str, str]) -> web.StreamResponse:
        if query.get("resourceVersionMatch"):
            raise invalid_list_options(
                "FieldValueForbidden", "resourceVersionMatch", "resourceVersionMatch is forbidden for watch"
            )
        rv = query.get("resourceVersion", "")
        requested = 0 if rv in ("", "0") else parse_rv(rv)
        matches = predicate(target.resource, query)
        timeout = float(int_param(query, "timeoutSeconds") or self.default_timeout)
        watcher = Watcher(
            resource=target.resource,
            version=target.version,
            namespace=target.namespace,
            matches=matches,
            bookmarks=query.get("allowWatchBookmarks") in ("true", "1"),
            deadline=asyncio.get_running_loop().time() + timeout,
            last_revision=requested,
            transport=request.transport,
        )
        # Nothing awaits between taking the starting state and registering: no event can slip between.
        error: Obj | None = None
        if requested == 0:
            state = self._storage.current(target.resource.group_resource)
            for key, obj in sorted(state.items()):
                if (target.namespace is None or key[0] == target.namespace) and matches(obj):
                    watcher.queue.put_nowait(("ADDED", obj))
            watcher.last_revision = self._storage.revision
        else:
            try:
                for event in self._storage.events_after(requested):
                    watcher.offer(event)
            except CompactedError:
                message = f"too old resource version: {requested} ({self._storage.compacted})"
                error = st.status(410, "Expired", message)
        if error is None:
            self.watchers.add(watcher)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            if error is not None:
                await response.write(watcher.encode("ERROR", error))
            else:
                await self._stream(watcher, response)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away, or a test cut the connection
        finally:
            self.watchers.discard(watcher)
        return response

    async def _stream(self, watcher: Watcher, response: web.StreamResponse) -> None:
        loop = asyncio.get_running_loop()
        bookmark_at = next_bookmark(loop.time(), watcher.deadline, self.bookmark_interval)
        held: tuple[str, Obj] | None = None  # taken off the queue just as the server started hanging
        while True:
            now = loop.time()
            if watcher.closed.is_set():
                if watcher.final is not None:
                    await response.write(watcher.encode("ERROR", watcher.final))
                    return
                if watcher.transport is not None and watcher.transport.is_closing():
                    raise ConnectionResetError
                return  # its resource went away or the server is stopping: end the stream
            if now >= watcher.deadline:
                return
            if not self.resumed.is_set():
                await _first_of(self.resumed, watcher.closed, timeout=watcher.deadline - now)
                continue
            if held is not None:
                event_type, obj = held
                held = None
            else:
                if now >= bookmark_at:
                    if watcher.bookmarks and self._storage.revision > watcher.last_revision:
                        watcher.queue.put_nowait(("BOOKMARK", watcher.bookmark(self._storage.revision)))
                    bookmark_at = next_bookmark(now, watcher.deadline, self.bookmark_interval)
                # Short waits, so the loop notices closing, hanging and the deadline in good time.
                wait = min(watcher.deadline, bookmark_at, now + 0.2) - now
                try:
                    event_type, obj = await asyncio.wait_for(watcher.queue.get(), timeout=max(wait, 0.0))
                except TimeoutError:
                    continue
                if not self.resumed.is_set():
                    held = (event_type, obj)
                    continue
            revision = int(obj["metadata"]["resourceVersion"])
            if event_type != "BOOKMARK" or revision > watcher.last_revision:
                await response.write(watcher.encode(event_type, obj))
                watcher.last_revision = max(watcher.last_revision, revision)


async def _first_of(*events: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
