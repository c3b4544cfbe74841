"""What tracing costs the sidecar, side by side in one run: one outbound hop without tracing, with tracing
at 1% sampling (Istio's default: every request pays the decision and carries a not-sampled
``traceparent``), and at 100% (every request a span, exported over OTLP/HTTP to a collector).

Layout as in ``test_dataplane.py`` (2 cores): the app (nginx) and the proxy under test share core 1; the
load (h2load, HTTP/1.1, 16 keep-alive connections) runs on core 0. The collector is an nginx answering
200 to the exports, so its cost stays out of the sidecar's figures. extra_info: rps and the proxy's CPU per
request (schedstat); the summary gives each variant's CPU per request relative to no tracing.

Run: ``pytest bench/test_tracing.py --benchmark-columns=median,min,max,rounds``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_dataplane", Path(__file__).with_name("test_dataplane.py")
)
assert _spec is not None and _spec.loader is not None
dp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dp)  # the data-path rig's helpers: ports, CPU time

REQUESTS = int(os.environ.get("MIZZEN_BENCH_REQUESTS", "60000"))
ROUNDS = int(os.environ.get("MIZZEN_BENCH_ROUNDS", "5"))
LOAD_CORE, PROXY_CORE, PROXY, HCM, ROUTER = dp.LOAD_CORE, dp.PROXY_CORE, dp.PROXY, dp.HCM, dp.ROUTER
OTEL = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
RESULTS: dict[str, dict[str, Any]] = {}
INTERLEAVED: dict[str, dict[str, Any]] = {}

for tool in ("nginx", "h2load", "taskset"):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is needed (apt install nginx-light nghttp2-client)", allow_module_level=True)


def bootstrap(port: int, app: int, collector: int, percent: float | None) -> dict[str, Any]:
    """An outbound hop as the controller makes one, with the HCM's tracing when ``percent`` is given."""
    hcm: dict[str, Any] = {
        "@type": HCM,
        "stat_prefix": "outbound_80",
        "server_header_transformation": "PASS_THROUGH",
        "http_filters": [{"name": "router", "typed_config": {"@type": ROUTER}}],
        "route_config": {
            "name": "80",
            "virtual_hosts": [
                {
                    "name": "app",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "route": {
                                "cluster": "outbound|80||app.default.svc.cluster.local",
                                "timeout": "0s",
                            },
                        }
                    ],
                }
            ],
        },
    }
    if percent is not None:
        hcm["tracing"] = {
            "random_sampling": {"value": percent},
            "client_sampling": {"value": 100},
            "overall_sampling": {"value": 100},
            "provider": {
                "name": "envoy.tracers.opentelemetry",
                "typed_config": {
                    "@type": OTEL,
                    "http_service": {
                        "http_uri": {
                            "uri": "http://otel-collector.observability.svc.cluster.local:4318/v1/traces",
                            "cluster": "outbound|4318||otel-collector.observability.svc.cluster.local",
                            "timeout": "2s",
                        }
                    },
                },
            },
        }

    def cluster(name: str, upstream: int) -> dict[str, Any]:
        return {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "lb_policy": "LEAST_REQUEST",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {"address": "127.0.0.1", "port_value": upstream}
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }

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
                    "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
                }
            ],
            "clusters": [
                cluster("outbound|80||app.default.svc.cluster.local", app),
                cluster("outbound|4318||otel-collector.observability.svc.cluster.local", collector),
            ],
        },
    }


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}

    def spawn(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # closed when the process ends
        proc = subprocess.Popen(["taskset", "-c", PROXY_CORE, *argv], stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def nginx(self, name: str, body: str) -> int:
        port = dp.free_port()
        conf = self.tmp / f"{name}.conf"
        conf.write_text(
            f"worker_processes 1; daemon off; pid {self.tmp}/{name}.pid; error_log {self.tmp}/{name}.err;\n"
            "events { worker_connections 4096; }\n"
            f"http {{ access_log off; keepalive_requests 10000000; client_body_buffer_size 1m;\n"
            f'  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "{body}"; }} }} }}\n'
        )
        self.spawn(["nginx", "-c", str(conf)], name)
        dp.wait_port(port)
        return port

    def proxy(self, name: str, app: int, collector: int, percent: float | None) -> None:
        port = dp.free_port()
        boot = self.tmp / f"{name}.json"
        boot.write_text(json.dumps(bootstrap(port, app, collector, percent)))
        argv = [PROXY, "-c", str(boot), "-l", "warning"]
        argv += ["--admin-port", str(dp.free_port()), "--health-port", str(dp.free_port())]
        argv += ["--metrics-port", str(dp.free_port())]
        proc = self.spawn(argv, name)
        dp.wait_port(port)
        self.ports[name], self.pids[name] = port, proc.pid

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


VARIANTS = {"no-tracing": None, "tracing-1pct": 1.0, "tracing-100pct": 100.0}


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    tmp = Path(tempfile.mkdtemp(prefix="mzb-tr-"))
    tmp.chmod(0o755)
    r = Rig(tmp)
    try:
        app = r.nginx("app", "hello world\\n")
        collector = r.nginx("collector", "")
        for name, percent in VARIANTS.items():
            r.proxy(name, app, collector, percent)
        yield r
    finally:
        r.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def h2load(port: int, *args: str) -> None:
    proc = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "h2load", "--h1", *args, f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    m = re.search(
        r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", proc.stdout
    )
    assert proc.returncode == 0 and m and m.group(4) == "0", proc.stdout + proc.stderr


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.benchmark(group="tracing")
def test_tracing_cost(benchmark: Any, rig: Rig, variant: str) -> None:
    port, pid = rig.ports[variant], rig.pids[variant]
    h2load(port, "-n", "5000", "-c", "16", "-t", "1")  # warm
    cpu: list[int] = []

    def run() -> None:
        before = dp.cpu_ns(pid)
        h2load(port, "-n", str(REQUESTS), "-c", "16", "-t", "1")
        cpu.append(dp.cpu_ns(pid) - before)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    data = sorted(benchmark.stats.stats.data)
    info = {
        "rps": round(REQUESTS / data[len(data) // 2]),
        "cpu_us_per_request": round(sorted(cpu)[len(cpu) // 2] / REQUESTS / 1000, 2),
    }
    benchmark.extra_info.update(info)
    RESULTS[variant] = info


@pytest.mark.benchmark(group="tracing-interleaved")
def test_tracing_cost_interleaved(benchmark: Any, rig: Rig) -> None:
    """The same comparison with the variants' rounds interleaved (in a shuffled order each round), so that
    load from elsewhere on a shared machine falls on all of them alike; medians of CPU per request."""
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    order = list(VARIANTS)

    def run() -> None:
        random.shuffle(order)
        for variant in order:
            pid = rig.pids[variant]
            before = dp.cpu_ns(pid)
            h2load(rig.ports[variant], "-n", str(REQUESTS), "-c", "16", "-t", "1")
            cpu[variant].append((dp.cpu_ns(pid) - before) / REQUESTS / 1000)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    medians = {v: sorted(xs)[len(xs) // 2] for v, xs in cpu.items()}
    for variant, us in medians.items():
        INTERLEAVED[variant] = {
            "cpu_us_per_request": round(us, 2),
            "vs_none": round(us / medians["no-tracing"], 3),
            "rounds": [round(x, 2) for x in cpu[variant]],
        }
    benchmark.extra_info.update(INTERLEAVED)


def bench_summary() -> str:
    if "no-tracing" not in RESULTS and not INTERLEAVED:
        return ""
    lines = []
    if "no-tracing" in RESULTS:
        base = RESULTS["no-tracing"]
        lines.append(f"{'variant':<16}{'rps':>9}{'CPU us/req':>12}{'CPU vs none':>13}{'rps vs none':>13}")
        for name, info in RESULTS.items():
            lines.append(
                f"{name:<16}{info['rps']:>9}{info['cpu_us_per_request']:>12}"
                f"{info['cpu_us_per_request'] / base['cpu_us_per_request']:>13.3f}"
                f"{info['rps'] / base['rps']:>13.3f}"
            )
    if INTERLEAVED:
        lines.append("interleaved rounds (median CPU per request):")
        for name, info in INTERLEAVED.items():
            lines.append(
                f"  {name:<16}{info['cpu_us_per_request']:>8} us  x{info['vs_none']:<7} {info['rounds']}"
            )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "tracing.json").write_text(
        json.dumps({"sequential": RESULTS, "interleaved": INTERLEAVED}, indent=1)
    )
    return "\n".join(lines)
