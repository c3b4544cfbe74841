"""The agent's lifetime: probes up, watch and repair loops running, clean removal on stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cni.agent import kubeconfig
from cni.agent.health import Health, HealthServer
from cni.agent.reconcile import Reconciler, Settings
from cni.agent.repair import Mode, PodSource, Repairer
from cni.agent.untaint import NodeClient, untaint_when_ready
from mizzen import logs


@dataclass(frozen=True, slots=True)
class Options:
    """Everything the agent runs with; :mod:`cni.agent.cli` builds it from the command line."""

    settings: Settings
    watch_interval: float = 1.0
    keep_on_exit: bool = False
    health_addr: str = "0.0.0.0"
    health_port: int = 15181
    repair_mode: Mode = Mode.APPLY
    repair_interval: float = 10.0
    node_name: str | None = None
    proc_root: Path = Path("/proc")
    untaint: bool = True


async def _watch(reconciler: Reconciler, health: Health, interval: float) -> None:
    # Polling rather than inotify: the files we guard are replaced by rename, by
    # symlink swaps (projected service-account volumes) or by a whole directory being
    # remounted, all of which inotify watches lose track of; a pass that finds
    # nothing to do costs a few stats and small reads, and needs no extra dependency.
    while True:
        health.record(await asyncio.to_thread(reconciler.reconcile))
        await asyncio.sleep(interval)


async def _repair(repairer: Repairer, interval: float, log: Any) -> None:
    while True:
        try:
            await repairer.run_once()
        except Exception as exc:  # an unreachable API must not stop the agent; try again next interval
            log.warning("repair pass failed", error=str(exc))
        await asyncio.sleep(interval)


def default_pod_source(opts: Options, env: Mapping[str, str], log: Any) -> PodSource | None:
    """The Kubernetes source in a cluster with a known node name, else None (reason logged)."""
    from cni.agent.kube import ApiClient, KubePodSource

    sa_dir = opts.settings.sa_dir
    if not kubeconfig.has_service_account(sa_dir):
        log.info("pod repair disabled: no service account", sa_dir=str(sa_dir))
        return None
    if not opts.node_name:
        log.warning("pod repair disabled: node name unknown (set --node-name or NODE_NAME)")
        return None
    try:
        client = ApiClient.in_cluster(sa_dir, env)
    except kubeconfig.KubeconfigError as exc:
        log.warning("pod repair disabled", error=str(exc))
        return None
    return KubePodSource(client, opts.node_name, opts.proc_root)


def default_node_client(opts: Options, env: Mapping[str, str], log: Any) -> NodeClient | None:
    """The API client for untainting this node, when running in a cluster."""
    from cni.agent.kube import ApiClient

    if not kubeconfig.has_service_account(opts.settings.sa_dir):
        return None
    try:
        return ApiClient.in_cluster(opts.settings.sa_dir, env)
    except kubeconfig.KubeconfigError as exc:
        log.warning("node untaint disabled", error=str(exc))
        return None


async def run(
    opts: Options,
    stop: asyncio.Event,
    *,
    pod_source: PodSource | None = None,
    health_server_started: asyncio.Future[int] | None = None,
    untaint_client: NodeClient | None = None,
) -> int:
    """Run until ``stop`` is set, then remove what was installed (unless ``keep_on_exit``).

    ``pod_source`` overrides the default (local mode passes its own); the bound
    health port is logged and, when given, set on ``health_server_started``.
    Returns the process exit code: 0, or 1 when a loop crashed or cleanup failed.
    """
    log = logs.get("cni.agent")
    reconciler = Reconciler(opts.settings, log)
    health = Health(stale_after=max(30.0, 10 * opts.watch_interval))
    server = HealthServer(health, opts.health_addr, opts.health_port)
    port = await server.start()
    log.info("health server listening", addr=opts.health_addr, port=port)
    if health_server_started is not None:
        health_server_started.set_result(port)

    watch = _watch(reconciler, health, opts.watch_interval)
    tasks: list[asyncio.Task[object]] = [asyncio.create_task(watch, name="watch")]
    if opts.repair_mode is not Mode.OFF:
        source = pod_source or default_pod_source(opts, opts.settings.env, log)
        if source is not None:
            repairer = Repairer(source, opts.repair_mode, opts.settings.exclude_namespaces, log)
            tasks.append(asyncio.create_task(_repair(repairer, opts.repair_interval, log), name="repair"))

    node_client = untaint_client or default_node_client(opts, opts.settings.env, log)
    if opts.untaint and node_client is not None and opts.node_name:
        untaint = untaint_when_ready(node_client, opts.node_name, health, log)
        tasks.append(asyncio.create_task(untaint, name="untaint"))

    stopped: asyncio.Task[object] = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
    rc = 0
    for task in tasks:
        if task in done:  # the loops never return: this one died of a bug
            log.error("agent loop crashed", loop=task.get_name(), error=repr(task.exception()))
            rc = 1
        task.cancel()
    stopped.cancel()
    for task in [*tasks, stopped]:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await server.stop()

    if opts.keep_on_exit:
        await asyncio.to_thread(reconciler.close)
        log.info("stopping, leaving the plugin installed")
    else:
        log.info("stopping, removing the plugin")
        if not await asyncio.to_thread(reconciler.uninstall):
            rc = 1
    return rc
