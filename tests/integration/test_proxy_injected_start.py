"""The sidecar as the injector starts it: ``mizzen-proxy --xds-address`` builds its bootstrap from the pod's
env and downward-API labels, follows a real mizzen-controller, answers the app's rewritten probes on 15020,
and ``--wait-ready`` (the postStart hook) returns once it is ready."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from support.grpcapp import GrpcApp
from support.proxyproc import free_port

BIN = Path(sys.executable).parent


async def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, status: int = 200) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            assert proc.poll() is None, f"process exited: {log.read_text()[-3000:]}"
            try:
                async with session.get(url) as response:
                    if response.status == status:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered {status}: {log.read_text()[-3000:]}")


@pytest.fixture
async def app() -> AsyncIterator[int]:
    """The app: /ok answers 200 if the kubelet's header came along, /broken 500."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=200 if request.headers.get("X-Probe") == "kubelet" else 418)

    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=500)

    application = web.Application()
    application.router.add_get("/ok", ok)
    application.router.add_get("/broken", broken)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield int(runner.addresses[0][1])
    await runner.cleanup()


async def test_injected_sidecar_starts_from_env_and_serves_app_probes(tmp_path: Path, app: int) -> None:
    manifests = tmp_path / "mesh"
    manifests.mkdir()
    (manifests / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    xds, debug = free_port(), free_port()
    admin, health, metrics = free_port(), free_port(), free_port()
    closed = free_port()  # nothing listens here
    greeter = GrpcApp("greeter")
    procs: list[subprocess.Popen[bytes]] = []
    ctl_log, proxy_log = tmp_path / "controller.log", tmp_path / "proxy.log"
    labels = tmp_path / "labels"
    labels.write_text('app="reviews"\nversion="v1"\nsecurity.istio.io/tlsMode="istio"\n')
    probers = {
        "/app-health/reviews/readyz": {
            "httpGet": {"path": "/ok", "port": app, "httpHeaders": [{"name": "X-Probe", "value": "kubelet"}]},
            "timeoutSeconds": 2,
        },
        "/app-health/reviews/livez": {"httpGet": {"path": "/broken", "port": app}, "timeoutSeconds": 2},
        "/app-health/reviews/startupz": {"tcpSocket": {"port": app}, "timeoutSeconds": 2},
        "/app-health/sidecar2/readyz": {"tcpSocket": {"port": closed}, "timeoutSeconds": 2},
        # gRPC probes: grpc.health.v1 asked of the app, SERVING or not.
        "/app-health/greeter/readyz": {"grpc": {"port": greeter.port}, "timeoutSeconds": 2},
        "/app-health/greeter/livez": {"grpc": {"port": greeter.port, "service": "down"}, "timeoutSeconds": 2},
        "/app-health/greeter/startupz": {"grpc": {"port": closed}, "timeoutSeconds": 2},
    }
    env = {
        **os.environ,
        "POD_NAME": "reviews-v1-5b9c7d8f6-abcde",
        "POD_NAMESPACE": "shop",
        "INSTANCE_IP": "127.0.0.1",
        "SERVICE_ACCOUNT": "reviews",
        "ISTIO_META_WORKLOAD_NAME": "reviews-v1",
        "ISTIO_KUBE_APP_PROBERS": json.dumps(probers),
        "MIZZEN_LABELS_FILE": str(labels),
    }
    bootstrap_out = tmp_path / "bootstrap.json"
    try:
        with ctl_log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "mizzen-controller"),
                        "--files",
                        str(manifests),
                        "--host",
                        "127.0.0.1",
                        "--xds-port",
                        str(xds),
                        "--debug-port",
                        str(debug),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        with proxy_log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "mizzen-proxy"),
                        "--xds-address",
                        f"127.0.0.1:{xds}",
                        "--bootstrap-out",
                        str(bootstrap_out),
                        "--admin-port",
                        str(admin),
                        "--health-port",
                        str(health),
                        "--metrics-port",
                        str(metrics),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        waiter = await asyncio.create_subprocess_exec(
            str(BIN / "mizzen-proxy"), "--wait-ready", "--health-port", str(health), "--wait-timeout-s", "60"
        )
        await _wait(f"http://127.0.0.1:{health}/healthz/ready", procs[1], proxy_log)
        assert await asyncio.wait_for(waiter.wait(), 30) == 0

        boot = json.loads(bootstrap_out.read_text())
        assert (
            boot["node"]["id"] == "sidecar~127.0.0.1~reviews-v1-5b9c7d8f6-abcde.shop~shop.svc.cluster.local"
        )
        meta = boot["node"]["metadata"]
        assert meta["WORKLOAD_NAME"] == "reviews-v1" and meta["SERVICE_ACCOUNT"] == "reviews"
        assert meta["LABELS"] == {"app": "reviews", "version": "v1", "security.istio.io/tlsMode": "istio"}

        async with aiohttp.ClientSession() as session:
            # The controller sees the proxy as the pod it is.
            async with session.get(f"http://127.0.0.1:{debug}/debug/syncz") as response:
                assert "reviews-v1-5b9c7d8f6-abcde" in await response.text()
            answers = {}
            for path in probers:
                async with session.get(f"http://127.0.0.1:{metrics}{path}") as response:
                    answers[path] = response.status
        assert answers == {
            "/app-health/reviews/readyz": 200,
            "/app-health/reviews/livez": 500,  # the app's own answer
            "/app-health/reviews/startupz": 200,
            "/app-health/sidecar2/readyz": 503,
            "/app-health/greeter/readyz": 200,
            "/app-health/greeter/livez": 503,
            "/app-health/greeter/startupz": 503,
        }
    finally:
        greeter.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def test_wait_ready_gives_up() -> None:
    port = free_port()
    done = subprocess.run(
        [str(BIN / "mizzen-proxy"), "--wait-ready", "--health-port", str(port), "--wait-timeout-s", "0.5"],
        timeout=30,
    )
    assert done.returncode == 1


def test_missing_pod_env_is_named(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("POD_NAME", "POD_NAMESPACE", "INSTANCE_IP")}
    done = subprocess.run(
        [str(BIN / "mizzen-proxy"), "--xds-address", "127.0.0.1:1", "--admin-port", "0"],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert b"POD_NAME, POD_NAMESPACE, INSTANCE_IP must be set" in done.stderr
