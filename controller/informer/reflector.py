"""The Reflector: keeps a DeltaQueue in step with one kind on the API server by listing, then watching.

Its life is a loop of LIST then WATCH (client-go's ``ListAndWatch``):

- LIST, paged. The first list asks for resourceVersion "0" (any state the server's cache holds: cheap for
  the server; the cache ignores ``limit``, so one page). After a failure that says our resourceVersion
  cannot be served (410 Expired, "too large resource version"), the next list is a consistent one
  (resourceVersion "", paged with ``limit``/``continue``); otherwise a re-list asks for data not older than
  the last resourceVersion we synced. A continue token that expires mid-list falls back to one unpaged list.
- WATCH from the list's resourceVersion with bookmarks on and a random 5-10 minute ``timeoutSeconds``.
  A normal end of stream, or a broken or silent connection (the read timeout), re-watches from the last
  resourceVersion seen: nothing is lost, nothing is listed again. An ERROR event or an error answer is
  classified in ``policy``: expired → re-list, 429 → wait as long as the server asks, others → backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from mizzen import logs

from . import policy
from .clock import REAL_CLOCK, Clock
from .listwatch import (
    BOOKMARK,
    DELETED,
    ERROR,
    ApiError,
    ListerWatcher,
    ListOptions,
    Obj,
    WatchOptions,
)
from .queue import DeltaQueue

log = logs.get("reflector")

# A watch that ends sooner than this was not a healthy watch: the next one waits out a backoff.
MIN_HEALTHY_WATCH = 1.0


@dataclass(frozen=True, slots=True)
class ReflectorOptions:
    """Tunables; the defaults are what a production controller wants."""

    page_size: int = 500
    watch_timeout: Callable[[], int] = policy.watch_timeout_seconds
    backoff_initial: float = 0.8
    backoff_max: float = 30.0


class Reflector:
    """Lists and watches one ``ListerWatcher`` into a ``DeltaQueue`` until cancelled."""

    def __init__(
        self,
        name: str,
        lister_watcher: ListerWatcher,
        queue: DeltaQueue,
        *,
        clock: Clock = REAL_CLOCK,
        options: ReflectorOptions | None = None,
    ) -> None:
        self.name = name
        self._lw = lister_watcher
        self._queue = queue
        self._clock = clock
        self._options = options or ReflectorOptions()
        self._backoff = policy.Backoff(
            clock, initial=self._options.backoff_initial, maximum=self._options.backoff_max
        )
        self.last_sync_resource_version = ""
        # Set when the server said it cannot serve last_sync_resource_version: the next list is consistent.
        self._resource_version_unavailable = False
        self.lists = 0  # completed LISTs, for tests and metrics
        self.watches = 0  # WATCH requests started
        self.bookmarks = 0  # BOOKMARK events seen
        self._watch_events = 0

    async def run(self) -> None:
        """LIST and WATCH forever; returns only by cancellation."""
        while True:
            try:
                await self._list()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._after_failure("list", exc)
                continue
            await self._watch_until_relist()

    # LIST.

    def _relist_resource_version(self) -> str:
        if self._resource_version_unavailable:
            return ""  # consistent read from storage
        if not self.last_sync_resource_version:
            return "0"  # any cached state will do for a first list
        return self.last_sync_resource_version

    async def _list(self) -> None:
        resource_version = self._relist_resource_version()
        items, list_rv = await self._list_pages(resource_version)
        self._queue.replace(items)
        self.last_sync_resource_version = list_rv
        self._resource_version_unavailable = False
        self.lists += 1
        log.debug("listed", informer=self.name, items=len(items), resource_version=list_rv)

    async def _list_pages(self, resource_version: str) -> tuple[list[Obj], str]:
        if resource_version not in ("", "0"):
            # "Not older than" a version we saw: unpaged, so the server may answer from its watch cache
            # (a limit would turn it into an exact read from storage).
            page = await self._lw.list(ListOptions(resource_version, "NotOlderThan"))
            return page.items, page.resource_version
        limit = self._options.page_size
        page = await self._lw.list(ListOptions(resource_version, limit=limit))
        items = list(page.items)
        list_rv = page.resource_version
        token = page.continue_token
        while token:
            try:
                page = await self._lw.list(ListOptions(limit=limit, continue_token=token))
            except ApiError as exc:
                if not policy.is_expired(exc):
                    raise
                # The snapshot behind the token was compacted while we paged: one unpaged list instead.
                log.info("continue token expired mid-list; listing unpaged", informer=self.name)
                page = await self._lw.list(ListOptions(resource_version))
                return list(page.items), page.resource_version
            items.extend(page.items)
            token = page.continue_token
        return items, list_rv

    # WATCH.

    async def _watch_until_relist(self) -> None:
        """Watches, re-watching after normal ends and broken streams; returns when a re-list is needed."""
        while True:
            started = self._clock.monotonic()
            self._watch_events = 0
            try:
                await self._watch_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if policy.is_connection_problem(exc):
                    log.info(
                        "watch stream broke; watching again",
                        informer=self.name,
                        resource_version=self.last_sync_resource_version,
                        error=str(exc) or type(exc).__name__,
                    )
                    await self._pause_between_watches(started)
                    continue
                await self._after_failure("watch", exc)
                if policy.is_too_many_requests(exc):
                    continue  # throttled, but our resourceVersion is still good
                return
            # The server ended the stream (its timeoutSeconds): carry on from where we are.
            await self._pause_between_watches(started)

    async def _pause_between_watches(self, started: float) -> None:
        """Nothing between healthy watches; a backoff after one that ended at once without any event."""
        if self._watch_events or self._clock.monotonic() - started >= MIN_HEALTHY_WATCH:
            self._backoff.reset()
        else:
            await self._backoff.wait()

    async def _watch_once(self) -> None:
        """One WATCH request, until the server ends it."""
        options = WatchOptions(
            resource_version=self.last_sync_resource_version,
            timeout_seconds=self._options.watch_timeout(),
            allow_bookmarks=True,
        )
        self.watches += 1
        events = self._lw.watch(options)
        try:
            async for event in events:
                if event.type == ERROR:
                    raise ApiError.from_status(event.object)
                self._watch_events += 1
                rv = (event.object.get("metadata") or {}).get("resourceVersion")
                if event.type == BOOKMARK:
                    self.bookmarks += 1  # its only news is the resourceVersion
                elif event.type == DELETED:
                    self._queue.delete(event.object)
                else:
                    self._queue.update(event.object)
                if rv:
                    self.last_sync_resource_version = rv
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()  # closes the connection now, not whenever the generator is collected

    # Failures.

    async def _after_failure(self, during: str, exc: Exception) -> None:
        """Logs ``exc``, marks our resourceVersion unusable if the server said so, and waits."""
        if policy.needs_consistent_list(exc):
            self._resource_version_unavailable = during == "list" or policy.is_too_large_resource_version(exc)
            log.info(
                "resourceVersion no longer served; listing again",
                informer=self.name,
                during=during,
                resource_version=self.last_sync_resource_version,
                error=str(exc),
            )
            if during == "watch":
                return  # a watch 410 is routine (compaction): re-list at once
        elif policy.is_too_many_requests(exc):
            log.info("throttled by the API server", informer=self.name, during=during, error=str(exc))
        else:
            log.warning("request failed; retrying", informer=self.name, during=during, error=str(exc))
        await self._backoff.wait(at_least=policy.retry_after(exc))
