"""Running a command inside a network namespace given by its path.

Runtimes hand plugins a path (``/var/run/netns/cni-…`` or ``/proc/PID/ns/net``),
not a name, so ``ip netns exec`` does not fit. Two ways in:

- :func:`run` from any process: the child joins the namespace with setns(2)
  between fork and exec, and the caller never changes namespace (the node agent).
- :func:`enter` for a one-shot, single-threaded process (the plugin): the process
  itself joins the namespace, and later :func:`run` calls for it spawn the tool
  directly with posix_spawn, without importing subprocess (~10 ms of start-up).
"""

from __future__ import annotations

import ctypes
import os

TYPE_CHECKING = False  # see cni/spec.py: no typing at run time on the plugin's path
if TYPE_CHECKING:
    from collections.abc import Sequence

CLONE_NEWNET = 0x40000000


class NetnsError(RuntimeError):
    """The namespace path does not exist or cannot be entered."""


_libc: ctypes.CDLL | None = None


def _load_libc() -> ctypes.CDLL:
    # Loaded before any fork: a dlopen in the child of a threaded parent could deadlock.
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)  # the libc already mapped into this process
    return _libc


def _setns(path: str) -> None:
    libc = _load_libc()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def check_path(path: str) -> None:
    """Fail early, with the path in the message, when a netns cannot be opened."""
    if not path:
        raise NetnsError("no network namespace path given")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetnsError(f"network namespace {path}: {exc.strerror}") from None
    os.close(fd)


class Completed:
    """The outcome of a :func:`run`: exit status and captured output (like CompletedProcess)."""

    __slots__ = ("args", "returncode", "stderr", "stdout")

    def __init__(self, args: list[str], returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.args = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


_entered: str | None = None


def enter(path: str) -> None:
    """Move this process into the netns at ``path``. Only for single-threaded, one-shot processes."""
    global _entered
    check_path(path)
    _setns(path)
    _entered = path


def _drain(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _spawn_here(argv: list[str], input: bytes | None) -> Completed:
    """posix_spawn ``argv`` in the current netns with piped stdio.

    The tools run here (iptables-save/-restore) read all of stdin before writing, and
    write little to stderr, so feeding stdin, then draining stdout, then stderr, cannot
    deadlock on a full pipe.
    """
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    actions = [
        (os.POSIX_SPAWN_DUP2, in_r, 0),
        (os.POSIX_SPAWN_DUP2, out_w, 1),
        (os.POSIX_SPAWN_DUP2, err_w, 2),
    ]
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    except OSError as exc:
        for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
            os.close(fd)
        return Completed(argv, 127, b"", f"{argv[0]}: {exc.strerror}".encode())
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    try:
        view = memoryview(input or b"")
        while view:
            view = view[os.write(in_w, view) :]
    except BrokenPipeError:
        pass
    finally:
        os.close(in_w)
    out, err = _drain(out_r), _drain(err_r)
    _, status = os.waitpid(pid, 0)
    return Completed(argv, os.waitstatus_to_exitcode(status), out, err)


def run(path: str, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 30.0) -> Completed:
    """Run ``argv`` in the netns at ``path`` and capture its output (never raises on exit status)."""
    check_path(path)
    if _entered == path:
        return _spawn_here(list(argv), input)
    import subprocess

    _load_libc()
    proc = subprocess.run(
        list(argv),
        input=input,
        capture_output=True,
        timeout=timeout,
        preexec_fn=lambda: _setns(path),
        check=False,
    )
    return Completed(list(argv), proc.returncode, proc.stdout, proc.stderr)
