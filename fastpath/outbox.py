"""Writes made while one read is handled, sent together when it is done: one syscall per socket.

A response head and the body that came in the same read, or a request head and its body, would
otherwise be two writes (two syscalls, two TCP segments with TCP_NODELAY). Outside a read handler
(timers, connect completions) writes go straight out.
"""

from __future__ import annotations

from typing import Any


class Outbox:
    __slots__ = ("active", "dirty")

    def __init__(self) -> None:
        self.active = False
        self.dirty: list[Any] = []  # connections holding unsent writes

    def begin(self) -> bool:
        """Start batching; False if a batch is already open (the caller must not end it)."""
        if self.active:
            return False
        self.active = True
        return True

    def end(self) -> None:
        self.active = False
        dirty = self.dirty
        if dirty:
            for conn in dirty:
                conn.flush()  # straight to the socket: the batch is closed, nothing is added here now
            dirty.clear()


OUTBOX = Outbox()
