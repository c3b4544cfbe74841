"""Debounce: a burst becomes one flush; the max wait bounds how long a steady stream is held."""

from __future__ import annotations

import asyncio
from typing import Any

from controller.xds.debounce import Debouncer


async def test_burst_is_flushed_once_with_every_change() -> None:
    flushed: list[list[Any]] = []
    done = asyncio.Event()

    async def flush(batch: list[Any], first_seen: float) -> None:
        flushed.append(batch)
        done.set()

    debouncer = Debouncer(flush, after=0.05, max_wait=10.0)
    debouncer.start()
    for i in range(100):
        debouncer.add([i])
    await asyncio.wait_for(done.wait(), 10)
    await debouncer.stop()
    assert flushed == [list(range(100))]


async def test_steady_stream_is_flushed_by_the_max_wait() -> None:
    flushed: list[list[Any]] = []

    async def flush(batch: list[Any], first_seen: float) -> None:
        flushed.append(batch)

    # Quiet period never reached (a change every 10 ms, quiet 1 s): only max_wait (0.1 s) can flush.
    debouncer = Debouncer(flush, after=1.0, max_wait=0.1)
    debouncer.start()
    i = 0
    while not flushed and i < 1000:
        debouncer.add([i])
        i += 1
        await asyncio.sleep(0.01)
    await debouncer.stop()
    assert flushed, "max_wait never flushed a steady stream"
    assert flushed[0] == list(range(len(flushed[0])))


async def test_a_failing_flush_does_not_stop_later_ones() -> None:
    calls: list[int] = []
    second = asyncio.Event()

    async def flush(batch: list[Any], first_seen: float) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("translation bug")
        second.set()

    debouncer = Debouncer(flush, after=0.01, max_wait=1.0)
    debouncer.start()
    debouncer.add([1])
    while not calls:
        await asyncio.sleep(0.01)
    debouncer.add([2, 3])
    await asyncio.wait_for(second.wait(), 10)
    await debouncer.stop()
    assert calls == [1, 2]
