"""Clusters at run time: hosts, load balancing, circuit breakers, outlier ejection, connection pools.

A ``Cluster`` outlives config updates that do not change it, so pooled keep-alive connections, counts of
requests in flight and ejections carry over; a changed cluster gets a new ``Cluster`` and the old one's
connections finish their requests and close. Hosts are kept by address across EDS updates for the same
reason.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from fastpath import lb
from fastpath.config.clusters import ClusterConfig, Endpoint
from fastpath.outlier import OutlierDetector
from mizzen import logs

if TYPE_CHECKING:
    from fastpath.upstream import UpstreamConnection

log = logs.get("proxy")


class Host:
    """One endpoint of a cluster, with its idle connections and its health as outlier detection sees it."""

    __slots__ = (
        "active_requests",
        "address",
        "cluster",
        "connections",
        "consecutive_5xx",
        "consecutive_gateway",
        "consecutive_local",
        "ejected_until",
        "ejections",
        "idle",
        "locality",
        "locality_weight",
        "port",
        "priority",
        "tls",
        "waiting",
        "weight",
    )

    def __init__(self, cluster: Cluster, address: str, port: int, weight: int = 1) -> None:
        self.cluster = cluster
        self.address = address
        self.port = port
        self.weight = weight
        self.idle: list[UpstreamConnection] = []  # keep-alive connections, most recently used last
        self.waiting: deque[Any] = deque()  # exchanges waiting for a connection (breaker at its limit)
        self.active_requests = 0
        self.connections = 0
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.consecutive_local = 0
        self.ejected_until = 0.0  # when the current ejection ends; 0: in service
        self.ejections = 0  # the ejection count that scales the next ejection's length
        self.priority = 0
        self.locality = ""
        self.locality_weight = 0
        self.tls: Any = cluster.config.tls  # the transport socket (UpstreamTls) or None: plain text

    @property
    def label(self) -> str:
        return f"{self.address}:{self.port}" if ":" not in self.address else f"[{self.address}]:{self.port}"

    def __repr__(self) -> str:
        return f"<Host {self.label} of {self.cluster.name}>"


class Cluster:
    """A cluster's run-time state. ``config`` is immutable; a changed config means a new Cluster."""

    def __init__(self, config: ClusterConfig, endpoints: Iterable[Endpoint] = ()) -> None:
        self.config = config
        self.name = config.name
        self.hosts: dict[tuple[str, int], Host] = {}
        self.candidates: list[Host] = []
        self.picker: lb.Picker = lb.make(config.lb_policy, [])
        self.breakers = config.circuit_breakers
        # Copied out of the config: read on every request.
        self.max_requests = config.circuit_breakers.max_requests
        self.max_pending_requests = config.circuit_breakers.max_pending_requests
        self.max_connections = config.circuit_breakers.max_connections
        self.max_retries = config.circuit_breakers.max_retries
        self.original_dst = config.original_dst
        self.outlier = config.outlier is not None
        self.http2 = config.protocol == "http2"
        self.use_downstream_protocol = config.protocol == "downstream"
        # Circuit-breaker gauges, cluster-wide as in Envoy.
        self.active_requests = 0
        self.pending_requests = 0
        self.connections = 0
        self.active_retries = 0
        self.removed = False
        self.stats: dict[str, int] = {}
        self._dns_task: asyncio.Task[None] | None = None
        self.detector = OutlierDetector(self, config.outlier) if config.outlier is not None else None
        self.set_endpoints(endpoints)

    # -- membership ---------------------------------------------------------------------------------

    def set_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the cluster's hosts, keeping the Host objects (and their pools) of those that stay."""
        eps = list(endpoints)
        fresh: dict[tuple[str, int], Host] = {}
        for e in eps:
            key = (e.host, e.port)
            host = self.hosts.get(key)
            if host is None:
                host = Host(self, key[0], key[1], e.weight)
            host.weight = e.weight
            host.priority = e.priority
            host.locality = e.locality
            host.locality_weight = e.locality_weight
            host.tls = self.config.tls_for(e)
            fresh[key] = host
        for key, host in self.hosts.items():
            if key not in fresh:
                for conn in host.idle:
                    conn.close()
                host.idle.clear()
        self.hosts = fresh
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the picker over the hosts that may take traffic: not ejected (unless the cluster is in
        panic), spread over priority levels by their health, and over localities by weight."""
        hosts = list(self.hosts.values())
        healthy = [h for h in hosts if not h.ejected_until]
        policy = self.config.lb_policy
        table = self.config.hash_table_size
        if hosts and len(healthy) * 100 < len(hosts) * self.config.panic_threshold:
            healthy = hosts  # Envoy's panic mode: too few healthy hosts, use them all
        self.candidates = healthy
        levels = sorted({h.priority for h in hosts})
        if len(levels) <= 1:
            self.picker = self._picker(healthy, policy, table)
            return
        # Priority levels (locality failover): Envoy's priority load with an overprovisioning factor of
        # 1.4 -- a level keeps all the load until its healthy share drops below ~71%, then spills over.
        shares: list[tuple[int, list[Host]]] = []
        for level in levels:
            members = [h for h in hosts if h.priority == level]
            usable = [h for h in healthy if h.priority == level]
            shares.append((min(100, (140 * len(usable)) // len(members)), usable))
        total = sum(share for share, _ in shares)
        loads: list[tuple[int, lb.Picker]] = []
        remaining = 100
        for share, usable in shares:
            load = min(remaining, share) if total >= 100 else (share * 100) // max(total, 1)
            remaining -= load
            if load > 0 and usable:
                loads.append((load, self._picker(usable, policy, table)))
        self.picker = lb.Prioritized(loads) if loads else self._picker([], policy, table)

    def _picker(self, hosts: list[Host], policy: str, table: int) -> lb.Picker:
        start = random.randrange(len(hosts)) if hosts else 0
        if not self.config.locality_weighted or len({h.locality for h in hosts}) <= 1:
            return lb.make(policy, hosts, start, table)
        groups: dict[str, list[Host]] = {}
        for h in hosts:
            groups.setdefault(h.locality, []).append(h)
        return lb.LocalityWeighted(
            [
                (members[0].locality_weight, lb.make(policy, members, 0, table))
                for _, members in sorted(groups.items())
                if members[0].locality_weight > 0
            ]
        )

    def pick(self, exclude: Host | None = None) -> Host | None:
        return self.picker.pick(exclude)  # type: ignore[return-value]

    def pick_hash(self, key: int, exclude: Host | None = None) -> Host | None:
        """A host for a request with a consistent-hash key (ring hash / Maglev clusters map it)."""
        return self.picker.pick_hash(key, exclude)  # type: ignore[return-value]

    def original_dst_host(self, address: str, port: int) -> Host:
        """ORIGINAL_DST clusters: a host per destination, made on first use (pools per destination)."""
        key = (address, port)
        host = self.hosts.get(key)
        if host is None:
            host = self.hosts[key] = Host(self, address, port)
        return host

    # -- outlier detection --------------------------------------------------------------------------

    def report(self, host: Host, status: int, local_origin: bool = False) -> None:
        """Passive health: one outcome of a request to ``host`` (see ``fastpath.outlier``)."""
        if self.detector is None:
            return
        if status < 500 and not local_origin and not (
            host.consecutive_5xx or host.consecutive_gateway or host.consecutive_local
        ):
            return  # a success with no error run to break: the detector has nothing to do
        self.detector.report(host, status, local_origin)

    # -- DNS ----------------------------------------------------------------------------------------

    def start_dns(self) -> None:
        """STRICT_DNS / LOGICAL_DNS: resolve the configured names now and every dns_refresh seconds."""
        if self.config.dns and self._dns_task is None:
            self._dns_task = asyncio.get_running_loop().create_task(self._resolve_forever())

    async def _resolve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.removed:
            resolved: list[Endpoint] = []
            for e in self.config.endpoints:
                try:
                    infos = await loop.getaddrinfo(e.host, e.port, type=socket.SOCK_STREAM)
                except OSError as exc:
                    log.warning("dns resolution failed", cluster=self.name, host=e.host, error=str(exc))
                    continue
                addrs = sorted({info[4][0] for info in infos})
                if self.config.discovery == "LOGICAL_DNS":
                    addrs = addrs[:1]
                resolved += [Endpoint(a, e.port, e.weight, e.priority) for a in addrs]
            if resolved or not self.hosts:
                self.set_endpoints(resolved)
            await asyncio.sleep(self.config.dns_refresh)

    # -- life ---------------------------------------------------------------------------------------

    def bump(self, stat: str, n: int = 1) -> None:
        self.stats[stat] = self.stats.get(stat, 0) + n

    def close(self) -> None:
        """The cluster left the config: idle connections close now, busy ones when their request ends."""
        self.removed = True
        if self._dns_task is not None:
            self._dns_task.cancel()
        if self.detector is not None:
            self.detector.close()
        for host in self.hosts.values():
            for conn in host.idle:
                conn.close()
            host.idle.clear()
            while host.waiting:
                host.waiting.popleft().on_pool_failure("UH", "cluster removed")


class ClusterManager:
    """The run-time clusters by name, reconciled with each new config."""

    def __init__(self) -> None:
        self.clusters: dict[str, Cluster] = {}

    def get(self, name: str) -> Cluster | None:
        return self.clusters.get(name)

    def update(self, configs: dict[str, ClusterConfig], endpoints_of: Callable[[ClusterConfig], Any]) -> None:
        """Make the run-time clusters match ``configs``; unchanged ones keep their state."""
        for name in list(self.clusters):
            if name not in configs:
                self.clusters.pop(name).close()
        for name, cfg in configs.items():
            current = self.clusters.get(name)
            if current is not None and current.config.fingerprint == cfg.fingerprint and cfg.fingerprint:
                if cfg.discovery == "EDS":
                    current.set_endpoints(endpoints_of(cfg))
                continue
            if current is not None:
                current.close()
            cluster = Cluster(cfg, () if cfg.dns else endpoints_of(cfg))
            self.clusters[name] = cluster
            if cfg.dns:
                try:
                    cluster.start_dns()
                except RuntimeError:  # no loop (compiling config outside the proxy)
                    pass

    def sweep_idle(self, now: float) -> None:
        """Close pooled connections idle past their cluster's idle_timeout (called every second)."""
        for cluster in self.clusters.values():
            limit = cluster.config.idle_timeout
            lifetime = cluster.config.max_connection_duration
            if lifetime > 0:
                for host in cluster.hosts.values():
                    for conn in [c for c in host.idle if now - c.born >= lifetime]:
                        host.idle.remove(conn)
                        conn.close()
            if limit <= 0:
                continue
            for host in cluster.hosts.values():
                if host.idle and now - host.idle[0].idle_since > limit:
                    keep = [c for c in host.idle if now - c.idle_since <= limit]
                    for conn in host.idle:
                        if conn not in keep:
                            conn.close()
                    host.idle[:] = keep
