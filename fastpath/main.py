"""``mizzen-proxy -c BOOTSTRAP``: the sidecar process (Envoy's flags where they exist)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from pathlib import Path

from fastpath import admin, app_health, bootstrap, bootstrap_gen, localhttp, tap, tracing
from fastpath import workers as workers_mod
from fastpath.certs import CertConfig, CertificateClient, ReadyGate
from fastpath.config import ConfigError
from fastpath.proxy import DEFAULT_MAX_CONNECTIONS, Proxy
from fastpath.stats import Identity, Stats
from mizzen import logs

DEFAULT_TOKEN_PATH = "/var/run/secrets/tokens/istio-token"  # where Istio's injector mounts it


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mizzen-proxy", description="The Mizzen sidecar proxy.")
    p.add_argument("-c", "--config-path", help="bootstrap file, YAML or JSON, Envoy's shape")
    p.add_argument(
        "--xds-address",
        metavar="HOST:PORT",
        help="in a pod: build the bootstrap from the pod's env and follow this controller (instead of -c)",
    )
    p.add_argument(
        "--bootstrap-out", metavar="PATH", help="with --xds-address: also write the bootstrap here"
    )
    p.add_argument(
        "--proxy-type",
        choices=("sidecar", "router"),
        default="sidecar",
        help="with --xds-address: router runs a gateway (Istio's 'proxy router'): no capture, the ports of "
        "the Gateways selecting the pod's labels",
    )
    p.add_argument(
        "--wait-ready",
        action="store_true",
        help="wait until the sidecar on --health-port is ready, then exit (the injected postStart hook)",
    )
    p.add_argument("--wait-timeout-s", type=float, default=300.0, help="how long --wait-ready waits")
    p.add_argument(
        "--admin-port",
        type=int,
        default=None,
        help="admin port on 127.0.0.1 (default: bootstrap's, or 15000)",
    )
    p.add_argument("--health-port", type=int, default=15021, help="readiness: /healthz/ready")
    p.add_argument("--metrics-port", type=int, default=15020, help="Prometheus: /stats/prometheus")
    p.add_argument(
        "--drain-time-s",
        type=float,
        default=5.0,
        help="how long connections may finish after SIGTERM, or TCP ones after their listener changed",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="downstream connections served at once; more are closed on accept",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="worker processes sharing the listeners (gateways); a sidecar runs one",
    )
    p.add_argument("-l", "--log-level", default=None, help="trace, debug, info, warning, error")
    p.add_argument("--workload", default=None, help="this pod's workload name (default: node metadata)")
    p.add_argument("--namespace", default=None, help="this pod's namespace (default: node metadata)")
    ca = p.add_argument_group("workload certificate", "mutual TLS: a certificate from the mesh's CA")
    ca.add_argument(
        "--ca-address",
        default=os.environ.get("CA_ADDR"),
        help="the CA (host:port); default: $CA_ADDR, else the xDS server",
    )
    ca.add_argument(
        "--ca-root-cert",
        default=os.environ.get("CA_ROOT_CERT"),
        help="verify the CA over TLS with this root (port 15012); without it the CA is asked in plain text",
    )
    ca.add_argument(
        "--token-path",
        default=os.environ.get("TOKEN_PATH", DEFAULT_TOKEN_PATH),
        help="the pod's service-account token (audience istio-ca); no token, no certificate",
    )
    ca.add_argument("--trust-domain", default=os.environ.get("TRUST_DOMAIN", "cluster.local"))
    ca.add_argument(
        "--cert-ttl",
        type=float,
        default=float(os.environ.get("SECRET_TTL_S", 0)),
        help="asked lifetime of the certificate, seconds (0: the CA's default, 24h)",
    )
    return p


def certificate_client(args: argparse.Namespace, boot: bootstrap.Bootstrap) -> CertificateClient | None:
    """The certificate client, when this proxy has a token and a CA to show it to."""
    token = Path(args.token_path)
    address = args.ca_address or (f"{boot.ads.host}:{boot.ads.port}" if boot.ads is not None else None)
    meta = boot.node_metadata
    namespace = args.namespace or meta.get("NAMESPACE")
    account = meta.get("SERVICE_ACCOUNT")
    if not token.exists() or address is None or not namespace or not account:
        return None
    return CertificateClient(
        CertConfig(
            ca_address=address,
            token_path=token,
            identity=f"spiffe://{args.trust_domain}/ns/{namespace}/sa/{account}",
            ca_root=Path(args.ca_root_cert) if args.ca_root_cert else None,
            ttl=args.cert_ttl,
            cluster_id=str(meta.get("CLUSTER_ID") or "Kubernetes"),
        )
    )


async def run(args: argparse.Namespace, worker: int = 0, workers: int = 1, supervisor: int = 0) -> int:
    log = logs.get("proxy")
    try:
        if args.xds_address:
            boot = bootstrap_gen.build(
                args.xds_address, args.bootstrap_out if worker == 0 else None, args.proxy_type
            )
        else:
            boot = bootstrap.load(args.config_path)
        probers = app_health.parse(os.environ.get(app_health.ENV))
    except (
        bootstrap.BootstrapError,
        ConfigError,
        bootstrap_gen.BootstrapGenError,
        app_health.ProberError,
    ) as exc:
        log.error("bootstrap rejected", error=str(exc))
        return 1
    identity = Identity.from_node(boot.node_metadata)
    overrides = {k: v for k, v in (("workload", args.workload), ("namespace", args.namespace)) if v}
    identity = dataclasses.replace(identity, **overrides)
    tracing.set_local_node(boot.proto.node.id, identity)
    proxy = Proxy(
        Stats(identity),
        max_connections=args.max_connections,
        reuse_port=workers > 1,
        drain_time_s=args.drain_time_s,
    )
    certs = certificate_client(args, boot)
    if certs is not None:
        gate = ReadyGate()
        proxy.ready = gate  # ready once both the config and the first certificate are in
        certs.start(gate)
        log.info(
            "requesting a workload certificate", identity=certs.config.identity, ca=certs.config.ca_address
        )
    quit_event = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_error(_: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        # A failure inside a connection's callbacks closes that connection; it must never be silent.
        exc = context.get("exception")
        log.error(
            "unhandled error",
            message=str(context.get("message")),
            protocol=repr(context.get("protocol")),
            exc_info=exc if isinstance(exc, BaseException) else None,
        )

    loop.set_exception_handler(on_error)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, quit_event.set)
    admin_host, admin_port = boot.admin_address or ("127.0.0.1", 15000)
    if args.admin_port is not None:
        admin_port = args.admin_port
    routes = admin.admin_routes(proxy, quit_event, worker=worker, workers=workers, supervisor=supervisor)
    if worker == 0:
        servers = [
            await localhttp.serve(
                routes, "127.0.0.1" if admin_host in ("", "0.0.0.0") else admin_host, admin_port
            ),
            await localhttp.serve(admin.health_routes(proxy), "0.0.0.0", args.health_port),
            await localhttp.serve(
                admin.metrics_routes(proxy, workers=workers, supervisor=supervisor, probers=probers),
                "0.0.0.0",
                args.metrics_port,
            ),
        ]
    else:
        servers = [await workers_mod.serve_peer(routes, supervisor, worker)]
    client = None
    channel = None
    if boot.ads is None:
        await proxy.apply(boot.static)
        log.info("proxy ready", listeners=list(proxy.servers), clusters=len(boot.static.clusters))
    else:
        from fastpath.xds_client import AdsClient

        await proxy.apply(boot.static, ready=False)
        client = AdsClient(proxy, boot)
        proxy.xds = client
        client.start()
        if worker == 0:
            # The controller relays `mizzen tap` to sidecars over this channel (fastpath.tap).
            meta = boot.node_metadata
            channel = tap.TapChannel(
                f"{boot.ads.host}:{boot.ads.port}",
                {
                    "id": boot.proto.node.id,
                    "pod": str(meta.get("NAME") or ""),
                    "namespace": identity.namespace,
                    "workload": identity.workload,
                },
                loop,
            )
            channel.start()
        log.info("waiting for config", server=f"{boot.ads.host}:{boot.ads.port}", node=boot.proto.node.id)
    await quit_event.wait()
    tap.end_all()
    if channel is not None:
        channel.stop()
    log.info("draining", connections=proxy.active_connections, deadline_s=args.drain_time_s)
    if client is not None:
        await client.stop()
    if certs is not None:
        await certs.stop()
    cut = await proxy.drain(args.drain_time_s)
    for server in servers:
        server.close()
    log.info("stopped", connections_cut=cut)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.setup(args.log_level)
    if args.wait_ready:
        return bootstrap_gen.wait_ready(args.health_port, args.wait_timeout_s)
    if not args.config_path and not args.xds_address:
        parser.error("give -c BOOTSTRAP or --xds-address HOST:PORT")
    workers = max(1, args.concurrency)
    if workers == 1:
        return _run_loop(args)
    supervisor = os.getpid()
    return workers_mod.supervise(workers, lambda i: _run_loop(args, i, workers, supervisor))


def _run_loop(args: argparse.Namespace, worker: int = 0, workers: int = 1, supervisor: int = 0) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:  # pragma: no cover - a dependency on Linux
            return asyncio.run(run(args, worker, workers, supervisor))
        return uvloop.run(run(args, worker, workers, supervisor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
