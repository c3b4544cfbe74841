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
from typing import Any, NamedTuple

from fastpath import config as cfgmod
from fastpath import sniff, tap
from fastpath.clusters import ClusterManager
from fastpath.config.listeners import FilterChainConfig, ListenerConfig
from fastpath.http_conn import DownstreamConnection
from fastpath.sockets import original_dst, set_keepalive
from fastpath.stats import Stats
from fastpath.tcp_proxy import TcpRecord, TcpSession, connect_upstream
from fastpath.tls import TlsError, TlsLayer
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
        reuse_port: bool = False,
        drain_time_s: float = 5.0,
    ) -> None:
        self.config = cfgmod.ProxyConfig()
        # How long a TCP connection whose listener changed may go on before it is closed (Envoy closes
        # an updated listener's connections at the end of its drain time; --drain-time-s).
        self.drain_time_s = drain_time_s
        self._chain_owner: dict[int, bytes] = {}  # see _drain_replaced_chains
        self.stats = stats or Stats()
        self.clusters = ClusterManager()
        self.rand = rand
        self.max_connections = max_connections
        self.reuse_port = reuse_port  # worker processes share the listening ports
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
                    reuse_port=self.reuse_port or None,
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
        old = self.config
        self.config = new
        if new.listeners is not old.listeners:
            self._drain_replaced_chains()
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())
        if ready:
            self.ready.set()

    def _drain_replaced_chains(self) -> None:
        """Connections whose listener changed end, as Envoy drains them on a listener update: a changed
        policy (an AuthorizationPolicy's RBAC filter) must not live on in connections opened under the
        old one. HTTP connections finish their request and close; TCP connections, which have no request
        to wait for, are closed after the drain time. Listeners compare by content, so a resend of the
        same listener drains nothing.

        A connection is known by the compiled chain it was accepted on (its HCM, or its TCP chain);
        ``_chain_owner`` maps those to their listener's content for the chains of the current config
        and for the older ones connections still use."""
        owner: dict[int, bytes] = {}
        for lst in self.config.listeners.values():
            for chain in lst.chains():
                owner[id(chain.http if chain.http is not None else chain)] = lst.fingerprint
        kept = set(owner.values())
        previous = self._chain_owner

        def listener_of(chain: Any) -> bytes | None:
            """The content of the listener a connection's chain came from (kept while it lives)."""
            key = id(chain)
            fingerprint = owner.get(key, previous.get(key))
            if fingerprint is not None:
                owner[key] = fingerprint
            return fingerprint

        for conn in list(self.http_connections):
            fingerprint = listener_of(conn.hcm)
            if fingerprint is not None and fingerprint not in kept:
                conn.drain()
        for session in list(self.sessions):
            fingerprint = listener_of(session.chain)
            if fingerprint is not None and fingerprint not in kept and not session.draining:
                session.draining = True
                self.loop.call_later(self.drain_time_s, session.close)
        self._chain_owner = owner

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

    def accepted(self, listener_name: str, transport: Any) -> Accepted | None:
        """Where a new connection was going and which listeners handle it (None: close it)."""
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
        return Accepted(listener, target, dst, redirected, transport.get_extra_info("peername"))

    def serve(
        self, acc: Accepted, sni: str = "", transport_protocol: str = "", alpn: tuple[str, ...] = ()
    ) -> Any:
        """The protocol for a connection once its listener filters have spoken (None: close it)."""
        target = acc.target
        chain = target.select_chain(acc.dst[0], acc.dst[1], sni, transport_protocol, alpn)
        if chain is None:
            self.stats.named["downstream_cx_no_route"] += 1
            return None
        reporter = "destination" if target.direction == "INBOUND" else "source"
        if chain.http is not None:
            conn = DownstreamConnection(self, chain.http, reporter, acc.redirected or acc.dst)
            if chain.tls is None:
                return conn
            return self._terminate_tls(chain, conn, acc, sni)
        session = self._tcp_session(chain, reporter, acc.dst, acc.peer)
        if session is None or (chain.tls is None and not chain.rbac):
            return session
        if chain.tls is None:
            # Plain text with network RBAC: decided now, before anything is forwarded.
            if not self._rbac_allows(chain, session, acc, sni, ""):
                session.close()
                return None
            return session
        return self._terminate_tls(chain, session, acc, sni)

    def _terminate_tls(self, chain: FilterChainConfig, proto: Any, acc: Accepted, sni: str) -> Any:
        """The chain's TLS layer over ``proto`` (an HTTP connection or a TCP session): once the handshake
        is done the peer's identity is known, network RBAC decides, and the protocol starts."""
        assert chain.tls is not None
        named = self.stats.named
        try:
            context = chain.tls.context()
        except (TlsError, OSError, ValueError) as exc:
            named["listener.ssl.no_certificate"] += 1
            log.warning("cannot terminate TLS", chain=chain.name, error=str(exc))
            if isinstance(proto, TcpSession):
                proto.close()
            return None
        session = proto if isinstance(proto, TcpSession) else None

        def handshake_done(layer: TlsLayer) -> bool:
            named["listener.ssl.handshake"] += 1
            if session is None:
                return True
            if chain.rbac and not self._rbac_allows(chain, session, acc, sni, layer.principal):
                session.close()
                return False
            session.info["principal"] = layer.principal
            self.loop.call_soon(self.start_tcp, session)
            return True

        def lost_before_handshake() -> None:
            named["listener.ssl.connection_error"] += 1
            if session is not None:
                session.close(error=True)

        layer = TlsLayer(
            context,
            session.downstream if session is not None else proto,
            server_side=True,
            verify=chain.tls.common.san,
            on_handshake=handshake_done,
        )
        layer.on_lost = lost_before_handshake
        layer.sni = sni  # from the tls_inspector: what RBAC's connection.sni sees
        return layer

    def _rbac_allows(
        self, chain: FilterChainConfig, session: TcpSession, acc: Accepted, sni: str, principal: str
    ) -> bool:
        from fastpath.rbac import LOG, RbacInput

        peer = acc.peer or ("", 0)
        ctx = RbacInput(
            principal=principal, source_ip=peer[0], dest_ip=acc.dst[0], dest_port=acc.dst[1], sni=sni
        )
        for engine in chain.rbac:
            allowed, policy = engine.evaluate(ctx)
            if engine.action == LOG:
                if policy:
                    self.stats.named["rbac.logged"] += 1
                    log.info("rbac audit", policy=policy, principal=principal, source=peer[0])
                continue
            if not allowed:
                self.stats.named["rbac.denied"] += 1
                session.response_flags = "-"
                log.debug("connection denied by rbac", policy=policy or "none", principal=principal)
                return False
        self.stats.named["rbac.allowed"] += 1
        return True

    def _tcp_session(
        self, chain: FilterChainConfig, reporter: str, dst: tuple[str, int], peer: Any = None
    ) -> TcpSession | None:
        tcp = chain.tcp_proxy
        assert tcp is not None
        cluster_name = tcp.pick(self.rand())
        cluster = self.clusters.get(cluster_name)
        session = TcpSession({"cluster": cluster_name, "reporter": reporter}, self._done)
        session.info["original_dst"] = f"{dst[0]}:{dst[1]}"
        if peer:
            session.info["peer"] = f"{peer[0]}:{peer[1]}"
        session.chain = chain
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
        session.info["upstream"] = f"{host}:{port}"
        tls = cluster.config.tls if cluster.original_dst else picked.tls
        session.info["connect"] = (host, port, cluster, tcp.idle_timeout, tls)
        return session

    def start_tcp(self, session: TcpSession) -> None:
        info = session.info
        if "connect" not in info:
            session.close()  # refused at dispatch (flag set)
            return
        host, port, cluster, idle, tls = info.pop("connect")
        cluster.connections += 1
        self.stats.tcp_add(
            "istio_tcp_connections_opened_total",
            info["reporter"],
            info["cluster"],
            "-",
            principal=info.get("principal", ""),
        )
        task = self.loop.create_task(self._connect(session, host, port, cluster, idle, tls))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(
        self, session: TcpSession, host: str, port: int, cluster: Any, idle: float | None, tls: Any
    ) -> None:
        session.info["cluster_obj"] = cluster
        ok = await connect_upstream(
            session,
            host,
            port,
            timeout=cluster.config.connect_timeout,
            source_address=cluster.config.source_address,
            idle_timeout=idle,
            tls=tls,
        )
        if not ok:
            log.debug(
                "upstream connect failed",
                upstream=f"{host}:{port}",
                cluster=cluster.name,
                error=session.info.get("failure"),
            )
            session.close()
            return
        keepalive = cluster.config.tcp_keepalive
        upstream = session.upstream.transport
        if keepalive is not None and upstream is not None:
            set_keepalive(upstream.get_extra_info("socket"), *keepalive)

    def _done(self, session: TcpSession) -> None:
        self.sessions.discard(session)
        info = session.info
        cluster = info.pop("cluster_obj", None)
        if cluster is not None:
            cluster.connections -= 1
        reporter, name, flags = info["reporter"], info["cluster"], session.response_flags
        principal = info.get("principal", "")
        add = self.stats.tcp_add
        add("istio_tcp_connections_closed_total", reporter, name, flags, principal=principal)
        received, sent = session.bytes_received, session.bytes_sent
        add("istio_tcp_received_bytes_total", reporter, name, "-", received, principal=principal)
        add("istio_tcp_sent_bytes_total", reporter, name, "-", sent, principal=principal)
        if session.response_flags != "-":
            self.stats.named[f"cluster.{name}.upstream_cx_connect_fail"] += 1
        if tap.SESSIONS:  # someone is tapping: a TCP connection is a line too
            tap.offer_connection(session)
        tcp = session.chain.tcp_proxy if session.chain is not None else None
        if tcp is not None and tcp.access_logs:
            record = TcpRecord(session)
            for access_log in tcp.access_logs:
                access_log.log(record)

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


class Accepted(NamedTuple):
    listener: ListenerConfig  # the listener that accepted (its listener filters run)
    target: ListenerConfig  # the listener whose filter chains serve it (after an original-dst handoff)
    dst: tuple[str, int]
    redirected: tuple[str, int] | None
    peer: Any = None  # (ip, port) of the downstream


def _inspecting(acc: Accepted) -> ListenerConfig:
    """The listener whose inspectors read a connection's first bytes: the accepting one, or -- when it has
    none and handed the connection off by original destination -- the one it was handed to (the
    ``0.0.0.0_<port>`` of TLS services routed by SNI), so that only such ports wait for a ClientHello."""
    return acc.listener if acc.listener.inspects else acc.target


class _Dispatcher:
    """The first protocol of an accepted connection. It finds the filter chain -- at once, or after the
    listener's inspectors have seen the first bytes (TLS ClientHello, HTTP/1 or HTTP/2) -- then hands the
    transport, and every byte read so far, to the protocol that serves it (``set_protocol``)."""

    __slots__ = ("acc", "buffer", "eof", "listener", "proxy", "timer", "transport")

    def __init__(self, proxy: Proxy, listener: str) -> None:
        self.proxy = proxy
        self.listener = listener
        self.acc: Accepted | None = None
        self.transport: Any = None
        self.buffer = b""
        self.eof = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        acc = self.acc = self.proxy.accepted(self.listener, transport)
        if acc is None:
            transport.abort()
            return
        inspecting = _inspecting(acc)
        if not inspecting.inspects:
            self._serve()
            return
        self.timer = self.proxy.loop.call_later(inspecting.filters_timeout, self._timeout)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._inspect(final=False)

    def eof_received(self) -> bool:
        self.eof = True
        self._inspect(final=True)  # the client said all it will say before the server speaks
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def _timeout(self) -> None:
        self.timer = None
        acc = self.acc
        if acc is not None and _inspecting(acc).continue_on_timeout:
            self._inspect(final=True)
        else:
            self.proxy.stats.named["downstream_pre_cx_timeout"] += 1
            self.transport.abort()

    def _inspect(self, final: bool) -> None:
        acc = self.acc
        assert acc is not None
        data = self.buffer
        sni, transport_protocol, alpn = "", "", ()
        inspecting = _inspecting(acc)
        if inspecting.inspect_tls:
            hello = sniff.inspect_tls(data)
            if hello.state == sniff.NEED_MORE and not final:
                return
            transport_protocol = "tls" if hello.tls else "raw_buffer"
            sni, alpn = hello.sni, hello.alpn
        if inspecting.inspect_http and transport_protocol != "tls":
            state, proto = sniff.inspect_http(data)
            if state == sniff.NEED_MORE and not final:
                return
            alpn = (proto,) if proto else ()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._serve(sni, transport_protocol, alpn)

    def _serve(self, sni: str = "", transport_protocol: str = "", alpn: tuple[str, ...] = ()) -> None:
        assert self.acc is not None
        transport = self.transport
        proto = self.proxy.serve(self.acc, sni, transport_protocol, alpn)
        if proto is None:
            transport.abort()
            return
        data, self.buffer = self.buffer, b""
        if isinstance(proto, TcpSession):
            side = proto.downstream
            transport.set_protocol(side)
            side.connection_made(transport)
            self.proxy.start_tcp(proto)
            if data:
                side.data_received(data)
            if self.eof:
                side.eof_received()
        else:
            transport.set_protocol(proto)
            proto.connection_made(transport)
            if data:
                proto.data_received(data)
            if self.eof and not proto.eof_received():
                transport.close()
