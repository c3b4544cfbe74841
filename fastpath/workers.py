"""Worker processes for gateways (``mizzen-proxy --concurrency N``).

A sidecar is one process: one core's worth of traffic for one pod. A gateway carries a whole mesh's
ingress, so it may run N workers: the supervisor forks them before any event loop or thread exists, each
binds the same listeners with SO_REUSEPORT (the kernel spreads connections over them) and follows the
control plane on its own ADS stream. Worker 0 serves the admin, readiness and metrics ports; the others
serve the same routes on an abstract Unix socket, which worker 0 asks for their metrics (summed into one
exposition) and tells to drain. A worker that dies is started again; SIGTERM reaches them all.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable

from fastpath.localhttp import Routes
from mizzen import logs

log = logs.get("proxy")


def peer_socket(supervisor: int, worker: int) -> str:
    """The abstract Unix socket of a worker (no file left behind, private to this host's netns)."""
    return f"\0mizzen-proxy-{supervisor}-w{worker}"


async def serve_peer(routes: Routes, supervisor: int, worker: int) -> asyncio.AbstractServer:
    from fastpath.localhttp import _Conn

    loop = asyncio.get_running_loop()
    return await loop.create_unix_server(lambda: _Conn(routes), peer_socket(supervisor, worker))


async def ask_peers(supervisor: int, workers: int, method: str, path: str) -> list[bytes]:
    """The bodies of ``method path`` from workers 1..N-1 (those that answer in time)."""
    bodies = []
    loop = asyncio.get_running_loop()
    for worker in range(1, workers):
        # Our own socket: uvloop cannot connect to an abstract name by path.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, peer_socket(supervisor, worker)), 1.0)
            reader, writer = await asyncio.open_unix_connection(sock=sock)
        except (OSError, TimeoutError):
            sock.close()
            continue
        try:
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n".encode())
            raw = await asyncio.wait_for(reader.read(), 5.0)
        except (OSError, TimeoutError):
            continue
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 200"):
            bodies.append(body)
    return bodies


def supervise(workers: int, run_worker: Callable[[int], int]) -> int:
    """Fork ``workers`` processes running ``run_worker(i)``; restart any that die until SIGTERM/SIGINT."""
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                code = run_worker(index)
            finally:
                os._exit(code)
        children[pid] = index

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(workers):
        start(i)
    log.info("workers started", workers=workers, pids=sorted(children))
    status = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping:
            status = status or (code if code > 0 else 0)
            continue
        log.error("worker died, starting it again", worker=index, pid=pid, exit=code)
        time.sleep(1.0)
        if not stopping:
            start(index)
    return status
