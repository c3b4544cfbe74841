"""Shared pieces of the benchmark suites."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="the benchmarks need root (network namespaces, iptables)")
        for item in items:
            item.add_marker(skip)
