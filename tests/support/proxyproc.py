"""Running mizzen-proxy as a real process for tests, on free ports, stopped whatever happens."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

PROXY = str(Path(sys.executable).parent / "mizzen-proxy")


def free_port() -> int:
    """A port to give a server that binds it later. Chosen below the kernel's ephemeral range (where
    port 0 would pick): a port from that range can be taken meanwhile as the source port of any outgoing
    connection on the machine, and the server then fails with EADDRINUSE."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        if port in _GIVEN:
            continue  # handed out already, maybe not bound yet: two servers must not get one port
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            _GIVEN.add(port)
            return port
    raise RuntimeError("no free port below the ephemeral range")


_GIVEN: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class ProxyProcess:
    """``mizzen-proxy -c <bootstrap>`` with its admin, health and metrics ports on free ports.

    Every one started is remembered until stopped: ``stop_all`` (the test session's last teardown) ends
    those a failing fixture left behind."""

    _running: ClassVar[set[ProxyProcess]] = set()

    def __init__(
        self,
        tmp: Path,
        boot: dict[str, Any],
        *,
        argv_prefix: Sequence[str] = (),
        health_host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.config = tmp / f"bootstrap-{os.urandom(3).hex()}.json"
        self.config.write_text(json.dumps(boot))
        self.config.chmod(0o644)
        self.admin, self.health, self.metrics = free_port(), free_port(), free_port()
        self.health_host = health_host
        self.log = tmp / f"proxy-{os.urandom(3).hex()}.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                *argv_prefix,
                PROXY,
                "-c",
                str(self.config),
                "--admin-port",
                str(self.admin),
                "--health-port",
                str(self.health),
                "--metrics-port",
                str(self.metrics),
                "--drain-time-s",
                "5",
                "-l",
                "debug",
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        ProxyProcess._running.add(self)

    def url(self, path: str, port: int | None = None) -> str:
        return f"http://{self.health_host}:{port or self.health}{path}"

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"proxy exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                if http_get(self.url("/healthz/ready"))[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"proxy not ready: {self.log.read_text()}")

    @staticmethod
    def wait_all_ready(*proxies: ProxyProcess) -> None:
        """Wait for each; if one fails to start, stop them all (nothing outlives a failed start)."""
        try:
            for proxy in proxies:
                proxy.wait_ready()
        except AssertionError:
            for proxy in proxies:
                proxy.stop()
            raise

    def prometheus(self) -> str:
        return http_get(self.url("/stats/prometheus", self.metrics))[1]

    @classmethod
    def stop_all(cls) -> list[str]:
        """Stop every proxy still running; the command lines of those there were."""
        left = [" ".join(p.proc.args) for p in cls._running if p.proc.poll() is None]  # type: ignore[arg-type]
        for proxy in list(cls._running):
            proxy.stop()
        return left

    def stop(self) -> int:
        ProxyProcess._running.discard(self)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
