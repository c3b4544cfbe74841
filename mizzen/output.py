"""Printing for the CLI: aligned tables on a terminal, or the same data as JSON or YAML (``-o``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

import yaml

FORMATS = ("text", "json", "yaml")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], out: TextIO) -> None:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
        )


def data(value: Any, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    else:
        out.write(yaml.safe_dump(value, sort_keys=True, width=120))
