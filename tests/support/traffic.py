"""Small traffic pieces for capture tests: a TCP server that names the peer, and a client."""

from __future__ import annotations

import subprocess
import sys

from mizzen.local import LocalNode
from mizzen.local.trace import PodTracer as Tracer
from mizzen.local.trace import wait_for

__all__ = ["Tracer", "connect", "start_server", "wait_for"]

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


def start_server(node: LocalNode, pod: str, port: int) -> subprocess.Popen[bytes]:
    proc = node.spawn(pod, [PYTHON, "-c", SERVER, str(port), pod], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def connect(node: LocalNode, pod: str, ip: str, port: int, uid: int = 0) -> str:
    """Connect from ``pod`` as ``uid``; returns the server's answer ("<server> saw <peer ip>")."""
    proc = node.spawn(
        pod, [PYTHON, "-c", CLIENT, ip, str(port)], uid=uid, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()
