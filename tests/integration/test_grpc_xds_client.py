"""An independent client: grpcio's own proxyless xDS client, bootstrapped against the controller.

The controller runs on the files source; EndpointSlices point at real gRPC test servers on 127.0.0.x.
A client process (grpc reads GRPC_XDS_BOOTSTRAP once per process) dials ``xds:///<host>:<port>`` targets
and reports which server answered each call. Any NACK from it fails the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from controller.app import Controller
from controller.sources.files import FilesSource

METHOD = "/mizzen.test.Echo/Who"

CLIENT = r"""
import json, sys
import grpc

channels = {}
for line in sys.stdin:
    cmd = json.loads(line)
    channel = channels.get(cmd["target"])
    if channel is None:
        channel = channels[cmd["target"]] = grpc.insecure_channel(cmd["target"])
    call = channel.unary_unary(cmd["method"])
    seen = []
    try:
        for _ in range(cmd["n"]):
            metadata = tuple(cmd.get("metadata", {}).items())
            reply = call(b"", metadata=metadata, timeout=15, wait_for_ready=True)
            seen.append(reply.decode())
        print(json.dumps({"ok": seen}), flush=True)
    except grpc.RpcError as exc:
        print(json.dumps({"error": f"{exc.code()}: {exc.details()}"}), flush=True)
"""


class EchoServer:
    """A gRPC server that answers with its own name."""

    def __init__(self, name: str, host: str) -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.server = grpc.aio.server()

    async def start(self) -> None:
        async def who(request: bytes, context: Any) -> bytes:
            return self.name.encode()

        handler = grpc.method_handlers_generic_handler(
            "mizzen.test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)}
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port(f"{self.host}:0")
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop(0)


def mesh(servers: dict[str, EchoServer], echo_members: list[str]) -> list[dict[str, Any]]:
    """greeter: two subsets (a, b), a header route to b and an 80/20 split; echo: plain, round robin."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "greeter", "namespace": "default"},
            "spec": {
                "clusterIP": "10.96.7.1",
                "selector": {"app": "greeter"},
                "ports": [{"name": "grpc", "port": 50051}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo", "namespace": "default"},
            "spec": {
                "clusterIP": "10.96.7.2",
                "selector": {"app": "echo"},
                "ports": [{"name": "grpc", "port": 7070}],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "greeter", "namespace": "default"},
            "spec": {
                "host": "greeter",
                "subsets": [
                    {"name": "a", "labels": {"version": "a"}},
                    {"name": "b", "labels": {"version": "b"}},
                ],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "greeter", "namespace": "default"},
            "spec": {
                "hosts": ["greeter"],
                "http": [
                    {
                        "match": [{"headers": {"x-variant": {"exact": "b"}}}],
                        "route": [{"destination": {"host": "greeter", "subset": "b"}}],
                    },
                    {
                        "route": [
                            {"destination": {"host": "greeter", "subset": "a"}, "weight": 80},
                            {"destination": {"host": "greeter", "subset": "b"}, "weight": 20},
                        ]
                    },
                ],
            },
        },
    ]
    for name, server in servers.items():
        app = "greeter" if name.startswith("greeter") else "echo"
        if app == "echo" and name not in echo_members:
            continue
        version = name.rsplit("-", 1)[1]
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": "default",
                    "labels": {"app": app, "version": version},
                },
                "status": {"podIP": server.host},
            }
        )
        # One slice per server: each listens on its own ephemeral port.
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": name,
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": app},
                },
                "addressType": "IPv4",
                "ports": [{"name": "grpc", "port": server.port, "protocol": "TCP"}],
                "endpoints": [
                    {
                        "addresses": [server.host],
                        "conditions": {"ready": True},
                        "targetRef": {"kind": "Pod", "name": name, "namespace": "default"},
                    }
                ],
            }
        )
    return docs


def write_mesh(path: Path, docs: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(docs))
    tmp.replace(path)


class ClientProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def calls(self, target: str, n: int, metadata: dict[str, str] | None = None) -> list[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        cmd = {"target": target, "method": METHOD, "n": n, "metadata": metadata or {}}
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        assert line, "the gRPC client process died"
        result = json.loads(line)
        assert "ok" in result, result["error"]
        return result["ok"]  # type: ignore[no-any-return]


@pytest.fixture
async def setup(
    tmp_path: Path,
) -> AsyncIterator[tuple[Controller, ClientProcess, dict[str, EchoServer], Path]]:
    servers = {
        "greeter-a": EchoServer("greeter-a", "127.0.0.11"),
        "greeter-b": EchoServer("greeter-b", "127.0.0.12"),
        "echo-1": EchoServer("echo-1", "127.0.0.21"),
        "echo-2": EchoServer("echo-2", "127.0.0.22"),
        "echo-3": EchoServer("echo-3", "127.0.0.23"),
    }
    for server in servers.values():
        await server.start()
    mesh_dir = tmp_path / "mesh"
    mesh_dir.mkdir()
    write_mesh(mesh_dir / "mesh.yaml", mesh(servers, ["echo-1", "echo-2", "echo-3"]))
    controller = Controller(
        FilesSource(mesh_dir, poll_interval=0.05),
        host="127.0.0.1",
        xds_port=0,
        debug_port=0,
        debounce_after=0.05,
    )
    await controller.start()
    bootstrap = tmp_path / "bootstrap.json"
    bootstrap.write_text(
        json.dumps(
            {
                "xds_servers": [
                    {
                        "server_uri": f"127.0.0.1:{controller.xds_port}",
                        "channel_creds": [{"type": "insecure"}],
                        "server_features": ["xds_v3"],
                    }
                ],
                "node": {
                    "id": "sidecar~127.0.0.1~client-0.default~default.svc.cluster.local",
                    "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default", "ISTIO_VERSION": "1.24.0"},
                    "locality": {},
                },
            }
        )
    )
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        yield controller, ClientProcess(proc), servers, mesh_dir
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        nacks = [
            (c["proxy"], t, s["error"])
            for c in controller.ads.status()
            for t, s in c["types"].items()
            if s["error"]
        ]
        await controller.stop(grace=0)
        for server in servers.values():
            await server.stop()
        assert not nacks, f"the gRPC client rejected config: {nacks}"
        assert "pilot_total_xds_rejects{" not in controller.metrics.render().decode()


async def test_proxyless_grpc_client_routes_through_controller_config(
    setup: tuple[Controller, ClientProcess, dict[str, EchoServer], Path],
) -> None:
    controller, client, servers, mesh_dir = setup
    echo = "xds:///echo.default.svc.cluster.local:7070"
    greeter = "xds:///greeter.default.svc.cluster.local:50051"

    # Round robin across the three echo endpoints: once all are connected, calls cycle through them.
    seen: set[str] = set()
    for _ in range(20):
        seen.update(await client.calls(echo, 6))
        if len(seen) == 3:
            break
    assert seen == {"echo-1", "echo-2", "echo-3"}
    replies = await client.calls(echo, 30)
    assert {name: replies.count(name) for name in seen} == {"echo-1": 10, "echo-2": 10, "echo-3": 10}

    # Header-match route: x-variant: b goes to subset b only.
    assert set(await client.calls(greeter, 20, {"x-variant": "b"})) == {"greeter-b"}

    # Weighted split 80/20 between subsets a and b.
    replies = await client.calls(greeter, 200)
    a, b = replies.count("greeter-a"), replies.count("greeter-b")
    assert a + b == 200 and b > 0 and a > 2 * b, (a, b)

    # An endpoint removed at runtime stops receiving calls; the others share the load.
    write_mesh(mesh_dir / "mesh.yaml", mesh(servers, ["echo-1", "echo-3"]))
    for _ in range(100):
        replies = await client.calls(echo, 10)
        if "echo-2" not in replies:
            break
        await asyncio.sleep(0.05)
    replies = await client.calls(echo, 20)
    assert {name: replies.count(name) for name in set(replies)} == {"echo-1": 10, "echo-3": 10}

    # gRPC keeps one xDS client per channel target, so each target is its own ADS stream.
    status = controller.ads.status()
    assert len(status) == 2
    assert {(c["protocol"], c["generator"]) for c in status} == {("sotw", "grpc")}
    assert {s["status"] for c in status for s in c["types"].values()} == {"SYNCED"}
