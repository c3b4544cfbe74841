"""Outlier detection on a driven clock, consistent-hash pickers, and priority / locality balancing, over the
compiled modules and their pure-Python twins."""

from __future__ import annotations

import math
from collections import Counter
from types import ModuleType
from typing import Any

import pytest
from support.impls import both

from fastpath.config.clusters import ClusterConfig, Endpoint, OutlierDetection

LB = both("fastpath.lb")
CLUSTERS = both("fastpath.clusters")


def ids(mods: list[ModuleType]) -> list[str]:
    return ["compiled" if str(m.__file__).endswith(".so") else "python" for m in mods]


@pytest.fixture(params=LB, ids=ids(LB))
def lb(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=CLUSTERS, ids=ids(CLUSTERS))
def cl(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cluster(cl: ModuleType, n: int, clock: Clock, **od: Any) -> Any:
    config = ClusterConfig(
        name="c",
        discovery="STATIC",
        outlier=OutlierDetection(**od),
        panic_threshold=0.0,
        endpoints=tuple(Endpoint(f"10.0.0.{i}", 80) for i in range(1, n + 1)),
    )
    c = cl.Cluster(config, config.endpoints)
    c.detector.clock = clock
    return c


def ejected(c: Any) -> set[str]:
    return {h.address for h in c.hosts.values() if h.ejected_until}


def host(c: Any, i: int) -> Any:
    return c.hosts[(f"10.0.0.{i}", 80)]


def test_consecutive_5xx_ejects_and_a_success_resets(cl: ModuleType) -> None:
    clock = Clock()
    c = cluster(cl, 4, clock, consecutive_5xx=3, max_ejection_percent=100)
    h = host(c, 1)
    c.report(h, 500)
    c.report(h, 503)
    c.report(h, 200)  # the run is broken
    c.report(h, 500)
    c.report(h, 500)
    assert ejected(c) == set()
    c.report(h, 502)
    assert ejected(c) == {"10.0.0.1"}
    assert all(c.pick() is not h for _ in range(50))


def test_gateway_errors_count_502_503_504_only(cl: ModuleType) -> None:
    clock = Clock()
    c = cluster(
        cl,
        4,
        clock,
        consecutive_5xx=100,
        consecutive_gateway_failure=2,
        enforcing_consecutive_gateway_failure=100,
        max_ejection_percent=100,
    )
    h = host(c, 2)
    c.report(h, 503)
    c.report(h, 500)  # a 5xx, but not a gateway error: the gateway run starts over
    c.report(h, 504)
    assert ejected(c) == set()
    c.report(h, 502)
    assert ejected(c) == {"10.0.0.2"}


def test_local_origin_failures_apart_when_split(cl: ModuleType) -> None:
    clock = Clock()
    c = cluster(
        cl,
        4,
        clock,
        consecutive_5xx=2,
        split_local_origin=True,
        consecutive_local_origin_failure=3,
        max_ejection_percent=100,
    )
    h = host(c, 3)
    c.report(h, 503, local_origin=True)
    c.report(h, 503, local_origin=True)
    assert ejected(c) == set()  # not counted as 5xx
    c.report(h, 503, local_origin=True)
    assert ejected(c) == {"10.0.0.3"}


def test_ejection_grows_with_each_ejection_and_intervals_forgive(cl: ModuleType) -> None:
    clock = Clock()
    c = cluster(
        cl, 4, clock, consecutive_5xx=1, interval=1.0, base_ejection_time=10.0, max_ejection_percent=100
    )
    h = host(c, 1)
    d = c.detector

    def out_for() -> float:
        """Tick once per interval until the host is back; how long it was out."""
        start = clock.now
        while h.ejected_until:
            clock.now += 1.0
            d.tick()
        return clock.now - start

    c.report(h, 500)
    assert out_for() == 10.0
    c.report(h, 500)  # straight back to failing: the second ejection lasts twice as long
    assert out_for() == 20.0
    # Healthy intervals forgive one ejection each (the first interval after coming back excepted).
    for _ in range(3):
        clock.now += 1.0
        d.tick()
    assert h.ejections == 0
    c.report(h, 500)
    assert out_for() == 10.0


def test_ejection_time_is_capped(cl: ModuleType) -> None:
    clock = Clock()
    c = cluster(
        cl,
        2,
        clock,
        consecutive_5xx=1,
        interval=1.0,
        base_ejection_time=10.0,
        max_ejection_time=25.0,
        max_ejection_percent=100,
    )
    h = host(c, 1)
    for expected in (10.0, 20.0, 25.0, 25.0):
        c.report(h, 500)
        assert h.ejected_until - clock.now == expected
        clock.now = h.ejected_until
        c.detector.tick()


def test_max_ejection_percent_but_always_one(cl: ModuleType) -> None:
    clock = Clock()
    c = cluster(cl, 3, clock, consecutive_5xx=1, max_ejection_percent=40)
    for i in (1, 2, 3):
        c.report(host(c, i), 500)
    assert len(ejected(c)) == 1  # 1 of 3 is 33% <= 40%; a second would be 66%
    small = cluster(cl, 3, clock, consecutive_5xx=1, max_ejection_percent=10)
    small.report(host(small, 1), 500)
    assert len(ejected(small)) == 1  # 33% > 10%, but one host may always go


def test_panic_threshold_balances_over_everyone_below_it(cl: ModuleType) -> None:
    clock = Clock()
    config = ClusterConfig(
        name="c",
        discovery="STATIC",
        outlier=OutlierDetection(consecutive_5xx=1, max_ejection_percent=100),
        panic_threshold=60.0,
        endpoints=tuple(Endpoint(f"10.0.0.{i}", 80) for i in range(1, 4)),
    )
    c = cl.Cluster(config, config.endpoints)
    c.detector.clock = clock
    c.report(host(c, 1), 500)
    assert {c.pick().address for _ in range(60)} == {"10.0.0.2", "10.0.0.3"}  # 66% healthy: no panic
    c.report(host(c, 2), 500)
    # 33% healthy is under 60%: Envoy's panic mode uses every host, ejected or not.
    assert {c.pick().address for _ in range(200)} == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}


class H:
    def __init__(self, name: str, weight: int = 1) -> None:
        self.label = name
        self.weight = weight
        self.active_requests = 0


@pytest.mark.parametrize("kind", ["RingHash", "Maglev"])
def test_hash_pickers_are_consistent_and_move_few_keys(lb: ModuleType, kind: str) -> None:
    hosts = [H(f"10.0.0.{i}:80") for i in range(5)]
    picker = getattr(lb, kind)(hosts)
    keys = [k * 0x9E3779B97F4A7C15 % (1 << 64) for k in range(2000)]
    first = {k: picker.pick_hash(k).label for k in keys}
    assert first == {k: picker.pick_hash(k).label for k in keys}  # the same key, the same host
    assert getattr(lb, kind)(list(hosts)).pick_hash(keys[7]).label == first[keys[7]]  # and across rebuilds
    spread = Counter(first.values())
    assert len(spread) == 5 and min(spread.values()) > 2000 / 5 / 3
    # One host leaves: only its keys move (ring hash and Maglev both promise that, Maglev nearly).
    fewer = getattr(lb, kind)(hosts[1:])
    moved = sum(1 for k in keys if first[k] != hosts[0].label and fewer.pick_hash(k).label != first[k])
    assert moved < len(keys) * 0.1


@pytest.mark.parametrize("kind", ["RingHash", "Maglev"])
def test_hash_pickers_follow_weights(lb: ModuleType, kind: str) -> None:
    hosts = [H("a", 3), H("b", 1)]
    picker = getattr(lb, kind)(hosts)
    n = 4000
    got = Counter(picker.pick_hash(k * 0x9E3779B97F4A7C15 % (1 << 64)).label for k in range(n))
    sd = math.sqrt(n * 0.75 * 0.25)
    assert abs(got["a"] - n * 0.75) < 6 * sd + n * 0.05  # the ring's granularity on top of sampling


def test_hash_pick_avoids_the_excluded_host(lb: ModuleType) -> None:
    hosts = [H("a"), H("b"), H("c")]
    for kind in ("RingHash", "Maglev"):
        picker = getattr(lb, kind)(hosts)
        for k in range(200):
            chosen = picker.pick_hash(k * 7919)
            assert picker.pick_hash(k * 7919, chosen) is not chosen


def test_priorities_spill_over_by_health(lb: ModuleType) -> None:
    p0 = [H("p0-a"), H("p0-b")]
    p1 = [H("p1-a")]
    picker = lb.Prioritized([(70, lb.RoundRobin(p0)), (30, lb.RoundRobin(p1))])
    n = 3000
    got = Counter(picker.pick().label.split("-")[0] for _ in range(n))
    sd = math.sqrt(n * 0.3 * 0.7)
    assert abs(got["p1"] - n * 0.3) < 6 * sd


def test_cluster_levels_from_endpoint_priorities(cl: ModuleType) -> None:
    clock = Clock()
    config = ClusterConfig(
        name="c",
        discovery="STATIC",
        outlier=OutlierDetection(consecutive_5xx=1, max_ejection_percent=100),
        panic_threshold=0.0,
        endpoints=(
            Endpoint("10.0.0.1", 80, priority=0),
            Endpoint("10.0.0.2", 80, priority=0),
            Endpoint("10.0.0.3", 80, priority=1),
        ),
    )
    c = cl.Cluster(config, config.endpoints)
    c.detector.clock = clock
    assert {c.pick().address for _ in range(100)} == {"10.0.0.1", "10.0.0.2"}  # P0 healthy: all of it
    c.report(host(c, 1), 500)
    # Half of P0 left: 1.4 x 50% = 70% stays on P0, 30% spills to P1.
    n = 3000
    got = Counter(c.pick().address for _ in range(n))
    sd = math.sqrt(n * 0.3 * 0.7)
    assert set(got) == {"10.0.0.2", "10.0.0.3"} and abs(got["10.0.0.3"] - n * 0.3) < 6 * sd


def test_locality_weights(cl: ModuleType) -> None:
    config = ClusterConfig(
        name="c",
        discovery="STATIC",
        locality_weighted=True,
        endpoints=(
            Endpoint("10.0.0.1", 80, locality="r/z1/", locality_weight=80),
            Endpoint("10.0.0.2", 80, locality="r/z2/", locality_weight=20),
            Endpoint("10.0.0.3", 80, locality="r/z2/", locality_weight=20),
        ),
    )
    c = cl.Cluster(config, config.endpoints)
    n = 3000
    got = Counter(c.pick().address for _ in range(n))
    sd = math.sqrt(n * 0.8 * 0.2)
    assert abs(got["10.0.0.1"] - n * 0.8) < 6 * sd
