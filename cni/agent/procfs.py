"""Finding a pod's network namespace from the host's /proc (the agent runs with hostPID).

Every container process sits in a cgroup whose path names its pod's UID
(``.../pod<uid>/...`` with the cgroupfs driver, ``...-pod<uid_with_underscores>.slice``
with systemd's), so one scan of ``/proc/*/cgroup`` maps UIDs to a live process,
and ``/proc/PID/ns/net`` is a handle on the pod's netns that any tool can enter.
This works the same under containerd and CRI-O and needs no runtime socket.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?![0-9a-f])"
)


def pod_uid_in_cgroup(text: str) -> str | None:
    """The pod UID named in a ``/proc/PID/cgroup`` file's content, normalised to dashes."""
    m = _POD_UID.search(text)
    return m.group(1).replace("_", "-") if m else None


def _inode(path: Path | str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pod_netns_paths(proc_root: Path = Path("/proc")) -> dict[str, str]:
    """``{pod uid: "<proc_root>/<pid>/ns/net"}`` for pods with a live process and their own netns.

    Pods sharing the host's network namespace are left out: capture rules written
    there would redirect the whole node's traffic.
    """
    host = {i for i in (_inode(proc_root / "1" / "ns" / "net"), _inode("/proc/self/ns/net")) if i is not None}
    try:
        pids = sorted(int(name) for name in os.listdir(proc_root) if name.isdigit())
    except FileNotFoundError:
        return {}
    found: dict[str, str] = {}
    on_host: set[str] = set()
    for pid in pids:
        try:
            text = (proc_root / str(pid) / "cgroup").read_text()
        except OSError:  # the process exited during the scan, or is not ours to read
            continue
        uid = pod_uid_in_cgroup(text)
        if uid is None or uid in found or uid in on_host:
            continue
        netns = proc_root / str(pid) / "ns" / "net"
        inode = _inode(netns)
        if inode is None:
            continue
        if inode in host:
            on_host.add(uid)
            continue
        found[uid] = str(netns)
    return found
