"""Small traffic pieces for capture tests: a TCP server that names the peer, a client, a tracer reader."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from mizzen.local import LocalNode

# The venv's interpreter: the bootstrap puts it where UID 1337 can run it.
PYTHON = sys.executable

SERVER = r"""
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen(64)
print("ready", flush=True)
while True:
    conn, peer = srv.accept()
    conn.recv(1024)
    conn.sendall(f"{sys.argv[2]} saw {peer[0]}".encode()); conn.close()
"""

CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"hi"); s.shutdown(socket.SHUT_WR)
print(s.recv(1024).decode())
"""


class Tracer:
    """A ``cni.tracer`` running in a pod as UID 1337; its JSON events collected as they arrive."""

    def __init__(self, node: LocalNode, pod: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.proc = node.spawn(
            pod,
            [PYTHON, "-m", "cni.tracer", "--pod", pod],
            uid=1337,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(lambda: any("listening" in e for e in self.events), f"tracer in {pod} to listen")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def relayed(self, direction: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("direction") == direction and e.get("relayed")]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def start_server(node: LocalNode, pod: str, port: int) -> subprocess.Popen[bytes]:
    proc = node.spawn(pod, [PYTHON, "-c", SERVER, str(port), pod], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def connect(node: LocalNode, pod: str, ip: str, port: int, uid: int = 0) -> str:
    """Connect from ``pod`` as ``uid``; returns the server's answer ("<server> saw <peer ip>")."""
    proc = node.spawn(pod, [PYTHON, "-c", CLIENT, ip, str(port)], uid=uid, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()
