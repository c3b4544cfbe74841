"""The whole path of a local mesh, against the same apps without the mesh, in one run; and how fast a
change reaches every sidecar.

The mesh is the product (``mizzen local up``): namespace ``bench`` (injected) runs ``front`` (nginx
proxying to the Service ``web``) and ``web`` (nginx answering "hello world"); an ingress Gateway sends
everything to ``front``. A request from the host goes gateway → front's sidecar (inbound) → nginx →
front's sidecar (outbound, mutual TLS) → web's sidecar (inbound) → nginx: the gateway and two sidecars.
The direct path is the same two nginx in namespace ``plain`` (not injected): front-direct → web-direct
by pod IP (a headless Service).

- latency: 1000 requests per second on one keep-alive connection for ``LATENCY_SECONDS`` (h2load,
  HTTP/1.1, pinned to core 0); p50/p99 of what the client saw, and what the mesh adds to direct.
- saturation: ``REQUESTS`` requests over 16 connections; requests per second.
- convergence: on Bookinfo (6 sidecars and the gateway), a VirtualService changed → the controller
  read it, pushed it, and every proxy acknowledged it (syncz), polled every 10 ms.

Run: ``pytest bench/test_mesh_path.py --benchmark-columns=median,min,max,rounds``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mizzen.local import LocalNode, NodeConfig
from mizzen.local.meshctl import Mesh

REQUESTS = 20000
LATENCY_SECONDS = 8
CONVERGENCE_ROUNDS = 10
LOAD_CORE = "0"
RESULTS: dict[str, dict[str, Any]] = {}
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "bookinfo"

for tool in ("nginx", "h2load", "taskset"):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is needed (apt install nginx-light nghttp2-client)", allow_module_level=True)

WEB = """worker_processes 1; daemon off; pid /tmp/{name}.pid; error_log stderr;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 10000000;
  server {{ listen 8080; location / {{ return 200 "hello world\\n"; }} }} }}
"""
FRONT = """worker_processes 1; daemon off; pid /tmp/{name}.pid; error_log stderr;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 10000000;
  upstream web {{ server {upstream}:8080; keepalive 64; }}
  server {{ listen 8080; location / {{ proxy_pass http://web; proxy_http_version 1.1;
    proxy_set_header Connection ""; }} }} }}
"""


def _deployment(name: str, namespace: str, conf: Path, port: str = "http") -> list[dict[str, Any]]:
    labels = {"app": name}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "nginx",
                                "image": "nginx",
                                "command": ["nginx", "-c", str(conf)],
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": 8080}],
                **({"clusterIP": "None"} if namespace == "plain" else {}),
            },
        },
    ]


def manifests(tmp: Path) -> list[Path]:
    confs = {}
    for name, template, upstream in (
        ("web", WEB, ""),
        ("front", FRONT, "web.bench.svc.cluster.local"),
        ("web-direct", WEB, ""),
        ("front-direct", FRONT, "web-direct.plain.svc.cluster.local"),
    ):
        conf = tmp / f"{name}.conf"
        conf.write_text(template.format(name=f"{tmp.name}-{name}", upstream=upstream))
        conf.chmod(0o644)
        confs[name] = conf
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "bench", "labels": {"istio-injection": "enabled"}},
        },
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "plain"}},
        *_deployment("web", "bench", confs["web"]),
        *_deployment("front", "bench", confs["front"]),
        *_deployment("web-direct", "plain", confs["web-direct"]),
        *_deployment("front-direct", "plain", confs["front-direct"]),
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "bench", "namespace": "bench"},
            "spec": {
                "selector": {"istio": "ingressgateway"},
                "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "front", "namespace": "bench"},
            "spec": {
                "hosts": ["*"],
                "gateways": ["bench"],
                "http": [
                    {
                        "route": [
                            {
                                "destination": {
                                    "host": "front.bench.svc.cluster.local",
                                    "port": {"number": 8080},
                                }
                            }
                        ]
                    }
                ],
            },
        },
    ]
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return [path]


def _node(tmp: Path, third: int) -> LocalNode:
    tag = f"{third:02x}{int(time.time()) % 4096:03x}"
    return LocalNode.open(
        NodeConfig(
            state_dir=tmp / "state",
            bridge=f"mzp{tag}",
            subnet=f"10.243.{third}.0/24",
            netns_prefix=f"mzp{tag}-",
            service_cidr=f"10.244.{third}.0/24",
            log_level="warning",
        )
    )


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    tmp = Path(tempfile.mkdtemp(prefix="mzb-mesh-"))
    tmp.chmod(0o755)
    m = Mesh(_node(tmp, 31), say=lambda line: None)
    try:
        m.up(manifests(tmp), timeout=240)
        yield m
    finally:
        m.down()
        shutil.rmtree(tmp, ignore_errors=True)


def target(mesh: Mesh, path: str) -> str:
    status = mesh.status()
    if path == "mesh":
        return f"http://{status['ingress']['ip']}:80/"
    pod = next(
        p for p in status["pods"] if p["namespace"] == "plain" and p["name"].startswith("front-direct-")
    )
    return f"http://{pod['ip']}:8080/"


def h2load(url: str, *args: str) -> str:
    proc = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "h2load", "--h1", *args, url],
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    assert proc.returncode == 0 and m and m.group(4) == "0", out + proc.stderr
    return out


def latencies(log: Path) -> list[float]:
    out = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "200":
            out.append(int(parts[2]) / 1000.0)  # µs -> ms
    return sorted(out)


PATHS = ["direct", "mesh"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.benchmark(group="mesh-latency-1000rps")
def test_latency_at_1000_rps(benchmark: Any, mesh: Mesh, path: str, tmp_path: Path) -> None:
    url = target(mesh, path)
    h2load(url, "-n", "2000", "-c", "4", "-t", "1")  # warm: pools filled, certificates in use
    log = tmp_path / f"latency-{path}.log"

    def run() -> None:
        h2load(url, "-c", "1", "-t", "1", "--rps", "1000", "-D", str(LATENCY_SECONDS), f"--log-file={log}")

    benchmark.pedantic(run, rounds=1, iterations=1)
    lat = latencies(log)
    assert len(lat) > LATENCY_SECONDS * 900
    info = {"p50_ms": round(lat[len(lat) // 2], 3), "p99_ms": round(lat[int(len(lat) * 0.99)], 3)}
    benchmark.extra_info.update(info)
    RESULTS.setdefault("latency-1000rps", {})[path] = info


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.benchmark(group="mesh-saturation")
def test_saturation(benchmark: Any, mesh: Mesh, path: str) -> None:
    url = target(mesh, path)
    h2load(url, "-n", "2000", "-c", "16", "-t", "1")

    def run() -> None:
        h2load(url, "-n", str(REQUESTS), "-c", "16", "-t", "1")

    benchmark.pedantic(run, rounds=3, iterations=1)
    median = sorted(benchmark.stats.stats.data)[1]
    benchmark.extra_info["rps"] = round(REQUESTS / median)
    RESULTS.setdefault("saturation-c16", {})[path] = {"rps": round(REQUESTS / median)}


@pytest.fixture(scope="module")
def bookinfo_mesh() -> Iterator[Mesh]:
    tmp = Path(tempfile.mkdtemp(prefix="mzb-conv-"))
    tmp.chmod(0o755)
    m = Mesh(_node(tmp, 32), say=lambda line: None)
    try:
        m.up([EXAMPLES / "platform", EXAMPLES / "networking" / "bookinfo-gateway.yaml"], timeout=240)
        from mizzen.local.meshctl import read_manifests

        m.apply_objects(read_manifests([EXAMPLES / "networking" / "destination-rule-all.yaml"]))
        yield m
    finally:
        m.down()
        shutil.rmtree(tmp, ignore_errors=True)


def _reviews(subset: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews", "subset": subset}}]}],
        },
    }


@pytest.mark.benchmark(group="mesh-convergence")
def test_config_convergence(benchmark: Any, bookinfo_mesh: Mesh) -> None:
    """From the VirtualService written to every proxy having acknowledged the push that carries it."""
    mesh = bookinfo_mesh
    proxies = 1 + sum(1 for p in mesh.agent_status()["pods"] if p.get("meshed"))
    subsets = iter(["v1", "v2", "v3"] * CONVERGENCE_ROUNDS)

    def converged(before: int) -> bool:
        state = mesh.debug("/debug/configz")
        if (
            state["objects"].get("VirtualService default/reviews", 0) <= before
            or state["pushed"] < state["version"]
        ):
            return False
        syncz = mesh.debug("/debug/syncz")
        return len(syncz) == proxies and all(
            t["status"] == "SYNCED" for p in syncz for t in p["types"].values()
        )

    def change() -> None:
        before = int(mesh.debug("/debug/configz")["version"])
        mesh.apply_objects([_reviews(next(subsets))], wait=False)
        deadline = time.monotonic() + 30
        while not converged(before):
            assert time.monotonic() < deadline, "no convergence within 30 s"
            time.sleep(0.01)

    benchmark.pedantic(change, rounds=CONVERGENCE_ROUNDS, iterations=1, warmup_rounds=1)
    data = sorted(benchmark.stats.stats.data)
    info = {"proxies": proxies, "p50_s": round(data[len(data) // 2], 3), "max_s": round(data[-1], 3)}
    benchmark.extra_info.update(info)
    RESULTS["convergence"] = {"mesh": info}


def bench_summary() -> str:
    lines = []
    lat = RESULTS.get("latency-1000rps", {})
    if {"direct", "mesh"} <= set(lat):
        d, m = lat["direct"], lat["mesh"]
        added = (m["p50_ms"] - d["p50_ms"], m["p99_ms"] - d["p99_ms"])
        lines.append(
            f"1000 rps, 1 conn: direct p50 {d['p50_ms']} / p99 {d['p99_ms']} ms; "
            f"mesh p50 {m['p50_ms']} / p99 {m['p99_ms']} ms; "
            f"added p50 +{added[0]:.3f} / p99 +{added[1]:.3f} ms"
        )
    sat = RESULTS.get("saturation-c16", {})
    if {"direct", "mesh"} <= set(sat):
        ratio = sat["mesh"]["rps"] / sat["direct"]["rps"]
        lines.append(
            f"16 conns: direct {sat['direct']['rps']} rps; mesh {sat['mesh']['rps']} rps ({ratio:.2f}x)"
        )
    conv = RESULTS.get("convergence", {}).get("mesh")
    if conv:
        lines.append(
            f"convergence over {conv['proxies']} proxies: p50 {conv['p50_s']} s, max {conv['max_s']} s"
        )
    return "\n".join(lines)
