"""The sidecar's data path, side by side in one run: direct, one Mizzen hop, nginx and haproxy as the
same hop (the C yardsticks), and two Mizzen hops (client sidecar -> server sidecar).

Layout (2 cores): the app (nginx answering "hello world") and the proxy under test share core 1, as a
sidecar shares its pod's core; the load generator (h2load, HTTP/1.1) runs on core 0 -- and, for the
two-hop path, the client-side sidecar with it, as in the client's pod.

- throughput: ``REQUESTS`` requests per round over 16 and over 64 keep-alive connections; the
  benchmark time is the round's time, so pytest-benchmark's table compares variants directly.
  extra_info: rps, the proxy's CPU per request (from schedstat), and the ratio to nginx.
- latency: 1000 requests per second on one connection for ``LATENCY_SECONDS``; p50/p99 of what the
  client saw, and what each hop adds to direct; vCPU per 1000 rps from the proxy's CPU time.
- config: RSS and time to ready with 1000 services.

Run: ``pytest bench/test_dataplane.py --benchmark-columns=median,min,max,rounds``. A table of the
ratios is printed at the end (and saved to ``bench/results/dataplane.json``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUESTS = int(os.environ.get("MIZZEN_BENCH_REQUESTS", "60000"))
ROUNDS = int(os.environ.get("MIZZEN_BENCH_ROUNDS", "3"))
LATENCY_SECONDS = int(os.environ.get("MIZZEN_BENCH_LATENCY_SECONDS", "6"))
LOAD_CORE, PROXY_CORE = "0", "1"
PROXY = str(Path(sys.executable).parent / "mizzen-proxy")
RESULTS: dict[str, dict[str, Any]] = {}
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

for tool in ("nginx", "haproxy", "h2load", "taskset"):
    if shutil.which(tool) is None:
        pytest.skip(
            f"{tool} is needed (apt install nginx-light haproxy nghttp2-client)", allow_module_level=True
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, from schedstat (ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total


class Rig:
    """The processes under test, started once for the module."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: dict[str, int] = {}
        self.pids: dict[str, list[int]] = {}  # the processes whose CPU a variant costs

    def spawn(self, core: str, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # closed when the process ends
        proc = subprocess.Popen(["taskset", "-c", core, *argv], stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def nginx(self, name: str, core: str, server: str) -> int:
        port = free_port()
        conf = self.tmp / f"{name}.conf"
        conf.write_text(
            f"worker_processes 1; daemon off; pid {self.tmp}/{name}.pid; error_log {self.tmp}/{name}.err;\n"
            "events { worker_connections 4096; }\n"
            f"http {{ access_log off; keepalive_requests 10000000; {server.replace('PORT', str(port))} }}\n"
        )
        proc = self.spawn(core, ["nginx", "-c", str(conf)], name)
        wait_port(port)
        workers = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        self.pids[name] = [int(w) for w in workers]
        self.ports[name] = port
        return port

    def haproxy(self, name: str, core: str, upstream: int) -> int:
        port = free_port()
        conf = self.tmp / f"{name}.cfg"
        conf.write_text(
            "global\n  nbthread 1\n  maxconn 4000\n"
            "defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"
            "  option http-keep-alive\n  http-reuse always\n"
            f"frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n"
            f"backend b\n  server app 127.0.0.1:{upstream}\n"
        )
        proc = self.spawn(core, ["haproxy", "-f", str(conf)], name)
        wait_port(port)
        self.pids[name] = [proc.pid]
        self.ports[name] = port
        return port

    def mizzen(self, name: str, core: str, upstream: int, extra: list[dict[str, Any]] | None = None) -> int:
        port = free_port()
        boot = self.tmp / f"{name}.json"
        boot.write_text(json.dumps(sidecar_bootstrap(port, upstream)))
        argv = [
            PROXY,
            "-c",
            str(boot),
            "--admin-port",
            str(free_port()),
            "--health-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "-l",
            "warning",
        ]
        proc = self.spawn(core, argv, name)
        wait_port(port)
        self.pids[name] = [proc.pid]
        self.ports[name] = port
        return port

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def sidecar_bootstrap(port: int, upstream: int, services: int = 1) -> dict[str, Any]:
    """An outbound hop as the controller configures one: HTTP connection manager, Istio's default
    retry policy, least-request balancing, circuit breakers, Istio metrics on (always)."""
    vhosts = [
        {
            "name": f"svc{i}.default.svc.cluster.local:80",
            "domains": [f"svc{i}", f"svc{i}.default", f"svc{i}.default.svc.cluster.local"] if i else ["*"],
            "routes": [
                {
                    "match": {"prefix": "/"},
                    "route": {
                        "cluster": f"outbound|80||svc{i}.default.svc.cluster.local",
                        "timeout": "0s",
                        "retry_policy": {
                            "retry_on": "connect-failure,refused-stream,unavailable,cancelled,"
                            "retriable-status-codes",
                            "num_retries": 2,
                            "retriable_status_codes": [503],
                        },
                    },
                }
            ],
        }
        for i in range(services)
    ]
    clusters = [
        {
            "name": f"outbound|80||svc{i}.default.svc.cluster.local",
            "type": "STATIC",
            "connect_timeout": "1s",
            "lb_policy": "LEAST_REQUEST",
            "circuit_breakers": {
                "thresholds": [
                    {
                        "max_connections": 4294967295,
                        "max_pending_requests": 4294967295,
                        "max_requests": 4294967295,
                        "max_retries": 4294967295,
                    }
                ]
            },
            "load_assignment": {
                "cluster_name": f"svc{i}",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "127.0.0.1"
                                            if i == 0
                                            else f"10.1.{i // 250}.{i % 250 + 1}",
                                            "port_value": upstream + k * (i > 0),
                                        }
                                    }
                                }
                            }
                            for k in range(1 if i == 0 else 5)
                        ]
                    }
                ],
            },
        }
        for i in range(services)
    ]
    return {
        "node": {
            "id": "sidecar~127.0.0.1~bench.default~default.svc.cluster.local",
            "metadata": {"NAMESPACE": "default", "WORKLOAD_NAME": "bench", "LABELS": {"app": "bench"}},
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "outbound_80",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "traffic_direction": "OUTBOUND",
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "hcm",
                                    "typed_config": {
                                        "@type": HCM,
                                        "stat_prefix": "outbound_80",
                                        "server_header_transformation": "PASS_THROUGH",
                                        "http_filters": [
                                            {"name": "router", "typed_config": {"@type": ROUTER}}
                                        ],
                                        "route_config": {"name": "80", "virtual_hosts": vhosts},
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


APP = 'server { listen 127.0.0.1:PORT; location / { return 200 "hello world\\n"; } }'


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    tmp = Path(tempfile.mkdtemp(prefix="mzb-dp-"))
    tmp.chmod(0o755)
    r = Rig(tmp)
    try:
        app = r.nginx("app", PROXY_CORE, APP)
        r.ports["direct"] = app
        r.pids["direct"] = []
        r.nginx(
            "nginx",
            PROXY_CORE,
            f"upstream app {{ server 127.0.0.1:{app}; keepalive 64; }}\n"
            "server { listen 127.0.0.1:PORT; location / { proxy_pass http://app; proxy_http_version 1.1;"
            ' proxy_set_header Connection ""; } }',
        )
        r.haproxy("haproxy", PROXY_CORE, app)
        r.mizzen("mizzen", PROXY_CORE, app)
        server_side = r.mizzen("mizzen-server-side", PROXY_CORE, app)
        r.mizzen("mizzen-2hop", LOAD_CORE, server_side)
        r.pids["mizzen-2hop"] = r.pids["mizzen-2hop"] + r.pids["mizzen-server-side"]
        yield r
    finally:
        r.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def h2load(port: int, *args: str) -> str:
    proc = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "h2load", "--h1", *args, f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    assert proc.returncode == 0 and m and m.group(4) == "0", out + proc.stderr
    return out


VARIANTS = ["direct", "mizzen", "nginx", "haproxy", "mizzen-2hop"]


@pytest.mark.parametrize("conns", [16, 64])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.benchmark(group="throughput")
def test_throughput(benchmark: Any, rig: Rig, variant: str, conns: int) -> None:
    port = rig.ports[variant]
    h2load(port, "-n", "5000", "-c", str(conns), "-t", "1")  # warm: pools filled, caches hot
    pids = rig.pids[variant]
    cpu: list[int] = []

    def run() -> None:
        before = sum(cpu_ns(p) for p in pids)
        h2load(port, "-n", str(REQUESTS), "-c", str(conns), "-t", "1")
        cpu.append(sum(cpu_ns(p) for p in pids) - before)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    median = sorted(benchmark.stats.stats.data)[len(benchmark.stats.stats.data) // 2]
    rps = REQUESTS / median
    info = {"rps": round(rps), "cpu_us_per_request": round(min(cpu) / REQUESTS / 1000, 2) if pids else None}
    benchmark.extra_info.update(info)
    RESULTS.setdefault(f"throughput-c{conns}", {})[variant] = info


def latencies(log: Path) -> list[float]:
    out = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "200":
            out.append(int(parts[2]) / 1000.0)  # µs -> ms
    return sorted(out)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.benchmark(group="latency-1000rps")
def test_latency_at_1000_rps(benchmark: Any, rig: Rig, variant: str) -> None:
    port = rig.ports[variant]
    log = rig.tmp / f"latency-{variant}.log"
    pids = rig.pids[variant]
    spent: list[int] = []

    def run() -> None:
        before = sum(cpu_ns(p) for p in pids)
        h2load(port, "-c", "1", "-t", "1", "--rps", "1000", "-D", str(LATENCY_SECONDS), f"--log-file={log}")
        spent.append(sum(cpu_ns(p) for p in pids) - before)

    benchmark.pedantic(run, rounds=1, iterations=1)
    lat = latencies(log)
    assert len(lat) > LATENCY_SECONDS * 900
    info = {
        "p50_ms": round(lat[len(lat) // 2], 3),
        "p99_ms": round(lat[int(len(lat) * 0.99)], 3),
        # The share of a core the proxy used to carry 1000 requests per second.
        "vcpu_per_1000_rps": round(spent[0] / 1e9 / LATENCY_SECONDS / (len(lat) / LATENCY_SECONDS / 1000), 3)
        if pids
        else None,
    }
    benchmark.extra_info.update(info)
    RESULTS.setdefault("latency-1000rps", {})[variant] = info


@pytest.mark.benchmark(group="config")
def test_rss_and_start_with_1000_services(benchmark: Any, rig: Rig) -> None:
    boot = rig.tmp / "thousand.json"
    boot.write_text(json.dumps(sidecar_bootstrap(free_port(), rig.ports["direct"], services=1000)))
    rss: list[int] = []

    def start() -> None:
        health = free_port()
        proc = subprocess.Popen(
            [
                PROXY,
                "-c",
                str(boot),
                "--admin-port",
                str(free_port()),
                "--health-port",
                str(health),
                "--metrics-port",
                str(free_port()),
                "-l",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", health), timeout=1) as s:
                        s.sendall(b"GET /healthz/ready HTTP/1.1\r\nHost: x\r\n\r\n")
                        if b" 200 " in s.recv(100):
                            break
                except OSError:
                    time.sleep(0.02)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss.append(int(status.split("VmRSS:")[1].split()[0]))
        finally:
            proc.terminate()
            proc.wait(10)

    benchmark.pedantic(start, rounds=3, iterations=1)
    benchmark.extra_info["rss_mb"] = round(min(rss) / 1024, 1)
    RESULTS["config-1000-services"] = {
        "mizzen": {"rss_mb": round(min(rss) / 1024, 1), "ready_s": round(min(benchmark.stats.stats.data), 2)}
    }


def bench_summary() -> str:
    """The ratio table printed at the end of the run (see bench/conftest.py)."""
    lines = []
    for group in ("throughput-c16", "throughput-c64"):
        rows = RESULTS.get(group, {})
        base = rows.get("nginx", {}).get("rps")
        if not rows:
            continue
        lines.append(
            f"{group}: "
            + ", ".join(
                f"{v} {r['rps']} rps"
                + (f" ({r['rps'] / base:.2f}x nginx)" if base else "")
                + (f", {r['cpu_us_per_request']} us/req" if r.get("cpu_us_per_request") else "")
                for v, r in rows.items()
            )
        )
    lat = RESULTS.get("latency-1000rps", {})
    if lat.get("direct"):
        d = lat["direct"]
        lines.append(
            "latency@1000rps (added vs direct, p50/p99 ms): "
            + ", ".join(
                f"{v} +{r['p50_ms'] - d['p50_ms']:.3f}/+{r['p99_ms'] - d['p99_ms']:.3f}"
                + (f" ({r['vcpu_per_1000_rps']} vCPU/1000rps)" if r.get("vcpu_per_1000_rps") else "")
                for v, r in lat.items()
                if v != "direct"
            )
        )
    if "config-1000-services" in RESULTS:
        lines.append(f"1000 services: {RESULTS['config-1000-services']['mizzen']}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "dataplane.json").write_text(json.dumps(RESULTS, indent=1))
    return "\n".join(lines)
