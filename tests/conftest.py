"""Shared fixtures: root detection and throwaway network namespaces that never outlive a test."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

IS_ROOT = os.geteuid() == 0
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_ROOT:
        return
    if IN_CI:
        raise pytest.UsageError("CI runs as root: tests marked 'root' must run, not be skipped")
    skip = pytest.mark.skip(reason="needs root for network namespaces and iptables (CI runs it)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI every dependency is installed by the test command, so a skip can only hide a gap: fail it."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped in CI, where nothing may be skipped: {reason}"


@pytest.fixture(scope="session", autouse=True)
def _no_proxy_outlives_the_session() -> Iterator[None]:
    """The last teardown: a proxy process a failing fixture started and never stopped is stopped here,
    and named, so that a run leaves no process behind whatever failed."""
    yield
    from support.proxyproc import ProxyProcess

    left = ProxyProcess.stop_all()
    if left:
        print("\nproxies left running by their tests (now stopped):", *left, sep="\n  ")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def netns_path() -> Iterator[str]:
    """A bare, empty network namespace (lo up); deleted after the test, whatever happens."""
    name = f"mzt-{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        yield f"/var/run/netns/{name}"
    finally:
        _ip("netns", "del", name, check=False)


@pytest.fixture
def golden_dir() -> Path:
    return Path(__file__).parent / "golden"
