"""The node agent's loop, in process: probes, waiting for a primary, repairing what disappears.

Temp dirs stand for the host's /etc/cni/net.d and /opt/cni/bin; the watch
interval is short and every wait is a bounded poll for the expected state.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import aiohttp
import pytest

from cni.agent.daemon import Options, run
from cni.agent.reconcile import Settings
from cni.agent.repair import Mode

KINDNET = {"cniVersion": "0.4.0", "name": "kindnet", "plugins": [{"type": "ptp"}, {"type": "portmap"}]}
ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
INTERVAL = 0.05


async def wait_for(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Agent:
    conf: Path
    bin: Path
    sa: Path
    url: str
    stop: asyncio.Event
    task: asyncio.Task[int]
    http: aiohttp.ClientSession

    @property
    def primary(self) -> Path:
        return self.conf / "10-kindnet.conflist"

    def entry(self) -> dict | None:
        try:
            plugins = json.loads(self.primary.read_text())["plugins"]
        except (OSError, ValueError):
            return None
        return next((p for p in plugins if p.get("type") == "mizzen-cni"), None)

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.url + path) as resp:
            return resp.status, await resp.text()

    async def finish(self) -> int:
        self.stop.set()
        return await asyncio.wait_for(self.task, 10)


async def start(tmp_path: Path, *, keep_on_exit: bool = False, with_sa: bool = True) -> Agent:
    conf, bin_dir, sa, src = (tmp_path / d for d in ("net.d", "bin", "sa", "src"))
    for d in (conf, bin_dir, src):
        d.mkdir()
    if with_sa:
        sa.mkdir()
        (sa / "token").write_text("token-1")
        (sa / "ca.crt").write_text("ca-1")
    plugin = src / "mizzen-cni"
    plugin.write_bytes(b"#!/bin/sh\nexit 0\n")
    settings = Settings(
        conf_dir=conf,
        bin_dir=bin_dir,
        plugin_binary=plugin,
        host_conf_dir=PurePosixPath("/etc/cni/net.d"),
        sa_dir=sa,
        env=ENV,
    )
    opts = Options(
        settings=settings,
        watch_interval=INTERVAL,
        keep_on_exit=keep_on_exit,
        health_addr="127.0.0.1",
        health_port=0,
        repair_mode=Mode.OFF,
    )
    stop = asyncio.Event()
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run(opts, stop, health_server_started=started))
    port = await asyncio.wait_for(started, 10)
    return Agent(conf, bin_dir, sa, f"http://127.0.0.1:{port}", stop, task, aiohttp.ClientSession())


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    a = await start(tmp_path)
    try:
        yield a
    finally:
        a.stop.set()
        await asyncio.wait_for(asyncio.shield(a.task), 10)
        await a.http.close()


async def test_readyz_503_until_a_primary_appears_then_200(agent: Agent) -> None:
    async def waiting() -> bool:
        status, text = await agent.get("/readyz")
        return status == 503 and "no primary" in text

    await wait_for(waiting, "readyz 503 while there is no primary")
    assert (await agent.get("/healthz"))[0] == 200
    assert list(agent.conf.iterdir()) == [agent.conf / "mizzen-cni-kubeconfig"]  # no conflist of our own

    agent.primary.write_text(json.dumps(KINDNET))

    async def ready() -> bool:
        return (await agent.get("/readyz"))[0] == 200

    await wait_for(ready, "readyz 200 once chained")
    assert agent.entry() == {
        "type": "mizzen-cni",
        "log_level": "info",
        "exclude_namespaces": ["kube-system"],
        "kubernetes": {"kubeconfig": "/etc/cni/net.d/mizzen-cni-kubeconfig"},  # the host's path
    }
    assert await agent.finish() == 0
    assert json.loads(agent.primary.read_text()) == KINDNET
    assert not (agent.bin / "mizzen-cni").exists()
    assert not (agent.conf / "mizzen-cni-kubeconfig").exists()


async def test_repairs_what_goes_missing(agent: Agent) -> None:
    agent.primary.write_text(json.dumps(KINDNET))
    await wait_for(lambda: agent.entry() is not None, "our entry in the primary")

    # The primary plugin rewrites its conflist (kindnet does on restart): we go back in.
    agent.primary.write_text(json.dumps({**KINDNET, "plugins": [{"type": "ptp", "mtu": 1400}]}))
    await wait_for(lambda: agent.entry() is not None, "our entry re-inserted")
    assert json.loads(agent.primary.read_text())["plugins"][0] == {"type": "ptp", "mtu": 1400}

    binary = agent.bin / "mizzen-cni"
    binary.unlink()
    await wait_for(binary.exists, "the executable copied back")

    kubeconfig = agent.conf / "mizzen-cni-kubeconfig"
    kubeconfig.unlink()
    await wait_for(kubeconfig.exists, "the kubeconfig written back")

    def token() -> str:
        try:
            return json.loads(kubeconfig.read_text())["users"][0]["user"]["token"]
        except (OSError, ValueError):
            return ""

    (agent.sa / "token").write_text("token-2")  # a projected token rotates
    await wait_for(lambda: token() == "token-2", "the kubeconfig rewritten with the new token")


async def test_keep_on_exit_leaves_everything(tmp_path: Path) -> None:
    agent = await start(tmp_path, keep_on_exit=True, with_sa=False)
    try:
        agent.primary.write_text(json.dumps(KINDNET))
        await wait_for(lambda: agent.entry() is not None, "our entry")
        assert "kubernetes" not in (agent.entry() or {})  # no service account: no kubeconfig
        assert not (agent.conf / "mizzen-cni-kubeconfig").exists()
        assert await agent.finish() == 0
    finally:
        await agent.http.close()
    assert agent.entry() is not None
    assert (agent.bin / "mizzen-cni").exists()
