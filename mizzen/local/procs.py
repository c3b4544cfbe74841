"""Processes in a pod: started as a given UID/GID, stopped with bounded waits.

``ip netns exec`` must run as root (it calls setns and mounts), so the switch to
the target user happens after it, through util-linux's ``setpriv``: both exec
in place, so the PID we get back is the command's own PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from mizzen.local import netns

# How long a process gets to exit on SIGTERM before SIGKILL.
TERM_GRACE = 3.0
KILL_WAIT = 5.0


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def alive(pid: int, started: int | None = None) -> bool:
    """Whether ``pid`` runs (zombies count as gone), and is the same process if ``started`` is given."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    rest = stat[stat.rindex(")") + 2 :].split()
    if rest[0] in ("Z", "X"):
        return False
    return started is None or int(rest[19]) == started


def pod_argv(netns_name: str, argv: Sequence[str], uid: int, gid: int) -> list[str]:
    """``ip netns exec``, then (unless root) ``setpriv`` to uid/gid with no supplementary groups."""
    inner = list(argv)
    if uid != 0 or gid != 0:
        inner = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *inner]
    return netns.exec_argv(netns_name, inner)


def spawn(
    netns_name: str,
    argv: Sequence[str],
    *,
    uid: int = 0,
    gid: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in the namespace as ``uid``/``gid`` (gid defaults to uid)."""
    if not argv:
        raise ValueError("no command given")
    return subprocess.Popen(
        pod_argv(netns_name, argv, uid, uid if gid is None else gid),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        # Its own session: a Ctrl-C meant for the CLI does not race our own cleanup.
        start_new_session=True,
    )


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Poll until every pid has exited (or timeout); returns those still alive."""
    remaining = list(pids)
    deadline = time.monotonic() + timeout
    while remaining:
        remaining = [p for p in remaining if alive(p)]
        if not remaining or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return remaining


def _signal(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_all(netns_name: str, grace: float = TERM_GRACE) -> list[int]:
    """SIGTERM every process in the namespace, then SIGKILL the rest; returns survivors (should be none)."""
    pids = netns.pids(netns_name)
    if not pids:
        return []
    _signal(pids, signal.SIGTERM)
    left = wait_gone(pids, grace)
    # Processes can fork while we wait: sweep the namespace again for the kill.
    left = sorted(set(left) | set(netns.pids(netns_name)))
    _signal(left, signal.SIGKILL)
    return wait_gone(left, KILL_WAIT)
