"""A coroutine on a thread and event loop of its own: the sidecar's gRPC clients (xDS, certificates) run
so, so that protobuf work never sits inside a data-path callback and grpcio's poller never shares the
proxy's uvloop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any


class LoopThread:
    def __init__(self, name: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.name = name
        self.main = main
        self.loop: asyncio.AbstractEventLoop | None = None  # set once the thread runs
        self.stopping = False
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, name=self.name, daemon=True)
        self._thread.start()

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        self._task = loop.create_task(self.main())
        try:
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def stop(self, timeout: float = 5.0) -> None:
        """Cancel the coroutine and wait (at most ``timeout``) for the thread to end."""
        self.stopping = True
        loop, task = self.loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, timeout)
