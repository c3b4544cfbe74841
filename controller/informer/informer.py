"""The SharedInformer: one kind's Reflector, queue and Store, and the handlers that hear about changes.

Changes reach handlers as batches of net ``Delta``s (ADDED / UPDATED / DELETED, each with the old and new
object), after the Store already holds the new state, so a handler may read the Store and see a state at
least as new as the delta. Deletions found by a re-list (the object vanished while we were not watching)
carry the last state we knew, flagged ``final_state_unknown`` (client-go's DeletedFinalStateUnknown).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

from mizzen import logs

from .clock import REAL_CLOCK, Clock
from .listwatch import ListerWatcher
from .queue import Delta, DeltaQueue, DeltaType
from .reflector import Reflector, ReflectorOptions
from .store import IndexFunc, Store

log = logs.get("informer")

DeltaHandler = Callable[[Sequence[Delta]], None]

# Keys handed to handlers per batch: large enough for throughput, small enough to keep the loop responsive.
BATCH_LIMIT = 1000


class SharedInformer:
    """Lists and watches one kind into an indexed Store and fans changes out to handlers."""

    def __init__(
        self,
        name: str,
        lister_watcher: ListerWatcher,
        *,
        indexers: Mapping[str, IndexFunc] | None = None,
        clock: Clock = REAL_CLOCK,
        options: ReflectorOptions | None = None,
    ) -> None:
        self.name = name
        self.store = Store(indexers)
        self._queue = DeltaQueue(self.store)
        self.reflector = Reflector(name, lister_watcher, self._queue, clock=clock, options=options)
        self._handlers: list[DeltaHandler] = []
        self._tasks: list[asyncio.Task[None]] = []

    def add_handler(self, handler: DeltaHandler) -> None:
        """``handler`` gets every batch from now on; if the informer already holds objects, it first gets
        them as one batch of ADDED (so a late handler sees the same world as an early one)."""
        self._handlers.append(handler)
        existing = [Delta(DeltaType.ADDED, key, None, obj) for key, obj in self.store.items()]
        if existing:
            self._call(handler, existing)

    async def start(self) -> None:
        """Starts listing, watching and processing in background tasks; returns at once."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self.reflector.run(), name=f"reflector {self.name}"),
            asyncio.create_task(self._process_loop(), name=f"informer {self.name}"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def has_synced(self) -> bool:
        """True once the first full LIST has been processed: the Store holds the initial state."""
        return self._queue.has_synced()

    async def wait_synced(self) -> None:
        await self._queue.synced.wait()

    async def _process_loop(self) -> None:
        while True:
            await self._queue.pop(self._process, BATCH_LIMIT)
            await asyncio.sleep(0)  # let others run between batches during a large initial list

    def _process(self, deltas: list[Delta]) -> None:
        for delta in deltas:
            if delta.type is DeltaType.DELETED:
                self.store.delete(delta.key)
            else:
                assert delta.new is not None
                self.store.upsert(delta.key, delta.new)
        if deltas:
            for handler in list(self._handlers):
                self._call(handler, deltas)

    def _call(self, handler: DeltaHandler, deltas: Sequence[Delta]) -> None:
        try:
            handler(deltas)
        except Exception:
            # One handler's bug must not stop the informer or starve the other handlers.
            log.exception("informer handler failed", informer=self.name, handler=repr(handler))
