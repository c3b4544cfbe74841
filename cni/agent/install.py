"""Putting the plugin on the node: its executable in the CNI bin dir, its entry in the primary config.

The edits themselves are the pure functions of :mod:`cni.agent.conflist`; this
module reads and writes the files, always atomically (temp file in the same
directory, then ``os.replace``) so a runtime never reads half a file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cni.agent import conflist
from cni.agent.fsutil import atomic_write, dump_json, read_json, remove

BINARY_MODE = 0o755
DEFAULT_CONF_MODE = 0o644


class ConfigError(RuntimeError):
    """The node's CNI configuration cannot be edited safely; the message says why."""


@dataclass(frozen=True, slots=True)
class Primary:
    """The network config a runtime would load: the lexically first valid file."""

    path: Path
    conf: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ConfigResult:
    """Where our entry lives after a pass (None while there is no primary) and what was changed."""

    path: Path | None
    change: str | None = None


def _listdir(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def find_primary(conf_dir: Path) -> Primary | None:
    """The config the runtime uses: first by name, skipping files it would reject (as libcni does)."""
    for name in conflist.candidate_names(_listdir(conf_dir)):
        path = conf_dir / name
        if not path.is_file():
            continue
        conf = read_json(path)
        if conflist.is_valid(conf):
            return Primary(path, conf)
    return None


def _mode(path: Path, default: int = DEFAULT_CONF_MODE) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return default


def ensure_entry(conf_dir: Path, entry: Mapping[str, Any]) -> ConfigResult:
    """Make the primary config chain ``entry``; a no-op (no write) when it already does.

    A single-plugin ``.conf``/``.json`` becomes ``<stem>.conflist`` holding the
    original and our entry, and the single file is removed so the list is primary.
    """
    primary = find_primary(conf_dir)
    if primary is None:
        return ConfigResult(None)
    if conflist.is_list(primary.conf):
        if conflist.has_entry(primary.conf, entry):
            return ConfigResult(primary.path)
        change = "updated" if conflist.has_entry(primary.conf) else "inserted"
        # A writer that replaces the file between our read and this replace loses its
        # edit to ours; the next pass cannot tell. Primaries rewrite rarely (at their
        # own start), and this is the same window every chained installer has.
        new = conflist.with_entry(primary.conf, entry)
        atomic_write(primary.path, dump_json(new), _mode(primary.path))
        return ConfigResult(primary.path, change)

    name = primary.path.name
    target = conf_dir / conflist.converted_name(name)
    if target.exists():
        existing = read_json(target)
        if not (isinstance(existing, dict) and existing.get(conflist.CONVERTED_FROM) == name):
            raise ConfigError(f"cannot convert {name} to a conflist: {target.name} exists and is not ours")
    new = conflist.from_single(primary.conf, name, entry)
    # Write the list before removing the single file, so there is always a primary.
    atomic_write(target, dump_json(new), _mode(primary.path))
    remove(primary.path)
    return ConfigResult(target, f"converted {name}")


def remove_entries(conf_dir: Path) -> list[str]:
    """Take our entry out of every config in ``conf_dir``, restoring converted single configs."""
    changes: list[str] = []
    for name in conflist.candidate_names(_listdir(conf_dir)):
        path = conf_dir / name
        conf = read_json(path)
        if not isinstance(conf, dict):
            continue
        original = conflist.original_single(conf)
        if original is not None:
            orig_name, orig_conf = original
            orig_path = conf_dir / orig_name
            # If the primary has meanwhile written its .conf again, that newer file wins.
            if not orig_path.exists():
                atomic_write(orig_path, dump_json(orig_conf), _mode(path))
            remove(path)
            changes.append(f"restored {orig_name}")
        elif conflist.has_entry(conf):
            atomic_write(path, dump_json(conflist.without_entry(conf)), _mode(path))
            changes.append(f"removed entry from {name}")
    return changes


def _digest(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        return None
    return h.hexdigest()


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)


class BinaryInstaller:
    """Keeps a copy of the plugin executable in the CNI bin dir, byte-identical to ``source``."""

    def __init__(self, source: Path, bin_dir: Path) -> None:
        self.source = source
        self.dest = bin_dir / conflist.PLUGIN_TYPE
        self._want = _digest(source)
        if self._want is None:
            raise FileNotFoundError(f"plugin executable {source} does not exist")
        # stat of the destination when we last saw it correct: an unchanged stat means
        # unchanged content, which saves re-reading a large executable every interval.
        self._verified: tuple[int, int, int, int] | None = None

    def is_installed(self) -> bool:
        """Whether the destination holds our executable, executable by the runtime."""
        sig = _signature(self.dest)
        if sig is None:
            return False
        if sig == self._verified:
            return True
        ok = stat.S_IMODE(sig[3]) == BINARY_MODE and _digest(self.dest) == self._want
        self._verified = sig if ok else None
        return ok

    def ensure(self) -> bool:
        """Copy the executable when missing or different; True when it wrote."""
        if self.is_installed():
            return False
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dest, self.source.read_bytes(), BINARY_MODE)
        self._verified = _signature(self.dest)
        return True

    def remove(self) -> bool:
        """Delete the installed copy; True if it was there. Never deletes the source itself."""
        self._verified = None
        if self.dest.exists() and self.dest.resolve() == self.source.resolve():
            return False
        return remove(self.dest)
