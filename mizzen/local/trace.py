"""Running ``cni.tracer`` in a local pod as the sidecar's UID and collecting its events."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from mizzen.local.node import LocalNode

PROXY_UID = 1337


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true; raise with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


class PodTracer:
    """The capture tracer on 15001/15006 of one pod, its JSON events gathered by a reader thread."""

    def __init__(
        self, node: LocalNode, pod: str, namespace: str = "default", python: str = sys.executable
    ) -> None:
        self.pod = pod
        self.events: list[dict[str, Any]] = []
        self.proc = node.spawn(
            pod,
            [python, "-m", "cni.tracer", "--pod", pod],
            namespace=namespace,
            uid=PROXY_UID,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(lambda: any("listening" in e for e in self.events), f"the tracer in {pod} to listen")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def relayed(self, direction: str) -> list[dict[str, Any]]:
        """Connections captured in ``direction`` (``outbound`` or ``inbound``) and relayed."""
        return [e for e in self.events if e.get("direction") == direction and e.get("relayed")]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
