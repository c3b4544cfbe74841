"""Time for the informer: the event loop's monotonic clock in production, a controllable one in tests.

Backoff, Retry-After and watch durations all go through a ``Clock`` so that tests can check the exact
waits (kopf's lesson: timing behaviour is tested with a clock the test drives, not with sleeps).
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running event loop's clock."""

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


REAL_CLOCK = LoopClock()
