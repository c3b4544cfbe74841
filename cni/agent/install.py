"""Putting the plugin on the node: its executable in the CNI bin dir, its entry in the primary config.

The edits themselves are the pure functions of :mod:`cni.agent.conflist`; this
module reads and writes the files, always atomically (temp file in the same
directory, then ``os.replace``) so a runtime never reads half a file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
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


DATA_DIR = f"{conflist.PLUGIN_TYPE}.d"
TREE_MARK = ".mizzen-tree-digest"


def _tree_digest(root: Path) -> str:
    """A digest of a directory's names, modes, links and contents (computed once, at start-up)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if rel == TREE_MARK:
                continue
            st = path.lstat()
            h.update(f"{rel}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(path).encode())
            else:
                h.update(_digest(path).encode())  # type: ignore[union-attr]
    return h.hexdigest()


class _DataDirInstaller:
    """Keeps the bundle's ``mizzen-cni.d`` (interpreter, libraries, code) beside the launcher.

    Verified each pass by a digest written into the installed copy, not by re-reading 40 MB;
    replaced as a whole: copied to a temporary sibling, then swapped in by renames.
    """

    def __init__(self, source: Path, dest: Path) -> None:
        self.source = source
        self.dest = dest
        self.digest = _tree_digest(source)

    def is_installed(self) -> bool:
        try:
            return (self.dest / TREE_MARK).read_text() == self.digest
        except OSError:
            return False

    def ensure(self) -> bool:
        if self.is_installed():
            return False
        staging = self.dest.with_name(f".{self.dest.name}.new")
        retired = self.dest.with_name(f".{self.dest.name}.old")
        for leftover in (staging, retired):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.copytree(self.source, staging, symlinks=True)
        (staging / TREE_MARK).write_text(self.digest)
        if self.dest.exists():
            os.replace(self.dest, retired)
        os.replace(staging, self.dest)
        shutil.rmtree(retired, ignore_errors=True)
        return True

    def remove(self) -> bool:
        if not self.dest.exists() or self.dest.resolve() == self.source.resolve():
            return False
        shutil.rmtree(self.dest)
        return True


class BinaryInstaller:
    """Keeps a copy of the plugin executable in the CNI bin dir, byte-identical to ``source``.

    When ``source`` is the launcher of a self-contained bundle (:mod:`cni.bundle`), its
    ``mizzen-cni.d`` directory is kept beside the copy too, and installed before it, so a
    runtime never runs a new launcher against a missing interpreter.
    """

    def __init__(self, source: Path, bin_dir: Path) -> None:
        self.source = source
        self.dest = bin_dir / conflist.PLUGIN_TYPE
        self._want = _digest(source)
        if self._want is None:
            raise FileNotFoundError(f"plugin executable {source} does not exist")
        data = source.parent / DATA_DIR
        self.data = _DataDirInstaller(data, bin_dir / DATA_DIR) if data.is_dir() else None
        # stat of the destination when we last saw it correct: an unchanged stat means
        # unchanged content, which saves re-reading a large executable every interval.
        self._verified: tuple[int, int, int, int] | None = None

    def is_installed(self) -> bool:
        """Whether the destination holds our executable (and bundle), executable by the runtime."""
        if self.data is not None and not self.data.is_installed():
            return False
        sig = _signature(self.dest)
        if sig is None:
            return False
        if sig == self._verified:
            return True
        ok = stat.S_IMODE(sig[3]) == BINARY_MODE and _digest(self.dest) == self._want
        self._verified = sig if ok else None
        return ok

    def ensure(self) -> bool:
        """Copy the executable (and bundle) when missing or different; True when it wrote."""
        if self.is_installed():
            return False
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        if self.data is not None:
            self.data.ensure()
        if _digest(self.dest) != self._want or _signature(self.dest) is None:
            atomic_write(self.dest, self.source.read_bytes(), BINARY_MODE)
        else:
            os.chmod(self.dest, BINARY_MODE)
        self._verified = _signature(self.dest)
        return True

    def remove(self) -> bool:
        """Delete the installed copy; True if it was there. Never deletes the source itself."""
        self._verified = None
        if self.dest.exists() and self.dest.resolve() == self.source.resolve():
            return False
        removed = remove(self.dest)
        if self.data is not None:
            removed = self.data.remove() or removed
        return removed
