"""The Reflector's error classification and backoff, and how error answers become ApiErrors."""

from __future__ import annotations

import random

import pytest
from support.kubeapi import status
from support.kubeapi.clock import FakeClock

from controller.informer import policy
from controller.informer.kubeclient import api_error
from controller.informer.listwatch import ApiError, StreamInterrupted, TransportError


def error(status_error: status.StatusError) -> ApiError:
    return ApiError.from_status(status_error.status)


def test_expired_covers_both_410_reasons() -> None:
    assert policy.is_expired(error(status.expired("too old resource version: 1 (2)")))
    gone = ApiError.synthetic(410, "Gone", "gone")
    assert policy.is_expired(gone) and policy.needs_consistent_list(gone)
    assert not policy.is_expired(error(status.too_many_requests(1)))


def test_too_large_resource_version_by_cause_or_by_message() -> None:
    assert policy.is_too_large_resource_version(error(status.too_large_resource_version(10, 5)))
    old_server = ApiError.synthetic(504, "Timeout", "Timeout: Too large resource version: 10, current: 5")
    assert policy.is_too_large_resource_version(old_server)
    assert not policy.is_too_large_resource_version(ApiError.synthetic(504, "Timeout", "etcd slow"))


def test_connection_problems_and_retry_after() -> None:
    assert policy.is_connection_problem(TransportError("refused"))
    assert policy.is_connection_problem(StreamInterrupted("reset"))
    assert not policy.is_connection_problem(error(status.expired("x")))
    throttled = error(status.too_many_requests(5))
    assert policy.is_too_many_requests(throttled) and policy.retry_after(throttled) == 5.0


def test_api_error_from_an_answer() -> None:
    body = (
        b'{"kind":"Status","apiVersion":"v1","status":"Failure","message":"slow down",'
        b'"reason":"TooManyRequests","code":429}'
    )
    parsed = api_error(429, "Too Many Requests", "3", body)
    assert (parsed.code, parsed.reason, parsed.message, parsed.retry_after) == (
        429,
        "TooManyRequests",
        "slow down",
        3.0,
    )
    proxy = api_error(503, "Service Unavailable", None, b"<html>upstream connect error</html>")
    assert (proxy.code, proxy.reason) == (503, "ServiceUnavailable") and "upstream" in proxy.message
    assert str(proxy).startswith("503 ServiceUnavailable: ")


async def test_backoff_doubles_caps_jitters_and_resets() -> None:
    clock = FakeClock()
    backoff = policy.Backoff(clock, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    bases = [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]
    for delay, base in zip(delays, bases, strict=True):
        assert base <= delay <= 2 * base
    clock.now += 121  # quiet for longer than reset_after
    assert backoff.next_delay() <= 1.6
    assert await backoff.wait(at_least=9) >= 9 and clock.sleeps[-1] >= 9


@pytest.mark.parametrize("seed", range(5))
def test_watch_timeouts_are_spread_over_five_to_ten_minutes(seed: int) -> None:
    values = {policy.watch_timeout_seconds(random.Random(seed * 100 + i)) for i in range(50)}
    assert min(values) >= 300 and max(values) <= 600 and len(values) > 10
