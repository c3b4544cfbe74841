"""mizzen-proxy --concurrency N: workers share the listeners, one exposition counts them all, a dead
worker is started again, SIGTERM stops every one."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from support import rawhttp
from support.envoy import bootstrap, http_chain, http_listener, route, route_config, static_cluster, vhost
from support.prom import value
from support.proxyproc import ProxyProcess, free_port
from support.upstream import Upstream


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return sorted(int(x) for x in out)


def test_workers_share_the_load_and_the_metrics(tmp_path: Path) -> None:
    up = Upstream("gw")
    port = free_port()
    boot = bootstrap(
        [
            http_listener(
                "http", "127.0.0.1", port, http_chain(route_config("r", vhost("v", ["*"], route("up"))))
            )
        ],
        [static_cluster("up", ("127.0.0.1", up.port))],
    )
    proxy = ProxyProcess(tmp_path, boot, args=["--concurrency", "3"])
    try:
        proxy.wait_ready()
        deadline = time.monotonic() + 10
        while len(children(proxy.proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = children(proxy.proc.pid)
        assert len(workers) == 3
        time.sleep(1.0)  # every worker has bound its listener
        for _ in range(300):
            assert rawhttp.get(port, "/").status == 200  # a new connection each time
        text = proxy.prometheus()
        assert value(text, "istio_requests_total", response_code="200") == 300  # all workers' counts
        # A worker killed outright comes back; traffic goes on meanwhile.
        os.kill(workers[1], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (len(children(proxy.proc.pid)) < 3 or workers[1] in children(proxy.proc.pid)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert len(children(proxy.proc.pid)) == 3
        for _ in range(20):
            assert rawhttp.get(port, "/").status == 200
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(timeout=15) == 0
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    finally:
        proxy.stop()
        up.stop()
