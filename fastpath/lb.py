"""Load balancers: which host of a cluster gets the next request.

Each picker works on the cluster's current candidate list (healthy, not ejected) and is rebuilt when
that list changes. ``exclude`` lets a retry avoid the host that just failed (Envoy's previous_hosts
predicate) when another one exists.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Sequence
from typing import Protocol


class Weighted(Protocol):
    weight: int
    active_requests: int


class Picker(Protocol):
    def pick(self, exclude: object | None = None) -> Weighted | None: ...


class RoundRobin:
    """Plain rotation when weights are equal; smooth weighted round robin (nginx's) when not."""

    __slots__ = ("current", "hosts", "i", "total", "weighted")

    def __init__(self, hosts: Sequence[Weighted], start: int = 0) -> None:
        self.hosts = list(hosts)
        self.i = start % len(self.hosts) if self.hosts else 0
        self.weighted = len({h.weight for h in self.hosts}) > 1
        self.current = [0] * len(self.hosts)
        self.total = sum(h.weight for h in self.hosts)

    def pick(self, exclude: object | None = None) -> Weighted | None:
        hosts = self.hosts
        n = len(hosts)
        if n == 0:
            return None
        for _ in range(2 if exclude is not None and n > 1 else 1):
            if self.weighted:
                best = 0
                cur = self.current
                for j in range(n):
                    cur[j] += hosts[j].weight
                    if cur[j] > cur[best]:
                        best = j
                cur[best] -= self.total
                host = hosts[best]
            else:
                host = hosts[self.i]
                self.i = (self.i + 1) % n
            if host is not exclude:
                return host
        return host


class LeastRequest:
    """Power of two choices: of two random hosts, the one with fewer requests in flight per weight."""

    __slots__ = ("hosts", "rand")

    def __init__(self, hosts: Sequence[Weighted], rand: Callable[[int], int] | None = None) -> None:
        self.hosts = list(hosts)
        self.rand = rand or random.randrange

    def pick(self, exclude: object | None = None) -> Weighted | None:
        hosts = self.hosts
        n = len(hosts)
        if n == 0:
            return None
        if n == 1:
            return hosts[0]
        a = hosts[self.rand(n)]
        b = hosts[self.rand(n)]
        if a is exclude:
            a = b
        elif b is exclude:
            b = a
        # (active + 1) / weight, compared without division.
        if (b.active_requests + 1) * a.weight < (a.active_requests + 1) * b.weight:
            return b
        return a


class Random:
    """A random host, in proportion to the weights."""

    __slots__ = ("bounds", "hosts", "rand", "total")

    def __init__(self, hosts: Sequence[Weighted], rand: Callable[[int], int] | None = None) -> None:
        self.hosts = list(hosts)
        self.rand = rand or random.randrange
        bounds, running = [], 0
        for h in self.hosts:
            running += h.weight
            bounds.append(running)
        self.bounds = bounds
        self.total = running

    def pick(self, exclude: object | None = None) -> Weighted | None:
        if not self.hosts:
            return None
        for _ in range(2 if exclude is not None and len(self.hosts) > 1 else 1):
            host = self.hosts[bisect.bisect_right(self.bounds, self.rand(self.total))]
            if host is not exclude:
                return host
        return host


def make(policy: str, hosts: Sequence[Weighted], start: int = 0) -> Picker:
    if policy == "LEAST_REQUEST":
        return LeastRequest(hosts)
    if policy == "RANDOM":
        return Random(hosts)
    return RoundRobin(hosts, start)
