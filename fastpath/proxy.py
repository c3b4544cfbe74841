"""The sidecar's runtime: bound listeners, the current config, clusters, connections, drain.

A connection is dispatched once, on accept, with the config that is current then: the listener's
filter chain for its (original) destination decides between the HTTP connection manager and TCP
proxying. A later config swap changes where new connections and requests go; connections and
requests in flight keep what they started with. Listeners that leave the config stop accepting and
their connections run to completion (or to the drain deadline).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable
from typing import Any

from fastpath import config as cfgmod
from fastpath.clusters import ClusterManager
from fastpath.config.listeners import FilterChainConfig, ListenerConfig
from fastpath.http_conn import DownstreamConnection
from fastpath.sockets import original_dst
from fastpath.stats import Stats
from fastpath.tcp_proxy import TcpSession, connect_upstream
from mizzen import logs

log = logs.get("proxy")

DEFAULT_MAX_CONNECTIONS = 65536


class _Refused:
    """Protocol for a connection the proxy will not serve: closed as soon as it is accepted."""

    def __init__(self, proxy: Proxy, listener: str) -> None:
        self.proxy = proxy
        self.listener = listener

    def connection_made(self, transport: Any) -> None:
        transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False


class Proxy:
    """Owns the listening sockets, the clusters and the connections of one sidecar process."""

    def __init__(
        self,
        stats: Stats | None = None,
        *,
        rand: Callable[[], float] = random.random,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.config = cfgmod.ProxyConfig()
        self.stats = stats or Stats()
        self.clusters = ClusterManager()
        self.rand = rand
        self.max_connections = max_connections
        self.loop: asyncio.AbstractEventLoop = asyncio.get_event_loop()
        self.servers: dict[str, tuple[tuple[str, int], asyncio.AbstractServer]] = {}
        self.sessions: set[TcpSession] = set()
        self.http_connections: set[DownstreamConnection] = set()
        self.ready = asyncio.Event()  # the first full config is applied and its listeners bound
        self.draining = False
        self._tasks: set[asyncio.Task[None]] = set()  # held so the loop cannot drop them mid-flight
        self._sweeper: asyncio.Task[None] | None = None
        self.xds: Any = None  # the ADS client, when the bootstrap names a control plane

    @property
    def active_connections(self) -> int:
        return len(self.sessions) + len(self.http_connections)

    # -- config ---------------------------------------------------------------------------------------

    async def apply(self, new: cfgmod.ProxyConfig, *, ready: bool = True) -> None:
        """Swap in ``new``: bind listeners it adds, close the ones it drops or moves, reconcile clusters.

        ``ready``: this config is complete (the first full set from xDS, or a static bootstrap)."""
        self.loop = asyncio.get_running_loop()
        wanted = {
            name: (lst.host, lst.port)
            for name, lst in new.listeners.items()
            if lst.bind_to_port and not self.draining
        }
        stale = [name for name in self.servers if wanted.get(name) != self.servers[name][0]]
        # Bind every new listener first; if one cannot be bound, undo the others and refuse the config
        # (the listeners in service stay as they are).
        bound: dict[str, tuple[tuple[str, int], asyncio.AbstractServer]] = {}
        try:
            for name, address in wanted.items():
                if name in self.servers and name not in stale:
                    continue
                server = await self.loop.create_server(
                    functools.partial(self._accept, name),
                    address[0] or "0.0.0.0",
                    address[1],
                    reuse_address=True,
                    backlog=1024,
                )
                bound[name] = (address, server)
        except OSError as exc:
            for _, server in bound.values():
                server.close()
            raise OSError(
                exc.errno, f"listener {name!r} on {address[0]}:{address[1]}: {exc.strerror}"
            ) from None
        for name in stale:
            _, server = self.servers.pop(name)
            server.close()
            log.info("listener removed", listener=name)
        for name, entry in bound.items():
            self.servers[name] = entry
            log.info("listener added", listener=name, address=f"{entry[0][0]}:{entry[0][1]}")
        self.clusters.update(dict(new.clusters), new.endpoints_of)
        self.config = new
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())
        if ready:
            self.ready.set()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.clusters.sweep_idle(time.monotonic())

    # -- connections ----------------------------------------------------------------------------------

    def _accept(self, listener_name: str) -> Any:
        """Protocol factory for an accepted connection; picks HTTP or TCP once the socket is known."""
        if self.active_connections >= self.max_connections:
            self.stats.named["downstream_cx_overflow"] += 1
            return _Refused(self, listener_name)
        return _Dispatcher(self, listener_name)

    def dispatch(self, listener_name: str, transport: Any) -> Any:
        """Choose what serves a new connection; returns the protocol object or None (closed)."""
        cfg = self.config
        listener = cfg.listeners.get(listener_name)
        if listener is None:
            return None
        sock = transport.get_extra_info("socket")
        local = transport.get_extra_info("sockname")
        dst: tuple[str, int] = (local[0], local[1])
        redirected = None
        if listener.use_original_dst or listener.original_dst_filter:
            try:
                redirected = original_dst(sock)
                dst = redirected
            except OSError:  # reached directly, not redirected: its own address is the destination
                pass
        target: ListenerConfig = listener
        if listener.use_original_dst:
            target = cfg.handoff(*dst) or listener
        chain = target.select_chain(*dst)
        if chain is None:
            self.stats.named["downstream_cx_no_route"] += 1
            return None
        reporter = "destination" if target.direction == "INBOUND" else "source"
        if chain.http is not None:
            return DownstreamConnection(self, chain.http, reporter, redirected or dst)
        return self._tcp_session(chain, reporter, dst)

    def _tcp_session(
        self, chain: FilterChainConfig, reporter: str, dst: tuple[str, int]
    ) -> TcpSession | None:
        tcp = chain.tcp_proxy
        assert tcp is not None
        cluster_name = tcp.pick(self.rand())
        cluster = self.clusters.get(cluster_name)
        session = TcpSession({"cluster": cluster_name, "reporter": reporter}, self._done)
        self.sessions.add(session)
        if cluster is None:
            session.response_flags = "NC"
            return session
        if cluster.original_dst:
            host, port = dst
        else:
            picked = cluster.pick()
            if picked is None:
                session.response_flags = "UH"
                return session
            host, port = picked.address, picked.port
        if cluster.connections >= cluster.max_connections:
            session.response_flags = "UO"
            return session
        session.info.update(upstream=f"{host}:{port}", original_dst=f"{dst[0]}:{dst[1]}")
        session.info["connect"] = (host, port, cluster, tcp.idle_timeout)
        return session

    def start_tcp(self, session: TcpSession) -> None:
        info = session.info
        if "connect" not in info:
            session.close()  # refused at dispatch (flag set)
            return
        host, port, cluster, idle = info.pop("connect")
        cluster.connections += 1
        self.stats.tcp_add("istio_tcp_connections_opened_total", info["reporter"], info["cluster"], "-")
        task = self.loop.create_task(self._connect(session, host, port, cluster, idle))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(
        self, session: TcpSession, host: str, port: int, cluster: Any, idle: float | None
    ) -> None:
        session.info["cluster_obj"] = cluster
        ok = await connect_upstream(
            session,
            host,
            port,
            timeout=cluster.config.connect_timeout,
            source_address=cluster.config.source_address,
            idle_timeout=idle,
        )
        if not ok:
            log.debug("upstream connect failed", upstream=f"{host}:{port}", cluster=cluster.name)
            session.close()

    def _done(self, session: TcpSession) -> None:
        self.sessions.discard(session)
        info = session.info
        cluster = info.pop("cluster_obj", None)
        if cluster is not None:
            cluster.connections -= 1
        reporter, name, flags = info["reporter"], info["cluster"], session.response_flags
        self.stats.tcp_add("istio_tcp_connections_closed_total", reporter, name, flags)
        self.stats.tcp_add("istio_tcp_received_bytes_total", reporter, name, "-", session.bytes_received)
        self.stats.tcp_add("istio_tcp_sent_bytes_total", reporter, name, "-", session.bytes_sent)
        if session.response_flags != "-":
            self.stats.named[f"cluster.{name}.upstream_cx_connect_fail"] += 1

    # -- lifecycle ------------------------------------------------------------------------------------

    def stop_listening(self) -> None:
        """Stop accepting everywhere (drain); connections in flight continue."""
        self.draining = True
        for _, server in self.servers.values():
            server.close()
        self.servers.clear()
        for conn in list(self.http_connections):
            conn.drain()

    async def drain(self, deadline: float) -> int:
        """Stop accepting, wait for connections to finish until ``deadline`` seconds; returns those cut."""
        self.stop_listening()
        end = time.monotonic() + deadline
        while self.active_connections and time.monotonic() < end:
            await asyncio.sleep(0.05)
        cut = self.active_connections
        for session in list(self.sessions):
            session.close(error=True)
        for conn in list(self.http_connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        return cut

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.config.version,
            "listeners": {name: f"{a[0]}:{a[1]}" for name, (a, _) in self.servers.items()},
            "active_connections": self.active_connections,
        }


class _Dispatcher:
    """The first protocol of an accepted connection: picks the real one in ``connection_made`` and hands
    the transport over (uvloop lets a protocol be replaced with ``set_protocol``)."""

    __slots__ = ("listener", "proxy")

    def __init__(self, proxy: Proxy, listener: str) -> None:
        self.proxy = proxy
        self.listener = listener

    def connection_made(self, transport: Any) -> None:
        proto = self.proxy.dispatch(self.listener, transport)
        if proto is None:
            transport.abort()
            return
        if isinstance(proto, TcpSession):
            transport.set_protocol(proto.downstream)
            proto.downstream.connection_made(transport)
            self.proxy.start_tcp(proto)
        else:
            transport.set_protocol(proto)
            proto.connection_made(transport)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - replaced before any data
        raise AssertionError("data before dispatch")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        pass
