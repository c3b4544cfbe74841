"""Two sidecars for real: pods made through the CNI chain with capture, mizzen-proxy as UID 1337 in each.

client app -> (captured, 15001) client sidecar -> server pod (captured, 15006) -> server sidecar ->
app from 127.0.0.6, as in an Istio mesh; the app never knows.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.envoy import HCM, ROUTER, addr, original_dst_cluster, static_cluster, tcp_chain
from support.prom import value

from mizzen.local import LocalNode, NodeConfig, PodSpec

pytestmark = pytest.mark.root

PROXY = str(Path(sys.executable).parent / "mizzen-proxy")
UPSTREAM = str(Path(__file__).parent.parent / "support" / "upstream.py")
MESH = {"istio-injection": "enabled"}
INJECTED = {"sidecar.istio.io/status": '{"containers":["istio-proxy"]}'}


def hcm(stat: str, routes: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM,
            "stat_prefix": stat,
            "route_config": routes,
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
        },
    }


def sidecar_bootstrap(pod: str, server_ip: str) -> dict[str, Any]:
    """What the controller would give a sidecar of this two-pod mesh (Istio's listener layout)."""
    svc = "outbound|8080||server.default.svc.cluster.local"
    return {
        "node": {
            "id": f"sidecar~0.0.0.0~{pod}.default~default.svc.cluster.local",
            "metadata": {"NAMESPACE": "default", "WORKLOAD_NAME": pod, "LABELS": {"app": pod}},
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "virtualOutbound",
                    "address": addr("0.0.0.0", 15001),
                    "use_original_dst": True,
                    "traffic_direction": "OUTBOUND",
                    "default_filter_chain": tcp_chain("PassthroughCluster"),
                },
                {
                    "name": "0.0.0.0_8080",
                    "address": addr("0.0.0.0", 8080),
                    "bind_to_port": False,
                    "traffic_direction": "OUTBOUND",
                    "filter_chains": [
                        {
                            "filters": [
                                hcm(
                                    "outbound_8080",
                                    {
                                        "name": "8080",
                                        "virtual_hosts": [
                                            {
                                                "name": "server",
                                                "domains": ["*"],
                                                "routes": [
                                                    {"match": {"prefix": "/"}, "route": {"cluster": svc}}
                                                ],
                                            }
                                        ],
                                    },
                                )
                            ]
                        }
                    ],
                },
                {
                    "name": "virtualInbound",
                    "address": addr("0.0.0.0", 15006),
                    "traffic_direction": "INBOUND",
                    "listener_filters": [{"name": "envoy.filters.listener.original_dst"}],
                    "filter_chains": [
                        {
                            "filter_chain_match": {"destination_port": 8080},
                            "filters": [
                                hcm(
                                    "inbound_8080",
                                    {
                                        "name": "inbound|8080||",
                                        "virtual_hosts": [
                                            {
                                                "name": "inbound",
                                                "domains": ["*"],
                                                "routes": [
                                                    {
                                                        "match": {"prefix": "/"},
                                                        "route": {"cluster": "inbound|8080||"},
                                                    }
                                                ],
                                            }
                                        ],
                                    },
                                )
                            ],
                        }
                    ],
                    "default_filter_chain": tcp_chain("InboundPassthroughCluster"),
                },
            ],
            "clusters": [
                original_dst_cluster("PassthroughCluster"),
                original_dst_cluster("InboundPassthroughCluster", "127.0.0.6"),
                original_dst_cluster("inbound|8080||", "127.0.0.6"),
                static_cluster(svc, (server_ip, 8080)),
            ],
        },
    }


class Pods:
    def __init__(self, node: LocalNode, shared: Path) -> None:
        self.node = node
        self.shared = shared
        self.ip: dict[str, str] = {}
        self.procs: list[subprocess.Popen[bytes]] = []

    def add(self, name: str) -> str:
        record = self.node.add_pod(PodSpec(name=name, namespace_labels=MESH, annotations=INJECTED))
        assert record.ip
        self.ip[name] = record.ip
        return record.ip

    def sidecar(self, pod: str, server_ip: str) -> None:
        boot = self.shared / f"{pod}.json"
        boot.write_text(json.dumps(sidecar_bootstrap(pod, server_ip)))
        boot.chmod(0o644)
        log = open(self.shared / f"{pod}.log", "wb")  # closed with the process
        self.procs.append(
            self.node.spawn(
                pod, [PROXY, "-c", str(boot), "-l", "debug"], uid=1337, stdout=log, stderr=subprocess.STDOUT
            )
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.ip[pod]}:15021/healthz/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"sidecar in {pod} not ready: {(self.shared / f'{pod}.log').read_text()}")

    def app(self, pod: str) -> None:
        proc = self.node.spawn(
            pod, [sys.executable, UPSTREAM, "8080", pod, "0.0.0.0"], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        self.procs.append(proc)

    def curl(self, pod: str, url: str, uid: int = 0) -> dict[str, Any]:
        code = (
            "import json, sys, urllib.request\n"
            "r = urllib.request.urlopen(sys.argv[1], timeout=10)\n"
            "print(json.dumps({'status': r.status, 'headers': dict(r.headers), 'body': r.read().decode()}))"
        )
        proc = self.node.spawn(
            pod, [sys.executable, "-c", code, url], uid=uid, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
        return json.loads(out)  # type: ignore[no-any-return]

    def metrics(self, pod: str) -> str:
        with urllib.request.urlopen(f"http://{self.ip[pod]}:15020/stats/prometheus", timeout=5) as r:
            return r.read().decode()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    tag = secrets.token_hex(3)
    config = NodeConfig(
        state_dir=Path(tmp_path_factory.mktemp("node")) / "state",
        bridge=f"mzt{tag}",
        subnet=f"10.250.{secrets.randbelow(250) + 1}.0/24",
        netns_prefix=f"mzt{tag}-",
        capture=True,
    )
    node = LocalNode.open(config)
    shared = Path(tempfile.mkdtemp(prefix="mzt-sidecar-"))
    shared.chmod(0o755)  # UID 1337 reads the bootstraps and writes nothing here
    try:
        node.up()
        p = Pods(node, shared)
        p.add("client")
        server_ip = p.add("server")
        p.app("server")
        p.sidecar("client", server_ip)
        p.sidecar("server", server_ip)
        yield p
    finally:
        for proc in p.procs if "p" in locals() else []:
            proc.terminate()
        node.down()
        for f in shared.iterdir():
            f.unlink()
        os.rmdir(shared)


def test_request_crosses_both_sidecars(pods: Pods) -> None:
    resp = pods.curl("client", f"http://{pods.ip['server']}:8080/hello")
    seen = json.loads(resp["body"])
    assert resp["status"] == 200 and seen["name"] == "server" and seen["path"] == "/hello"
    assert seen["peer"] == "127.0.0.6"  # the server sidecar reached the app as Istio's does
    assert len(seen["headers"]["x-request-id"]) == 36  # added by the client sidecar, kept by the server's
    assert "x-envoy-upstream-service-time" in {k.lower() for k in resp["headers"]}
    client, server = pods.metrics("client"), pods.metrics("server")
    assert (
        value(
            client,
            "istio_requests_total",
            reporter="source",
            response_code="200",
            destination_service="server.default.svc.cluster.local",
        )
        >= 1
    )
    assert (
        value(
            server,
            "istio_requests_total",
            reporter="destination",
            response_code="200",
            destination_workload="server",
        )
        >= 1
    )


def test_unknown_destinations_pass_through_as_tcp(pods: Pods) -> None:
    # Port 9999 has no listener in the client sidecar: the passthrough carries it (and fails to connect).
    before = value(pods.metrics("client"), "istio_tcp_connections_opened_total", reporter="source")
    code = (
        "import socket, sys\n"
        "try:\n socket.create_connection((sys.argv[1], 9999), timeout=3).recv(1)\n"
        "except OSError:\n pass"
    )
    proc = pods.node.spawn("client", [sys.executable, "-c", code, pods.ip["server"]])
    assert proc.wait(timeout=10) == 0
    time.sleep(0.3)
    assert (
        value(pods.metrics("client"), "istio_tcp_connections_opened_total", reporter="source") == before + 1
    )


def test_the_sidecars_own_traffic_is_not_captured(pods: Pods) -> None:
    # As UID 1337 from the client pod: straight to the server pod, no client-side sidecar on the way.
    before = value(pods.metrics("client"), "istio_requests_total", reporter="source")
    resp = pods.curl("client", f"http://{pods.ip['server']}:8080/direct", uid=1337)
    assert resp["status"] == 200
    assert value(pods.metrics("client"), "istio_requests_total", reporter="source") == before
