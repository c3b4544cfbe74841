"""``mizzen-cni agent``: command line of the node agent the CNI DaemonSet runs."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from cni.agent import kubeconfig
from cni.agent.daemon import Options, run
from cni.agent.reconcile import Settings
from cni.agent.repair import Mode
from mizzen import logs


def default_plugin_binary() -> Path | None:
    """``mizzen-cni`` beside the running interpreter (a venv or bundle), else on PATH."""
    beside = Path(sys.executable).parent / "mizzen-cni"
    if beside.is_file():
        return beside
    found = shutil.which("mizzen-cni")
    return Path(found) if found else None


def _namespaces(value: str) -> list[str]:
    return [n.strip() for n in value.split(",") if n.strip()]


def _interval(value: str) -> float:
    seconds = float(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mizzen-cni agent",
        description="Install the mizzen-cni plugin on this node, keep it installed, repair uncaptured pods.",
    )
    p.add_argument(
        "--cni-bin-dir",
        type=Path,
        default=Path("/host/opt/cni/bin"),
        help="where the runtime looks for CNI plugins, as mounted in this container",
    )
    p.add_argument(
        "--plugin-binary",
        type=Path,
        default=None,
        help="the executable to copy (default: mizzen-cni beside the interpreter, or on PATH)",
    )
    p.add_argument(
        "--cni-conf-dir",
        type=Path,
        default=Path("/host/etc/cni/net.d"),
        help="the runtime's CNI config directory, as mounted in this container",
    )
    p.add_argument(
        "--host-cni-conf-dir",
        type=PurePosixPath,
        default=PurePosixPath("/etc/cni/net.d"),
        help="the same directory as the host sees it (used for paths written into configs)",
    )
    p.add_argument(
        "--service-account-dir",
        type=Path,
        default=kubeconfig.DEFAULT_SA_DIR,
        help="token and ca.crt for the plugin's kubeconfig; when absent, none is written",
    )
    p.add_argument("--plugin-log-level", default="info", help="log_level written into the plugin's config")
    p.add_argument(
        "--exclude-namespaces",
        type=_namespaces,
        default=["kube-system"],
        help="comma-separated namespaces the plugin never captures",
    )
    p.add_argument("--watch-interval", type=_interval, default=1.0, help="seconds between checks of the node")
    p.add_argument("--keep-on-exit", action="store_true", help="leave the plugin installed when stopped")
    p.add_argument("--health-addr", default="0.0.0.0", help="address of the /readyz and /healthz server")
    p.add_argument("--health-port", type=int, default=15181, help="port of the probe server (0: any free)")
    p.add_argument(
        "--repair-mode",
        type=Mode,
        choices=list(Mode),
        default=Mode.APPLY,
        help="pods found without capture: program it (apply), label them (label), or nothing",
    )
    p.add_argument("--repair-interval", type=_interval, default=10.0, help="seconds between repair passes")
    p.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME"),
        help="this node's name, for listing its pods (default: $NODE_NAME)",
    )
    p.add_argument(
        "--proc-root",
        type=Path,
        default=Path("/proc"),
        help="the host's /proc (the agent needs hostPID to find pods' network namespaces)",
    )
    p.add_argument(
        "--no-untaint",
        dest="untaint",
        action="store_false",
        help="leave the cni.mizzen.io/not-ready taint alone (by default it is removed once capture is ready)",
    )
    p.add_argument(
        "--log-level", default=None, help="the agent's own log level (default: $MIZZEN_LOG_LEVEL or info)"
    )
    return p


def options_from_args(args: argparse.Namespace, plugin_binary: Path, env: Mapping[str, str]) -> Options:
    """Turn parsed arguments into :class:`Options`."""
    settings = Settings(
        conf_dir=args.cni_conf_dir,
        bin_dir=args.cni_bin_dir,
        plugin_binary=plugin_binary,
        host_conf_dir=args.host_cni_conf_dir,
        sa_dir=args.service_account_dir,
        plugin_log_level=args.plugin_log_level,
        exclude_namespaces=tuple(args.exclude_namespaces),
        env=dict(env),
    )
    return Options(
        settings=settings,
        watch_interval=args.watch_interval,
        keep_on_exit=args.keep_on_exit,
        health_addr=args.health_addr,
        health_port=args.health_port,
        repair_mode=args.repair_mode,
        repair_interval=args.repair_interval,
        node_name=args.node_name,
        proc_root=args.proc_root,
        untaint=args.untaint,
    )


async def _serve(opts: Options) -> int:
    log = logs.get("cni.agent")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("signal received", signal=sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    return await run(opts, stop)


def main(argv: list[str]) -> int:
    """Entry point of ``mizzen-cni agent``; returns the exit code (0 after a clean stop on SIGTERM/SIGINT)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    logs.setup(args.log_level)
    log = logs.get("cni.agent")
    plugin_binary = args.plugin_binary or default_plugin_binary()
    if plugin_binary is None or not plugin_binary.is_file():
        log.error("plugin executable not found", path=str(plugin_binary) if plugin_binary else None)
        return 1
    opts = options_from_args(args, plugin_binary, os.environ)
    log.info(
        "starting",
        conf_dir=str(opts.settings.conf_dir),
        bin_dir=str(opts.settings.bin_dir),
        plugin=str(plugin_binary),
        repair=str(opts.repair_mode),
    )
    return asyncio.run(_serve(opts))
