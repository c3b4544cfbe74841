"""The Telemetry API and the mesh config on the kube source, against the API test server: mizzen-controller
lists and watches telemetries (telemetry.istio.io) and the istio ConfigMap's ``mesh`` key in its namespace,
and a change to either is taken live (the snapshot moves on; an invalid Telemetry is reported)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from support.kubeapi import CORE, istio_crds, running
from support.proxyproc import free_port


def debug(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


async def eventually(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(check)
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


TELEMETRY = {
    "apiVersion": "telemetry.istio.io/v1",
    "kind": "Telemetry",
    "metadata": {"name": "shop", "namespace": "shop"},
    "spec": {"tracing": [{"randomSamplingPercentage": 10}]},
}


async def test_telemetries_and_the_mesh_config_are_watched(tmp_path: Path) -> None:
    async with running(CORE + istio_crds()) as api:
        for ns in ("istio-system", "mizzen-system", "shop"):
            api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        api.create(TELEMETRY)
        api.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "istio", "namespace": "mizzen-system"},
                "data": {"mesh": "defaultConfig:\n  tracing:\n    sampling: 5\n"},
            }
        )
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        port = free_port()
        env = {**os.environ, "MIZZEN_LOG_FORMAT": "json", "MIZZEN_LOG_LEVEL": "info"}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        log = (tmp_path / "controller.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controller.main",
            "--kubeconfig", str(kubeconfig),
            "--host", "127.0.0.1", "--xds-port", "0", "--debug-port", str(port), "--no-ca",
            stdout=log, stderr=log, env=env,
        )  # fmt: skip
        try:
            await eventually(lambda: _ready(port), "the controller")
            objects = debug(port, "/debug/configz")["objects"]
            assert "Telemetry shop/shop" in objects
            assert "/apis/telemetry.istio.io/v1/telemetries" in {r.path for r in api.requests_for("list")}
            version = debug(port, "/debug/configz")["version"]
            # The ConfigMap changes: the controller takes the new mesh config (a new snapshot version).
            cm = api.get("ConfigMap", "istio", "mizzen-system")
            assert cm is not None
            api.apply({**cm, "data": {"mesh": "enableTracing: false\n"}})
            await eventually(lambda: debug(port, "/debug/configz")["version"] > version, "a new snapshot")
            log_file = tmp_path / "controller.log"
            await eventually(lambda: b"mesh config changed" in log_file.read_bytes(), "the change logged")
            # An invalid Telemetry is refused with the field named; the valid one stays in force.
            bad = {**TELEMETRY, "metadata": {"name": "bad", "namespace": "shop"}}
            bad["spec"] = {"accessLogging": [{"filter": {"expression": "size(request.path) > 1"}}]}
            api.create(bad)
            invalid = await eventually(
                lambda: [i for i in debug(port, "/debug/invalid") if i["object"] == "Telemetry shop/bad"],
                "the invalid Telemetry to be reported",
            )
            assert "accessLogging[0].filter.expression" in invalid[0]["errors"][0]
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 30)
            log.close()
        assert code == 0, (tmp_path / "controller.log").read_text()[-3000:]


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False
