"""The node's CNI_PATH: a directory of links to the system plugins and to ours.

A runtime searches CNI_PATH for each plugin ``type``. Building our own directory
keeps the system's ``/usr/lib/cni`` untouched and lets a test or a packaged
build point ``mizzen-cni`` at whichever executable it wants (the console script
next to the running Python, or a PyInstaller binary).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from mizzen.local.conflist import CAPTURE_PLUGIN

SYSTEM_CNI_DIR = Path("/usr/lib/cni")


class PluginNotFound(RuntimeError):
    """The capture plugin executable could not be located."""


def find_capture_plugin(explicit: Path | None = None) -> Path:
    """``mizzen-cni``: the given path, else next to ``sys.executable`` (the venv), else on PATH."""
    if explicit is not None:
        if not (explicit.is_file() and os.access(explicit, os.X_OK)):
            raise PluginNotFound(f"{explicit} is not an executable file")
        return explicit.absolute()
    # Not resolved: in a venv, sys.executable is a link and the scripts live beside the link.
    beside = Path(sys.executable).parent / CAPTURE_PLUGIN
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(CAPTURE_PLUGIN)
    if found:
        return Path(found)
    raise PluginNotFound(
        f"cannot find {CAPTURE_PLUGIN} next to {sys.executable} or on PATH; pass its path explicitly"
    )


def _link(target: Path, link: Path) -> None:
    """Point ``link`` at ``target``, replacing whatever was there."""
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def populate(bin_dir: Path, system_dir: Path = SYSTEM_CNI_DIR, capture_plugin: Path | None = None) -> None:
    """Fill ``bin_dir`` with links to every system plugin, plus ``mizzen-cni`` when given."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, Path] = {}
    if system_dir.is_dir():
        wanted.update({p.name: p for p in system_dir.iterdir() if p.is_file()})
    if capture_plugin is not None:
        wanted[CAPTURE_PLUGIN] = capture_plugin
    for name, target in wanted.items():
        _link(target, bin_dir / name)
    # A plugin removed from the chain (capture turned off) must not linger.
    for stale in bin_dir.iterdir():
        if stale.name not in wanted:
            stale.unlink()
