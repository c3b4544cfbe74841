"""What mutual TLS costs: the two-hop path (client sidecar -> server sidecar -> app) in plain text and over
mesh mTLS, side by side in one run, on the data-path rig of ``test_dataplane.py`` (same cores, same app,
same load generator); the handshake rate of the server sidecar (full and resumed); and the CA's
certificate issuance rate (signing alone, and the whole gRPC round trip with token authentication).

- throughput: 16 and 64 keep-alive connections; rps and proxy CPU per request (both sidecars).
- latency: 1000 rps on one connection; p50/p99 added to direct, vCPU per 1000 rps (both sidecars).
- handshakes: new connections to the server sidecar's mTLS listener from a client on the load core, each
  carrying one request; handshakes/s and the sidecar's CPU per handshake.
- issuance: certificates per second.

Run: ``pytest bench/test_mtls.py --benchmark-columns=median,min,max,rounds``; the summary is printed at the
end and saved to ``bench/results/mtls.json``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
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

from controller.ca.authority import (  # noqa: E402
    CaMaterial,
    CertificateAuthority,
    key_pem,
    make_csr,
    new_key,
    spiffe_id,
)

RESULTS: dict[str, dict[str, Any]] = {}
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
CLIENT_ID = spiffe_id("cluster.local", "default", "client")
SERVER_ID = spiffe_id("cluster.local", "default", "server")
HANDSHAKES = 2000


def issue(ca: CertificateAuthority, directory: Path, name: str, identity: str) -> tuple[str, str]:
    key = new_key()
    chain = ca.sign(make_csr(key, identity), identity, ttl=24 * 3600)
    (directory / f"{name}.pem").write_text("".join(chain[:-1]))
    (directory / f"{name}.key").write_bytes(key_pem(key))
    return str(directory / f"{name}.pem"), str(directory / f"{name}.key")


def common(cert: tuple[str, str], root: str, alpn: list[str], san: str | None = None) -> dict[str, Any]:
    validation: dict[str, Any] = {"trusted_ca": {"filename": root}}
    if san:
        validation["match_subject_alt_names"] = [{"exact": san}]
    return {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
        "tls_certificates": [
            {"certificate_chain": {"filename": cert[0]}, "private_key": {"filename": cert[1]}}
        ],
        "validation_context": validation,
        "alpn_protocols": alpn,
    }


def client_bootstrap(port: int, upstream: int, cert: tuple[str, str], root: str) -> dict[str, Any]:
    """The client sidecar: the outbound hop of test_dataplane, its cluster originating mesh mTLS."""
    boot = dp.sidecar_bootstrap(port, upstream)
    cluster = boot["static_resources"]["clusters"][0]
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": UPSTREAM_TLS,
            "common_tls_context": common(cert, root, ["istio-peer-exchange", "istio"], SERVER_ID),
            "sni": "outbound_.80_._.svc0.default.svc.cluster.local",
        },
    }
    return boot


def server_bootstrap(port: int, app: int, cert: tuple[str, str], root: str) -> dict[str, Any]:
    """The server sidecar: the same hop behind a listener that terminates mesh mTLS (client cert required)."""
    boot = dp.sidecar_bootstrap(port, app)
    chain = boot["static_resources"]["listeners"][0]["filter_chains"][0]
    chain["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS,
            "common_tls_context": common(cert, root, ["istio-peer-exchange", "istio", "istio-http/1.1"]),
            "require_client_certificate": True,
        },
    }
    boot["static_resources"]["listeners"][0]["traffic_direction"] = "INBOUND"
    return boot


class MtlsRig(dp.Rig):  # type: ignore[misc,name-defined]
    def proxy(self, name: str, core: str, boot: dict[str, Any], port: int) -> int:
        path = self.tmp / f"{name}.json"
        path.write_text(json.dumps(boot))
        argv = [
            dp.PROXY,
            "-c",
            str(path),
            "--admin-port",
            str(dp.free_port()),
            "--health-port",
            str(dp.free_port()),
            "--metrics-port",
            str(dp.free_port()),
            "-l",
            "warning",
        ]
        proc = self.spawn(core, argv, name)
        dp.wait_port(port)
        self.pids[name] = [proc.pid]
        self.ports[name] = port
        return port


@pytest.fixture(scope="module")
def rig() -> Iterator[MtlsRig]:
    tmp = Path(tempfile.mkdtemp(prefix="mzb-mtls-"))
    tmp.chmod(0o755)
    r = MtlsRig(tmp)
    ca = CertificateAuthority(CaMaterial.self_signed())
    root = tmp / "root.pem"
    root.write_bytes(ca.root_pem)
    try:
        app = r.nginx("app", dp.PROXY_CORE, dp.APP)
        r.ports["direct"] = app
        r.pids["direct"] = []
        plain_server = r.mizzen("plain-server", dp.PROXY_CORE, app)
        r.mizzen("plain-2hop", dp.LOAD_CORE, plain_server)
        r.pids["plain-2hop"] = r.pids["plain-2hop"] + r.pids["plain-server"]
        server_cert = issue(ca, tmp, "server", SERVER_ID)
        client_cert = issue(ca, tmp, "client", CLIENT_ID)
        r.client_cert = client_cert  # type: ignore[attr-defined]
        r.root = str(root)  # type: ignore[attr-defined]
        mtls_server = dp.free_port()
        r.proxy(
            "mtls-server",
            dp.PROXY_CORE,
            server_bootstrap(mtls_server, app, server_cert, str(root)),
            mtls_server,
        )
        front = dp.free_port()
        r.proxy(
            "mtls-2hop", dp.LOAD_CORE, client_bootstrap(front, mtls_server, client_cert, str(root)), front
        )
        r.pids["mtls-2hop"] = r.pids["mtls-2hop"] + r.pids["mtls-server"]
        yield r
    finally:
        r.stop()
        shutil.rmtree(tmp, ignore_errors=True)


VARIANTS = ["direct", "plain-2hop", "mtls-2hop"]


@pytest.mark.parametrize("conns", [16, 64])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.benchmark(group="mtls-throughput")
def test_throughput(benchmark: Any, rig: MtlsRig, variant: str, conns: int) -> None:
    port = rig.ports[variant]
    dp.h2load(port, "-n", "5000", "-c", str(conns), "-t", "1")
    pids = rig.pids[variant]
    cpu: list[int] = []

    def run() -> None:
        before = sum(dp.cpu_ns(p) for p in pids)
        dp.h2load(port, "-n", str(dp.REQUESTS), "-c", str(conns), "-t", "1")
        cpu.append(sum(dp.cpu_ns(p) for p in pids) - before)

    benchmark.pedantic(run, rounds=dp.ROUNDS, iterations=1)
    median = sorted(benchmark.stats.stats.data)[len(benchmark.stats.stats.data) // 2]
    info = {
        "rps": round(dp.REQUESTS / median),
        "cpu_us_per_request": round(min(cpu) / dp.REQUESTS / 1000, 2) if pids else None,
    }
    benchmark.extra_info.update(info)
    RESULTS.setdefault(f"throughput-c{conns}", {})[variant] = info


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.benchmark(group="mtls-latency-1000rps")
def test_latency_at_1000_rps(benchmark: Any, rig: MtlsRig, variant: str) -> None:
    port = rig.ports[variant]
    log = rig.tmp / f"latency-{variant}.log"
    pids = rig.pids[variant]
    spent: list[int] = []
    seconds = dp.LATENCY_SECONDS

    def run() -> None:
        before = sum(dp.cpu_ns(p) for p in pids)
        dp.h2load(port, "-c", "1", "-t", "1", "--rps", "1000", "-D", str(seconds), f"--log-file={log}")
        spent.append(sum(dp.cpu_ns(p) for p in pids) - before)

    benchmark.pedantic(run, rounds=1, iterations=1)
    lat = dp.latencies(log)
    assert len(lat) > seconds * 900
    info = {
        "p50_ms": round(lat[len(lat) // 2], 3),
        "p99_ms": round(lat[int(len(lat) * 0.99)], 3),
        "vcpu_per_1000_rps": round(spent[0] / 1e9 / seconds / (len(lat) / seconds / 1000), 3)
        if pids
        else None,
    }
    benchmark.extra_info.update(info)
    RESULTS.setdefault("latency-1000rps", {})[variant] = info


HANDSHAKER = """
import socket, ssl, sys, time
port, n, cert, key, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
resume, plain = sys.argv[6] == "1", sys.argv[6] == "plain"
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False
ctx.load_cert_chain(cert, key); ctx.load_verify_locations(root); ctx.set_alpn_protocols(["istio"])
session = None; reused = 0
start = time.perf_counter()
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if not plain:
        s = ctx.wrap_socket(s, session=session)
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: svc0\\r\\nConnection: close\\r\\n\\r\\n")
    while s.recv(4096):
        pass
    reused += 0 if plain else s.session_reused
    if resume:
        session = s.session
    s.close()
print(n / (time.perf_counter() - start), reused)
"""


@pytest.mark.parametrize("mode", ["plain", "full", "resumed"])
@pytest.mark.benchmark(group="mtls-handshakes")
def test_handshake_rate(benchmark: Any, rig: MtlsRig, mode: str) -> None:
    """A connection per request: ``plain`` (no TLS, the baseline), a ``full`` mTLS handshake, or a
    ``resumed`` one (TLS 1.3 session ticket)."""
    server = "plain-server" if mode == "plain" else "mtls-server"
    port = rig.ports[server]
    cert, key = rig.client_cert  # type: ignore[attr-defined]
    pid = rig.pids[server][0]
    rates: list[float] = []
    cpu: list[int] = []
    reused: list[int] = []

    def run() -> None:
        before = dp.cpu_ns(pid)
        out = subprocess.run(
            [
                "taskset",
                "-c",
                dp.LOAD_CORE,
                sys.executable,
                "-c",
                HANDSHAKER,
                str(port),
                str(HANDSHAKES),
                cert,
                key,
                rig.root,  # type: ignore[attr-defined]
                {"plain": "plain", "full": "0", "resumed": "1"}[mode],
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout.split()
        cpu.append(dp.cpu_ns(pid) - before)
        rates.append(float(out[0]))
        reused.append(int(out[1]))

    benchmark.pedantic(run, rounds=2, iterations=1)
    assert (reused[-1] >= HANDSHAKES - 1) if mode == "resumed" else reused[-1] == 0
    info = {
        "handshakes_per_s": round(max(rates)),
        "server_cpu_us_per_handshake": round(min(cpu) / HANDSHAKES / 1000, 1),
    }
    benchmark.extra_info.update(info)
    RESULTS.setdefault("handshakes", {})[mode] = info


@pytest.mark.benchmark(group="ca")
def test_ca_issuance_rate(benchmark: Any, tmp_path: Path) -> None:
    import grpc

    from controller.ca.proto import ca_pb2
    from controller.ca.service import CertificateService
    from controller.ca.tokens import LocalTokens

    ca = CertificateAuthority(CaMaterial.self_signed())
    ident = spiffe_id("cluster.local", "default", "bench")
    csrs = [make_csr(new_key(), ident) for _ in range(200)]

    def sign_all() -> None:
        for csr in csrs:
            ca.sign(csr, ident, 3600)

    benchmark.pedantic(sign_all, rounds=3, iterations=1)
    signing = len(csrs) / min(benchmark.stats.stats.data)

    tokens = LocalTokens.load_or_create(tmp_path)
    token = tokens.issue("default", "bench")

    async def over_grpc() -> float:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((CertificateService(ca, tokens).handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary(
                    "/istio.v1.auth.IstioCertificateService/CreateCertificate",
                    request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
                    response_deserializer=ca_pb2.IstioCertificateResponse.FromString,
                )
                metadata = (("authorization", f"Bearer {token}"),)
                start = time.perf_counter()
                await asyncio.gather(
                    *(call(ca_pb2.IstioCertificateRequest(csr=c.decode()), metadata=metadata) for c in csrs)
                )
                return len(csrs) / (time.perf_counter() - start)
        finally:
            await server.stop(None)

    rpc = asyncio.run(over_grpc())
    info = {"signed_per_s": round(signing), "issued_over_grpc_per_s": round(rpc)}
    benchmark.extra_info.update(info)
    RESULTS["ca"] = {"issuance": info}


def bench_summary() -> str:
    lines = []
    for group in ("throughput-c16", "throughput-c64"):
        rows = RESULTS.get(group, {})
        if rows:
            lines.append(
                f"{group}: "
                + ", ".join(
                    f"{v} {r['rps']} rps"
                    + (f" ({r['cpu_us_per_request']} us/req)" if r.get("cpu_us_per_request") else "")
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
    if RESULTS.get("handshakes"):
        lines.append(f"handshakes: {RESULTS['handshakes']}")
    if RESULTS.get("ca"):
        lines.append(f"ca: {RESULTS['ca']}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    if RESULTS:
        (out / "mtls.json").write_text(json.dumps(RESULTS, indent=1))
    return "\n".join(lines)
