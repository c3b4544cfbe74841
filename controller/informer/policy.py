"""What the Reflector does when something goes wrong, in one place.

Errors are classified by named predicates (client-go's ``isExpiredError``,
``isTooLargeResourceVersionError``...) instead of status checks scattered through the code, and the
waits between attempts come from one ``Backoff`` (exponential, jittered, reset after a quiet spell).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .clock import Clock
from .listwatch import ApiError, StreamInterrupted, TransportError

# Watches are ended by the server after a random 5-10 minutes, so that a fleet of clients restarted
# together does not re-watch (and after a 410, re-list) in lock step.
WATCH_TIMEOUT_RANGE = (300, 600)


def watch_timeout_seconds(rng: random.Random | None = None) -> int:
    low, high = WATCH_TIMEOUT_RANGE
    return (rng or random).randint(low, high)


def is_expired(error: BaseException) -> bool:
    """410: the resourceVersion (or continue token) we asked for is older than the server keeps.

    Both reasons occur: "Expired" from the watch cache and paged lists, "Gone" from older servers.
    """
    return isinstance(error, ApiError) and error.code == 410


def is_too_large_resource_version(error: BaseException) -> bool:
    """504 "Too large resource version": the server (a lagging replica) has not reached our version."""
    if not isinstance(error, ApiError) or error.code != 504:
        return False
    if any(cause.get("reason") == "ResourceVersionTooLarge" for cause in error.causes):
        return True
    return "Too large resource version" in error.message  # servers before 1.17 sent no cause


def is_too_many_requests(error: BaseException) -> bool:
    """429: API priority and fairness (or a proxy) asks us to come back later."""
    return isinstance(error, ApiError) and error.code == 429


def needs_consistent_list(error: BaseException) -> bool:
    """The resourceVersion we hold cannot be served: list again from scratch (resourceVersion "")."""
    return is_expired(error) or is_too_large_resource_version(error)


def is_connection_problem(error: BaseException) -> bool:
    """The server was not reached or the stream broke; nothing says our resourceVersion is bad."""
    return isinstance(error, TransportError | StreamInterrupted)


def retry_after(error: BaseException) -> float | None:
    """The server's Retry-After (header or ``details.retryAfterSeconds``), if it gave one."""
    return error.retry_after if isinstance(error, ApiError) else None


@dataclass
class Backoff:
    """Exponential backoff with jitter (client-go's reflector defaults): 0.8 s doubling up to 30 s, each
    wait stretched by up to ``jitter`` of itself, back to the start after ``reset_after`` quiet seconds."""

    clock: Clock
    initial: float = 0.8
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 1.0
    reset_after: float = 120.0
    rng: random.Random = field(default_factory=random.Random)
    _current: float = 0.0
    _last: float | None = None

    def next_delay(self) -> float:
        """The wait before the next attempt (and the one after that grows)."""
        now = self.clock.monotonic()
        if self._last is not None and now - self._last >= self.reset_after:
            self._current = 0.0
        self._last = now
        base = self.initial if self._current == 0.0 else min(self._current * self.factor, self.maximum)
        self._current = base
        return base * (1.0 + self.jitter * self.rng.random())

    def reset(self) -> None:
        self._current = 0.0
        self._last = None

    async def wait(self, at_least: float | None = None) -> float:
        """Sleeps for the next delay, or for ``at_least`` (a Retry-After) if that is longer."""
        delay = max(self.next_delay(), at_least or 0.0)
        await self.clock.sleep(delay)
        return delay
