"""HTTP/2 and gRPC through two sidecars vs direct, side by side in one run, on the data-path rig of
``test_dataplane.py`` (same cores, same load generator, the same outbound hop config with its clusters
speaking HTTP/2).

The app is nginx over h2c (prior knowledge): ``/`` answers "hello world", ``/mizzen.test.Echo/Who`` answers
a canned gRPC unary reply (a framed message, then ``grpc-status: 0`` in the trailers), so the app costs the
same few microseconds in every variant and the difference is the sidecars'. The load generator is h2load
over h2c: 16 connections with 10 streams each (multiplexing is what HTTP/2 is for), and for gRPC each request
is a POST of a framed message with ``content-type: application/grpc`` and ``te: trailers``.

- ``direct-h2``/``direct-grpc``: h2load -> nginx.
- ``2hop-h2``/``2hop-grpc``: h2load -> client sidecar -(h2)-> server sidecar -(h2)-> nginx.
- ``2hop-h1``: the same two sidecars over HTTP/1.1 end to end (h2load --h1; clusters HTTP/1.1), for the
  protocol's own cost through Mizzen.
- latency: gRPC at 1000 requests per second on one stream: p50/p99 added to direct.

Run: ``pytest bench/test_http2.py --benchmark-columns=median,min,max,rounds``; the summary is printed at
the end and saved to ``bench/results/http2.json``.
"""

from __future__ import annotations

import importlib.util
import json
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
_spec.loader.exec_module(dp)

RESULTS: dict[str, dict[str, Any]] = {}
H2_OPTIONS = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {"max_concurrent_streams": 1000}},
    }
}
GRPC_PATH = "/mizzen.test.Echo/Who"
STREAMS = "10"


def hop(port: int, upstream: int, http2: bool) -> dict[str, Any]:
    boot = dp.sidecar_bootstrap(port, upstream)
    if http2:
        boot["static_resources"]["clusters"][0]["typed_extension_protocol_options"] = H2_OPTIONS
    return boot


class H2Rig(dp.Rig):  # type: ignore[misc,name-defined]
    def proxy(self, name: str, core: str, boot: dict[str, Any]) -> int:
        port = boot["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
        path = self.tmp / f"{name}.json"
        path.write_text(json.dumps(boot))
        argv = [dp.PROXY, "-c", str(path), "-l", "warning"]
        for flag in ("--admin-port", "--health-port", "--metrics-port"):
            argv += [flag, str(dp.free_port())]
        proc = self.spawn(core, argv, name)
        dp.wait_port(port)
        self.pids[name] = [proc.pid]
        return int(port)


@pytest.fixture(scope="module")
def rig() -> Iterator[H2Rig]:
    tmp = Path(tempfile.mkdtemp(prefix="mzb-h2-"))
    tmp.chmod(0o755)
    r = H2Rig(tmp)
    (tmp / "who.bin").write_bytes(b"\x00\x00\x00\x00\x05hello")  # a gRPC message frame: "hello"
    (tmp / "req.bin").write_bytes(b"\x00\x00\x00\x00\x02hi")
    try:
        # POST to a static file is a 405 in nginx; error_page turns it into the file (the canned reply).
        app = r.nginx(
            "app",
            dp.PROXY_CORE,
            'server { listen 127.0.0.1:PORT http2; location / { return 200 "hello world\\n"; }'
            f" location {GRPC_PATH} {{ error_page 405 =200 $uri; default_type application/grpc;"
            f" alias {tmp}/who.bin; add_trailer grpc-status 0 always; }} }}",
        )
        app_h1 = r.nginx("app-h1", dp.PROXY_CORE, dp.APP)
        server = r.proxy("server-h2", dp.PROXY_CORE, hop(dp.free_port(), app, http2=True))
        client = r.proxy("client-h2", dp.LOAD_CORE, hop(dp.free_port(), server, http2=True))
        server_h1 = r.proxy("server-h1", dp.PROXY_CORE, hop(dp.free_port(), app_h1, http2=False))
        client_h1 = r.proxy("client-h1", dp.LOAD_CORE, hop(dp.free_port(), server_h1, http2=False))
        sidecars = r.pids["client-h2"] + r.pids["server-h2"]
        for variant, port, pids in (
            ("direct-h2", app, []),
            ("direct-grpc", app, []),
            ("2hop-h2", client, sidecars),
            ("2hop-grpc", client, sidecars),
            ("2hop-h1", client_h1, r.pids["client-h1"] + r.pids["server-h1"]),
        ):
            r.ports[variant] = port
            r.pids[variant] = pids
        yield r
    finally:
        r.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def h2load(rig: H2Rig, variant: str, *args: str) -> str:
    if variant.endswith("h1"):
        return str(dp.h2load(rig.ports[variant], *args))
    url = f"http://127.0.0.1:{rig.ports[variant]}" + (GRPC_PATH if variant.endswith("grpc") else "/")
    grpc = (
        ["-d", str(rig.tmp / "req.bin"), "-H", "content-type: application/grpc", "-H", "te: trailers"]
        if variant.endswith("grpc")
        else []
    )
    proc = subprocess.run(
        ["taskset", "-c", dp.LOAD_CORE, "h2load", *grpc, *args, url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    assert proc.returncode == 0 and m and m.group(4) == "0", out + proc.stderr
    return out


VARIANTS = ["direct-h2", "2hop-h2", "direct-grpc", "2hop-grpc", "2hop-h1"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.benchmark(group="http2-throughput")
def test_throughput(benchmark: Any, rig: H2Rig, variant: str) -> None:
    streams = [] if variant.endswith("h1") else ["-m", STREAMS]
    h2load(rig, variant, "-n", "5000", "-c", "16", "-t", "1", *streams)  # warm: pools filled
    pids = rig.pids[variant]
    cpu: list[int] = []

    def run() -> None:
        before = sum(dp.cpu_ns(p) for p in pids)
        h2load(rig, variant, "-n", str(dp.REQUESTS), "-c", "16", "-t", "1", *streams)
        cpu.append(sum(dp.cpu_ns(p) for p in pids) - before)

    benchmark.pedantic(run, rounds=dp.ROUNDS, iterations=1)
    median = sorted(benchmark.stats.stats.data)[len(benchmark.stats.stats.data) // 2]
    info = {
        "rps": round(dp.REQUESTS / median),
        "cpu_us_per_request": round(min(cpu) / dp.REQUESTS / 1000, 2) if pids else None,
    }
    benchmark.extra_info.update(info)
    RESULTS.setdefault("throughput", {})[variant] = info


@pytest.mark.parametrize("variant", ["direct-grpc", "2hop-grpc"])
@pytest.mark.benchmark(group="grpc-latency-1000rps")
def test_grpc_latency_at_1000_rps(benchmark: Any, rig: H2Rig, variant: str) -> None:
    log = rig.tmp / f"latency-{variant}.log"
    seconds = dp.LATENCY_SECONDS

    def run() -> None:
        h2load(
            rig,
            variant,
            "-c",
            "1",
            "-m",
            "1",
            "-t",
            "1",
            "--rps",
            "1000",
            "-D",
            str(seconds),
            f"--log-file={log}",
        )

    benchmark.pedantic(run, rounds=1, iterations=1)
    lat = dp.latencies(log)
    assert len(lat) > seconds * 900
    info = {"p50_ms": round(lat[len(lat) // 2], 3), "p99_ms": round(lat[int(len(lat) * 0.99)], 3)}
    benchmark.extra_info.update(info)
    RESULTS.setdefault("grpc-latency-1000rps", {})[variant] = info


def bench_summary() -> str:
    rows = RESULTS.get("throughput", {})
    lines = []
    if rows:
        lines.append(
            "throughput (16 conns x 10 streams): "
            + ", ".join(
                f"{v} {r['rps']} rps"
                + (f" ({r['cpu_us_per_request']} us/req)" if r.get("cpu_us_per_request") else "")
                for v, r in rows.items()
            )
        )
        for proto in ("h2", "grpc"):
            d, m = rows.get(f"direct-{proto}"), rows.get(f"2hop-{proto}")
            if d and m:
                lines.append(f"{proto}: two sidecars at {m['rps'] / d['rps']:.2f}x direct")
    lat = RESULTS.get("grpc-latency-1000rps", {})
    if "direct-grpc" in lat and "2hop-grpc" in lat:
        d, m = lat["direct-grpc"], lat["2hop-grpc"]
        lines.append(
            f"gRPC at 1000 rps: two sidecars add p50 +{m['p50_ms'] - d['p50_ms']:.3f} ms, "
            f"p99 +{m['p99_ms'] - d['p99_ms']:.3f} ms"
        )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "http2.json").write_text(json.dumps(RESULTS, indent=1))
    return "\n".join(lines)
