"""structlog set up once for every entry point.

JSON lines when not on a terminal (containers, CNI plugin logs), a readable
console format on a terminal. Log output always goes to stderr or a file, never
stdout: the CNI plugin's stdout belongs to the CNI protocol.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, Any, TextIO, cast

import structlog

_configured = False


class _Stderr:
    """Whatever ``sys.stderr`` is at the time of each write: a logger configured once keeps working when
    the stream is replaced later (pytest's capture, a daemon reopening its stderr)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def setup(level: str | None = None, *, stream: IO[str] | None = None, json: bool | None = None) -> None:
    """Configure structlog and the stdlib root logger; later calls only change the level."""
    global _configured
    level_name = (level or os.environ.get("MIZZEN_LOG_LEVEL") or "info").upper()
    numeric = logging.getLevelName(level_name)
    if not isinstance(numeric, int):
        numeric = logging.INFO
    out: Any = stream or _Stderr()
    if json is None:
        fmt = os.environ.get("MIZZEN_LOG_FORMAT")
        json = fmt == "json" if fmt else not out.isatty()

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, out)),
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (aiohttp, asyncio) land on the same stream.
    root = logging.getLogger()
    if not _configured:
        handler = logging.StreamHandler(out)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(numeric)
    # The HTTP/2 libraries log every frame and header at DEBUG: far too much, even when debugging us.
    for noisy in ("hpack", "h2"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.INFO))
    _configured = True


def get(name: str | None = None, **bound: Any) -> Any:
    """A lazily bound structlog logger; ``name`` becomes the ``component`` key."""
    if name:
        bound["component"] = name
    # Lazy: the logger is created on first use, so module-level loggers honour a later setup().
    return structlog.get_logger(**bound)
