"""The local node's state directory: node settings, pod records, tracked processes.

Layout (all JSON, written atomically)::

    STATE/node.json            the NodeConfig the node was brought up with
    STATE/net.d/*.conflist     the CNI network config in use
    STATE/bin/                 CNI_PATH: links to the system plugins and ours
    STATE/ipam/                host-local's dataDir (leases)
    STATE/results/             the CNI runtime's ADD result cache
    STATE/pods/<netns>.json    one record per pod

Mutations are serialised with a lock file *beside* the state dir, so that
``down`` can delete the whole directory while holding it.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ProcessRecord:
    """A process started in a pod; ``start_time`` guards against PID reuse."""

    pid: int
    argv: list[str]
    uid: int
    gid: int
    start_time: int


@dataclass
class PodRecord:
    """What the node remembers about a pod."""

    name: str
    namespace: str
    netns: str
    container_id: str
    uid: str
    ip: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)
    namespace_annotations: dict[str, str] = field(default_factory=dict)
    processes: list[ProcessRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PodRecord:
        procs = [ProcessRecord(**p) for p in data.get("processes") or ()]
        return cls(**{**data, "processes": procs})


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name per writer: two writers sharing one temporary file could publish each other's half.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    """The parsed file, or None if it is missing or unreadable (e.g. after a crash mid-write)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


class StateDir:
    """Paths inside one node's state directory, and the pod records in it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # The file lock serialises processes; this one serialises the threads of this process (a
        # test's load generator thread and its main thread, say) and makes the lock re-entrant per
        # thread, where a bare depth counter would let a second thread walk in as if it were nested.
        self._thread_lock = threading.RLock()
        self._local = threading.local()

    @property
    def node_file(self) -> Path:
        return self.root / "node.json"

    @property
    def netd_dir(self) -> Path:
        return self.root / "net.d"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def ipam_dir(self) -> Path:
        return self.root / "ipam"

    @property
    def pods_dir(self) -> Path:
        return self.root / "pods"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def lock_file(self) -> Path:
        return self.root.with_name(self.root.name + ".lock")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the node's lock (blocking) for the duration of a mutation; re-entrant per thread."""
        with self._thread_lock:
            depth = getattr(self._local, "depth", 0)
            if depth:
                self._local.depth = depth + 1
                try:
                    yield
                finally:
                    self._local.depth = depth
                return
            self.lock_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.lock_file, "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                self._local.depth = 1
                try:
                    yield
                finally:
                    self._local.depth = 0
                    fcntl.flock(fh, fcntl.LOCK_UN)

    def pod_file(self, netns: str) -> Path:
        return self.pods_dir / f"{netns}.json"

    def load_pod(self, netns: str) -> PodRecord | None:
        data = read_json(self.pod_file(netns))
        return PodRecord.from_json(data) if isinstance(data, dict) else None

    def save_pod(self, pod: PodRecord) -> None:
        write_json(self.pod_file(pod.netns), pod.to_json())

    def remove_pod(self, netns: str) -> None:
        self.pod_file(netns).unlink(missing_ok=True)

    def pods(self) -> list[PodRecord]:
        if not self.pods_dir.is_dir():
            return []
        records = [self.load_pod(p.stem) for p in sorted(self.pods_dir.glob("*.json"))]
        return [r for r in records if r is not None]
