"""Shared pieces of the benchmark suites."""

from __future__ import annotations

import os
import sys

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="the benchmarks need root (network namespaces, iptables)")
        for item in items:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each suite that defines ``bench_summary()`` prints its side-by-side table here."""
    for mod in list(sys.modules.values()):
        summary = getattr(mod, "bench_summary", None)
        if callable(summary) and getattr(mod, "__file__", "").startswith(os.path.dirname(__file__)):
            text = summary()
            if text:
                terminalreporter.write_sep("=", f"{mod.__name__.rsplit('.', 1)[-1]} summary")
                terminalreporter.write_line(text)
