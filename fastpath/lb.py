"""Load balancers: which host of a cluster gets the next request.

Each picker works on the cluster's current candidate list (healthy, not ejected) and is rebuilt when
that list changes. ``exclude`` lets a retry avoid the host that just failed (Envoy's previous_hosts
predicate) when another one exists. ``pick_hash`` is for requests that carry a consistent-hash key: the
ring hash and Maglev pickers map equal keys to the same host; the others ignore the key.

Above the per-host pickers, two wrappers choose among groups: ``Prioritized`` spreads load over priority
levels by their health (Envoy's overprovisioning factor 1.4, so a level keeps all traffic until fewer than
~71% of its hosts are healthy), and ``LocalityWeighted`` picks a locality by weight, then a host in it.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from fastpath.hashing import hash64


class Weighted(Protocol):
    weight: int
    active_requests: int

    @property
    def label(self) -> str: ...


class Picker(Protocol):
    def pick(self, exclude: object | None = None) -> Weighted | None: ...

    def pick_hash(self, key: int, exclude: object | None = None) -> Weighted | None: ...


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

    def pick_hash(self, key: int, exclude: object | None = None) -> Weighted | None:
        return self.pick(exclude)


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

    def pick_hash(self, key: int, exclude: object | None = None) -> Weighted | None:
        return self.pick(exclude)


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

    def pick_hash(self, key: int, exclude: object | None = None) -> Weighted | None:
        return self.pick(exclude)


RING_MIN = 1024  # Envoy's minimum_ring_size default
RING_MAX = 8 * 1024 * 1024  # and maximum_ring_size
MAGLEV_TABLE = 65537  # Envoy's (and Istio's) default Maglev table size, a prime


class RingHash:
    """Ketama-style consistent hashing: each host owns points on a 64-bit ring in proportion to its
    weight; a key goes to the first point at or after its hash. Removing a host moves only its keys."""

    __slots__ = ("hashes", "hosts", "owners", "rand")

    def __init__(self, hosts: Sequence[Weighted], min_size: int = RING_MIN, max_size: int = RING_MAX) -> None:
        self.hosts = list(hosts)
        self.rand = random.getrandbits
        points: list[tuple[int, int]] = []
        if self.hosts:
            total = sum(h.weight for h in self.hosts)
            normalized = [h.weight / total for h in self.hosts]
            least = min(normalized)
            # As Envoy sizes it: enough points that the lightest host gets at least one per its share.
            scale = min(math.ceil(least * min_size) / least, float(max_size))
            current = 0.0
            for i, host in enumerate(self.hosts):
                target = current + scale * normalized[i]
                label = host.label.encode()
                n = 0
                while current < target:
                    points.append((hash64(b"%s_%d" % (label, n)), i))
                    n += 1
                    current += 1
            points.sort()
        self.hashes = [p[0] for p in points]
        self.owners = [p[1] for p in points]

    def pick(self, exclude: object | None = None) -> Weighted | None:
        return self.pick_hash(self.rand(64), exclude)

    def pick_hash(self, key: int, exclude: object | None = None) -> Weighted | None:
        hashes = self.hashes
        n = len(hashes)
        if n == 0:
            return None
        i = bisect.bisect_left(hashes, key)
        if i == n:
            i = 0
        host = self.hosts[self.owners[i]]
        if host is exclude and len(self.hosts) > 1:
            # A retry avoiding the host that failed: the next point owned by another host.
            for step in range(1, n):
                other = self.hosts[self.owners[(i + step) % n]]
                if other is not exclude:
                    return other
        return host


_maglev_cache: dict[tuple[Any, ...], list[int]] = {}


class Maglev:
    """Maglev consistent hashing: a lookup table of a prime size filled from each host's own permutation
    of its slots, turn by turn in proportion to the weights; a key goes to ``table[key % size]``."""

    __slots__ = ("hosts", "rand", "size", "table")

    def __init__(self, hosts: Sequence[Weighted], size: int = MAGLEV_TABLE) -> None:
        self.hosts = list(hosts)
        self.size = size
        self.rand = random.getrandbits
        self.table: list[int] = []
        if not self.hosts:
            return
        ident = (size, *((h.label, h.weight) for h in self.hosts))
        cached = _maglev_cache.get(ident)
        if cached is None:
            labels = [h.label.encode() for h in self.hosts]
            cached = _maglev_table(labels, [h.weight for h in self.hosts], size)
            if len(_maglev_cache) >= 16:
                _maglev_cache.clear()  # ejections flip between a few host sets: keep those, not all
            _maglev_cache[ident] = cached
        self.table = cached

    def pick(self, exclude: object | None = None) -> Weighted | None:
        return self.pick_hash(self.rand(64), exclude)

    def pick_hash(self, key: int, exclude: object | None = None) -> Weighted | None:
        if not self.table:
            return None
        slot = key % self.size
        host = self.hosts[self.table[slot]]
        if host is exclude and len(self.hosts) > 1:
            # The next slot owned by another host: a stable second choice for the same key.
            size = self.size
            for step in range(1, size):
                other = self.hosts[self.table[(slot + step) % size]]
                if other is not exclude:
                    return other
        return host


def _maglev_table(labels: list[bytes], weights: list[int], size: int) -> list[int]:
    n = len(labels)
    offsets = [hash64(label) % size for label in labels]
    skips = [hash64(b"skip:" + label) % (size - 1) + 1 for label in labels]
    top = max(weights)
    normalized = [w / top for w in weights]
    targets = list(normalized)
    nexts = [0] * n
    table = [-1] * size
    filled = 0
    iteration = 1
    while filled < size:
        for i in range(n):
            # A host fills a slot this turn only while it is behind its share (weighted Maglev).
            if iteration * normalized[i] < targets[i]:
                continue
            targets[i] += 1.0
            c = (offsets[i] + nexts[i] * skips[i]) % size
            while table[c] >= 0:
                nexts[i] += 1
                c = (offsets[i] + nexts[i] * skips[i]) % size
            table[c] = i
            nexts[i] += 1
            filled += 1
            if filled == size:
                break
        iteration += 1
    return table


class Prioritized:
    """Priority levels (locality failover): a level is chosen by its share of the load, then its picker."""

    __slots__ = ("bounds", "pickers", "rand")

    def __init__(self, levels: Sequence[tuple[int, Picker]]) -> None:
        self.pickers = [p for load, p in levels if load > 0]
        bounds, running = [], 0
        for load, _ in levels:
            if load > 0:
                running += load
                bounds.append(running)
        self.bounds = bounds
        self.rand = random.randrange

    def _level(self, n: int) -> Picker | None:
        if not self.pickers:
            return None
        return self.pickers[min(bisect.bisect_right(self.bounds, n % self.bounds[-1]), len(self.pickers) - 1)]

    def pick(self, exclude: object | None = None) -> Weighted | None:
        level = self._level(self.rand(self.bounds[-1])) if self.bounds else None
        return level.pick(exclude) if level is not None else None

    def pick_hash(self, key: int, exclude: object | None = None) -> Weighted | None:
        level = self._level(key) if self.bounds else None
        return level.pick_hash(key, exclude) if level is not None else None


class LocalityWeighted:
    """Localities by weight (Istio's ``distribute``), then a host of the chosen locality."""

    __slots__ = ("inner",)

    def __init__(self, groups: Sequence[tuple[int, Picker]]) -> None:
        self.inner = Prioritized(groups)  # the same choice: one group by its share, then its picker

    def pick(self, exclude: object | None = None) -> Weighted | None:
        return self.inner.pick(exclude)

    def pick_hash(self, key: int, exclude: object | None = None) -> Weighted | None:
        return self.inner.pick_hash(key, exclude)


def make(policy: str, hosts: Sequence[Weighted], start: int = 0, table_size: int = 0) -> Picker:
    """The picker for a cluster's lb_policy; ``table_size`` is the ring's minimum size or Maglev's table."""
    if policy == "LEAST_REQUEST":
        return LeastRequest(hosts)
    if policy == "RANDOM":
        return Random(hosts)
    if policy == "RING_HASH":
        return RingHash(hosts, table_size or RING_MIN)
    if policy == "MAGLEV":
        return Maglev(hosts, table_size or MAGLEV_TABLE)
    return RoundRobin(hosts, start)
