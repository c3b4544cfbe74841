"""The node agent as a real process: ``python -m cni.agent``, stopped with SIGTERM.

Checks what a DaemonSet rollout relies on: the agent converts and chains the
primary, serves readiness, and on SIGTERM takes everything out again and exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from support.cniconfigs import BRIDGE

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 15.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


class AgentProcess:
    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.conf, self.bin, self.sa = tmp_path / "net.d", tmp_path / "bin", tmp_path / "sa"
        for d in (self.conf, self.bin, self.sa):
            d.mkdir()
        (self.sa / "token").write_text("token-1")
        (self.sa / "ca.crt").write_text("ca")
        self.plugin = tmp_path / "mizzen-cni-build"
        self.plugin.write_bytes(b"#!/bin/sh\nexit 0\n")
        self.log_path = tmp_path / "agent.log"
        env = {k: v for k, v in os.environ.items() if k not in ("NODE_NAME", "MIZZEN_LOG_LEVEL")}
        env.update(KUBERNETES_SERVICE_HOST="fd00::1", KUBERNETES_SERVICE_PORT="443", MIZZEN_LOG_FORMAT="json")
        argv = [
            sys.executable, "-m", "cni.agent",
            "--cni-conf-dir", str(self.conf),
            "--cni-bin-dir", str(self.bin),
            "--plugin-binary", str(self.plugin),
            "--service-account-dir", str(self.sa),
            "--host-cni-conf-dir", "/etc/cni/net.d",
            "--health-addr", "127.0.0.1",
            "--health-port", "0",
            "--watch-interval", "0.1",
            "--repair-mode", "off",
            *extra,
        ]  # fmt: skip
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log, env=env)

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def port(self) -> int:
        def bound() -> int | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited early:\n{self.log_path.read_text()}")
            return next(
                (e["port"] for e in self.events() if e.get("event") == "health server listening"), None
            )

        return wait_for(bound, "the health server")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        finally:
            self.log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def make(*extra: str) -> AgentProcess:
        agent = AgentProcess(tmp_path, *extra)
        started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.kill()


def test_sigterm_removes_everything_and_restores_the_conf(make_agent: Callable[..., AgentProcess]) -> None:
    agent = make_agent()
    conf_file = agent.conf / "10-bridge.conf"
    conf_file.write_text(json.dumps(BRIDGE, indent=4))
    readyz = f"http://127.0.0.1:{agent.port()}/readyz"

    conflist_file = agent.conf / "10-bridge.conflist"
    wait_for(lambda: http_status(readyz) == 200, "readyz 200")
    assert not conf_file.exists()
    plugins = json.loads(conflist_file.read_text())["plugins"]
    assert plugins[0] == BRIDGE
    assert plugins[1]["type"] == "mizzen-cni"
    assert plugins[1]["kubernetes"] == {"kubeconfig": "/etc/cni/net.d/mizzen-cni-kubeconfig"}
    kubeconfig = json.loads((agent.conf / "mizzen-cni-kubeconfig").read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://[fd00::1]:443"
    assert (agent.bin / "mizzen-cni").read_bytes() == agent.plugin.read_bytes()

    assert agent.stop() == 0
    assert sorted(p.name for p in agent.conf.iterdir()) == ["10-bridge.conf"]
    assert json.loads(conf_file.read_text()) == BRIDGE
    assert list(agent.bin.iterdir()) == []
    events = [e.get("event") for e in agent.events()]
    assert "signal received" in events and "uninstalled" in events


def test_keep_on_exit(make_agent: Callable[..., AgentProcess]) -> None:
    agent = make_agent("--keep-on-exit")
    primary = agent.conf / "10-kindnet.conflist"
    primary.write_text(json.dumps({"cniVersion": "0.4.0", "name": "kindnet", "plugins": [{"type": "ptp"}]}))
    readyz = f"http://127.0.0.1:{agent.port()}/readyz"
    wait_for(lambda: http_status(readyz) == 200, "readyz 200")
    assert agent.stop() == 0
    assert [p["type"] for p in json.loads(primary.read_text())["plugins"]] == ["ptp", "mizzen-cni"]
    assert (agent.bin / "mizzen-cni").exists()


def test_missing_plugin_binary_is_an_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cni.agent", "--plugin-binary", str(tmp_path / "nope"), "--health-port", "0"],
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert b"plugin executable not found" in proc.stderr
