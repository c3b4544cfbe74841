"""A clock the test drives, for the informer's backoff and Retry-After waits."""

from __future__ import annotations

import asyncio


class FakeClock:
    """Sleeps return at once (after yielding to the loop) and move the clock; every wait is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0.001)  # a real (tiny) pause, so a retry loop cannot starve the event loop
