"""``mizzen-controller --files DIR`` as a process: syncs, serves xDS and the debug port, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import aiohttp

from controller.xds.client import SotwClient, make_node
from controller.xds.resources import CLUSTER

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "xds"


async def test_controller_process_serves_and_stops_cleanly(tmp_path: Path) -> None:
    shutil.copy(GOLDEN / "plain.yaml", tmp_path / "mesh.yaml")
    env = {**os.environ, "MIZZEN_LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller.main", "--files", str(tmp_path), "--host", "127.0.0.1",
        "--xds-port", "0", "--debug-port", "0",
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        ports: dict[str, int] = {}
        while "xds_port" not in ports:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, "the controller exited before listening"
            if line.startswith(b"{"):
                event = json.loads(line)
                if event.get("event") == "controller listening":
                    ports = {"xds_port": event["xds_port"], "debug_port": event["debug_port"]}
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                async with http.get(f"http://127.0.0.1:{ports['debug_port']}/ready") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.05)
            assert resp.status == 200
        client = SotwClient(
            f"127.0.0.1:{ports['xds_port']}",
            make_node(
                "sidecar~10.244.0.5~productpage-1.default~default.svc.cluster.local", {"NAMESPACE": "default"}
            ),
        )
        await client.start()
        client.request(CLUSTER)
        response = await client.recv()
        client.ack(response)
        assert (
            len(response.resources) == 6
        )  # 2 outbound, 1 inbound, Passthrough, BlackHole, InboundPassthrough
        await client.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0


async def test_controller_without_a_source_explains_itself() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller.main", stderr=asyncio.subprocess.PIPE, env=env
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"give --files DIR or --kubeconfig PATH" in err
