"""Running a command inside a network namespace given by its path.

Runtimes hand plugins a path (``/var/run/netns/cni-…`` or ``/proc/PID/ns/net``),
not a name, so ``ip netns exec`` does not fit. The child joins the namespace
with setns(2) between fork and exec; the caller never changes namespace, which
keeps this safe for the long-running node agent too.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Sequence

CLONE_NEWNET = 0x40000000

_libc: ctypes.CDLL | None = None


def _setns(path: str) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)  # the libc already mapped into this process
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsError(RuntimeError):
    """The namespace path does not exist or cannot be entered."""


def check_path(path: str) -> None:
    """Fail early, with the path in the message, when a netns cannot be opened."""
    if not path:
        raise NetnsError("no network namespace path given")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetnsError(f"network namespace {path}: {exc.strerror}") from None
    os.close(fd)


def run(
    path: str, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` in the netns at ``path`` and capture its output (never raises on exit status)."""
    check_path(path)
    return subprocess.run(
        list(argv),
        input=input,
        capture_output=True,
        timeout=timeout,
        preexec_fn=lambda: _setns(path),  # noqa: PLW1509 - only a syscall runs between fork and exec
        check=False,
    )
