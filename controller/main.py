"""mizzen-controller: the control plane. ``--files DIR`` runs on a folder of manifests (local mode, tests);
``--kubeconfig`` or in-cluster runs on the Kubernetes API."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from mizzen import logs

log = logs.get("controller")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mizzen-controller", description=__doc__)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--files", metavar="DIR", help="read the mesh from a directory of Kubernetes-style YAML")
    src.add_argument(
        "--kubeconfig", metavar="PATH", help="read the mesh from this cluster (default: in-cluster)"
    )
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--poll-interval", type=float, default=1.0, help="files source: seconds between scans")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    p.add_argument("--xds-port", type=int, default=15010, help="plaintext xDS (ADS) port")
    p.add_argument("--debug-port", type=int, default=15014, help="debug, readiness and metrics port")
    p.add_argument(
        "--debounce-after",
        type=float,
        default=float(os.environ.get("PILOT_DEBOUNCE_AFTER", 0.1)),
        help="push once config has been quiet this long (seconds)",
    )
    p.add_argument(
        "--debounce-max",
        type=float,
        default=float(os.environ.get("PILOT_DEBOUNCE_MAX", 10.0)),
        help="never delay a push longer than this (seconds)",
    )
    p.add_argument("--push-throttle", type=int, default=100, help="proxies prepared per event-loop turn")
    p.add_argument(
        "--outbound-traffic-policy",
        choices=("ALLOW_ANY", "REGISTRY_ONLY"),
        default="ALLOW_ANY",
        help="mesh default for traffic to hosts outside the registry",
    )
    p.add_argument(
        "--mesh-config",
        metavar="FILE",
        type=Path,
        default=None,
        help="Istio's mesh config (the mesh YAML, or an istio ConfigMap), watched; default: files source: "
        "none (Istio's defaults), kube source: the istio ConfigMap in --mesh-namespace",
    )
    p.add_argument("--log-level", default=None)
    ca = p.add_argument_group("certificate authority", "workload certificates for sidecars (mutual TLS)")
    ca.add_argument(
        "--ca-dir",
        type=Path,
        default=None,
        help="files source: the CA's key and certificate and the node's token signer (made on first "
        "start; Istio's cacerts files there make it a plug-in CA); default: <files>/../mizzen-ca",
    )
    ca.add_argument("--no-ca", action="store_true", help="do not serve certificates")
    ca.add_argument("--secure-port", type=int, default=15012, help="xDS and CA over TLS")
    ca.add_argument("--trust-domain", default="cluster.local", help="the SPIFFE trust domain")
    ca.add_argument(
        "--workload-cert-ttl",
        type=float,
        default=float(os.environ.get("DEFAULT_WORKLOAD_CERT_TTL_S", 24 * 3600)),
        help="lifetime of workload certificates when a CSR does not ask (seconds)",
    )
    ca.add_argument(
        "--ca-namespace",
        default=None,
        help="kube source: where the CA Secrets (istio-ca-secret, cacerts) live; default: --mesh-namespace",
    )
    hooks = p.add_argument_group("webhooks", "sidecar injection and validation (Kubernetes API only)")
    hooks.add_argument("--webhook-port", type=int, default=None, help="serve /inject and /validate (15017)")
    hooks.add_argument("--inject-config", type=Path, default=None, help="the injector's settings (YAML)")
    hooks.add_argument("--mesh-namespace", default="mizzen-system", help="where the controller runs")
    hooks.add_argument(
        "--webhook-cert-mode",
        choices=("secret", "files"),
        default="secret",
        help="secret: issue and renew the serving certificate; files: read it from --webhook-cert-dir",
    )
    hooks.add_argument("--webhook-cert-dir", type=Path, default=None, help="tls.crt, tls.key (cert-manager)")
    return p.parse_args(argv)


async def _source(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    if args.files:
        from controller.sources.files import FilesSource

        return FilesSource(args.files, poll_interval=args.poll_interval)
    from controller.sources.kube import KubeSource  # type: ignore[import-not-found,unused-ignore]

    return await KubeSource.connect(kubeconfig=args.kubeconfig, context=args.context)


async def _ca(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    if args.no_ca:
        return None
    from controller.ca import setup

    if args.files:
        directory = args.ca_dir or Path(args.files).resolve().parent / "mizzen-ca"
        return setup.local_ca(directory, trust_domain=args.trust_domain, ttl=args.workload_cert_ttl)
    try:
        return await setup.kube_ca(
            args.kubeconfig,
            args.context,
            namespace=args.ca_namespace or args.mesh_namespace,
            trust_domain=args.trust_domain,
            ttl=args.workload_cert_ttl,
        )
    except Exception as exc:  # xDS must go on; sidecars stay unready without certificates, and say so
        log.error(
            "certificate authority unavailable: no workload certificates will be issued",
            error=str(exc),
            hint="the controller needs get/create on secrets in its namespace, create on tokenreviews, "
            "and get/create/update on configmaps in every namespace",
        )
        return None


async def _mesh_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from controller import meshconfig

    if args.mesh_config is not None:
        try:
            return meshconfig.FileMeshConfig(args.mesh_config, poll_interval=args.poll_interval)
        except meshconfig.MeshConfigError as exc:
            raise SystemExit(f"mizzen-controller: --mesh-config: {exc}") from None
    if args.files:
        return None
    from controller.informer.kubeclient import KubeClient

    watcher = meshconfig.KubeMeshConfig(
        await KubeClient.connect(args.kubeconfig, args.context), args.mesh_namespace
    )
    await watcher.load()
    return watcher


async def run(args: argparse.Namespace) -> None:
    from controller.app import Controller

    source = await _source(args)
    ca = await _ca(args)
    mesh_config = await _mesh_config(args)
    controller = Controller(
        source,
        host=args.host,
        xds_port=args.xds_port,
        debug_port=args.debug_port,
        debounce_after=args.debounce_after,
        debounce_max=args.debounce_max,
        push_throttle=args.push_throttle,
        allow_any=args.outbound_traffic_policy == "ALLOW_ANY",
        ca=ca,
        secure_port=args.secure_port,
        mesh_config=mesh_config,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await controller.start()
    webhooks = await _start_webhooks(args)
    await stop.wait()
    log.info("shutting down")
    if webhooks is not None:
        await webhooks.stop()
    await controller.stop()


async def _start_webhooks(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    if args.webhook_port is None:
        return None
    if args.files:
        raise SystemExit("mizzen-controller: --webhook-port needs the Kubernetes API (not --files)")
    from controller.informer.kubeclient import KubeClient
    from controller.webhooks.run import Webhooks
    from controller.webhooks.server import WebhookOptions

    options = WebhookOptions(
        port=args.webhook_port,
        inject_config=args.inject_config,
        cert_mode=args.webhook_cert_mode,
        cert_dir=args.webhook_cert_dir,
        namespace=args.mesh_namespace,
        identity=os.environ.get("POD_NAME", ""),
    )
    client = await KubeClient.connect(args.kubeconfig, args.context)
    webhooks = Webhooks(options, client, host=args.host)
    await webhooks.start()
    return webhooks


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.setup(args.log_level)
    if not args.files and not args.kubeconfig and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        print("mizzen-controller: give --files DIR or --kubeconfig PATH (or run in a pod)", file=sys.stderr)
        return 2
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a Linux dependency
        pass
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
