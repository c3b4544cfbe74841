"""Small file primitives the agent needs on a node's shared directories."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

# Temporary files never end in an extension a runtime reads, so a half-written
# file is never taken for a network config or a plugin.
TMP_PREFIX = ".mizzen-"
TMP_SUFFIX = ".tmp"


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` in one step: readers see the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX + path.name + ".", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600; set the final mode before the file becomes visible.
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_bytes(path: Path) -> bytes | None:
    """The file's content, or None if it does not exist."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_json(path: Path) -> Any:
    """Parsed JSON; None if missing or not JSON (say, caught mid-write by a non-atomic writer)."""
    raw = read_bytes(path)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def dump_json(obj: Any) -> bytes:
    """JSON the way people read CNI configs: indented, key order kept, trailing newline."""
    return (json.dumps(obj, indent=2) + "\n").encode()


def remove(path: Path) -> bool:
    """Delete ``path``; True if it was there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
