"""Debounce: collect config changes until the source is quiet for ``after`` seconds, but never hold them
longer than ``max_wait`` since the first one (istiod's PILOT_DEBOUNCE_AFTER / PILOT_DEBOUNCE_MAX)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mizzen import logs

log = logs.get("xds.debounce")

Flush = Callable[[list[Any], float], Awaitable[None]]


class Debouncer:
    def __init__(self, flush: Flush, *, after: float = 0.1, max_wait: float = 10.0) -> None:
        self.after = after
        self.max_wait = max_wait
        self._flush = flush
        self._pending: list[Any] = []
        self._first = 0.0
        self._last = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, batch: Sequence[Any]) -> None:
        """Queue a batch of changes (called on the event loop)."""
        if not batch:
            return
        now = time.monotonic()
        if not self._pending:
            self._first = now
        self._pending.extend(batch)
        self._last = now
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="debounce")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                now = time.monotonic()
                wait = min(self._last + self.after, self._first + self.max_wait) - now
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                batch, first = self._pending, self._first
                self._pending = []
                try:
                    await self._flush(batch, first)
                except Exception:  # one bad flush must not stop every later push
                    log.exception("push failed", changes=len(batch))
