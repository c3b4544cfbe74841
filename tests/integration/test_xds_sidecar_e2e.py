"""Controller and our sidecar together, for real: mizzen-proxy takes its whole config from mizzen-controller
over ADS (Delta, and SotW), and HTTP traffic captured by iptables follows the VirtualService, before and
after a live change.

Everything runs inside a throwaway network namespace (the sidecar binds 15001/15006 there, and the
controller 15010/15014), so nothing touches the host's ports: a Service VIP on lo, an OUTPUT REDIRECT
of the VIP to 15001 as Istio's capture does, two upstream HTTP servers standing for the subsets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.envoy import static_cluster
from support.proxyproc import ProxyProcess

pytestmark = pytest.mark.root

VIP = "10.96.0.10"
UPSTREAMS = {"v1": ("127.0.0.2", 8001), "v2": ("127.0.0.3", 8002)}
NODE = "sidecar~127.0.0.1~client-0.default~default.svc.cluster.local"


def mesh(default_subset: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": VIP, "selector": {"app": "web"}, "ports": [{"name": "http", "port": 9080}]},
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "host": "web",
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "hosts": ["web"],
                "http": [
                    {
                        "match": [{"headers": {"x-canary": {"exact": "1"}}}],
                        "route": [{"destination": {"host": "web", "subset": "v2"}}],
                    },
                    {"route": [{"destination": {"host": "web", "subset": default_subset}}]},
                ],
            },
        },
    ]
    for version, (ip, port) in UPSTREAMS.items():
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"web-{version}",
                    "namespace": "default",
                    "labels": {"app": "web", "version": version},
                },
                "status": {"podIP": ip},
            }
        )
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"web-{version}",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "web"},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                "endpoints": [
                    {
                        "addresses": [ip],
                        "conditions": {"ready": True},
                        "targetRef": {"kind": "Pod", "name": f"web-{version}", "namespace": "default"},
                    }
                ],
            }
        )
    return docs


def write_mesh(path: Path, docs: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(docs))
    tmp.replace(path)


def inside(netns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net={netns}", *argv], capture_output=True, text=True, check=check)


def fetch(netns: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    argv = ["curl", "-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    out = inside(netns, *argv, url, check=False).stdout
    body, _, code = out.rpartition("\n")
    return int(code or 0), body


@pytest.fixture(params=["DELTA_GRPC", "GRPC"])
def stack(
    request: pytest.FixtureRequest, netns_path: str, tmp_path: Path
) -> Iterator[tuple[str, Path, ProxyProcess]]:
    netns = netns_path
    inside(netns, "ip", "addr", "add", f"{VIP}/32", "dev", "lo")
    for ip, _ in UPSTREAMS.values():
        inside(netns, "ip", "addr", "add", f"{ip}/32", "dev", "lo")
    # Istio's capture in miniature: traffic to the Service VIP goes to the sidecar's outbound port.
    inside(
        netns,
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        VIP,
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    )
    procs: list[subprocess.Popen[bytes]] = []
    for version, (ip, port) in UPSTREAMS.items():
        root = tmp_path / version
        root.mkdir()
        (root / "who").write_text(version)
        procs.append(
            subprocess.Popen(
                ["nsenter", f"--net={netns}", sys.executable, "-m", "http.server", "--bind", ip, str(port)],
                cwd=root,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    mesh_dir = tmp_path / "mesh"
    mesh_dir.mkdir()
    write_mesh(mesh_dir / "mesh.yaml", mesh("v1"))
    controller_log = (tmp_path / "controller.log").open("wb")
    procs.append(
        subprocess.Popen(
            ["nsenter", f"--net={netns}", sys.executable, "-m", "controller.main", "--files", str(mesh_dir),
             "--host", "127.0.0.1", "--poll-interval", "0.1", "--debounce-after", "0.05"],
            stdout=controller_log,
            stderr=subprocess.STDOUT,
        )
    )  # fmt: skip
    boot = {
        "node": {
            "id": NODE,
            "cluster": "client.default",
            "metadata": {"NAMESPACE": "default", "LABELS": {"app": "client"}},
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": request.param,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": [static_cluster("xds-grpc", ("127.0.0.1", 15010))]},
    }
    proxy = ProxyProcess(tmp_path, boot, argv_prefix=["nsenter", f"--net={netns}"])
    try:
        yield netns, mesh_dir, proxy
    finally:
        proxy.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        controller_log.close()


def syncz(netns: str) -> list[dict[str, Any]]:
    code = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:15014/debug/syncz').read().decode())"
    out = inside(netns, sys.executable, "-c", code, check=False)
    return json.loads(out.stdout) if out.returncode == 0 else []  # type: ignore[no-any-return]


def eventually_reply(netns: str, expected: str, headers: dict[str, str] | None = None) -> None:
    last: tuple[int, str] = (0, "")
    for _ in range(200):
        last = fetch(netns, f"http://{VIP}:9080/who", headers)
        if last == (200, expected):
            return
        time.sleep(0.1)
    raise AssertionError(f"never got {expected!r} (last: {last})")


def test_sidecar_routes_by_controller_config_and_follows_a_live_change(
    stack: tuple[str, Path, ProxyProcess],
) -> None:
    netns, mesh_dir, proxy = stack
    eventually_reply(netns, "v1")
    assert fetch(netns, f"http://{VIP}:9080/who", {"x-canary": "1"}) == (200, "v2")

    # The proxy took every type, and rejected nothing.
    status = syncz(netns)
    assert len(status) == 1 and status[0]["protocol"] in ("delta", "sotw")
    assert {s["status"] for s in status[0]["types"].values()} == {"SYNCED"}, status

    # A live VirtualService change: the default route moves to v2; the header route is unchanged.
    write_mesh(mesh_dir / "mesh.yaml", mesh("v2"))
    eventually_reply(netns, "v2")
    assert fetch(netns, f"http://{VIP}:9080/who", {"x-canary": "1"}) == (200, "v2")
    status = syncz(netns)
    assert not [s["error"] for s in status[0]["types"].values() if s["error"]]
    assert proxy.proc.poll() is None
