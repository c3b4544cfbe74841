"""Per-scope and per-proxy resource sets, updated incrementally as the mesh changes.

The unit of work is a *host bundle*: every resource one service host contributes to a scope (its clusters,
endpoints, outbound listeners, virtual hosts). Bundles are cached by the revisions of their inputs, so a
change rebuilds only the bundles of the hosts it touches, and only the scopes that see those hosts. The
per-port RouteConfigurations are reassembled from cached virtual hosts when one of theirs changed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc

from controller.model.istio import DestinationRule, TrafficPolicy
from controller.model.kube import Pod
from controller.model.protocol import MeshProtocol
from controller.model.snapshot import ConfigChange, MeshSnapshot
from controller.model.telemetry import CLIENT, SERVER, resolve_cached
from controller.model.values import ResourceKey
from controller.xds import cluster_policies as cpol
from controller.xds import clusters as cds
from controller.xds import gateway as gateways
from controller.xds import grpcgen, security, telemetry
from controller.xds import listeners as lds
from controller.xds import routes as rds
from controller.xds import tcp as l4
from controller.xds.node import ProxyNode
from controller.xds.registry import MeshService, Registry, selected_pods
from controller.xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, Resource, make_resource
from controller.xds.scope import Scope, ScopeKey, find_pod, scope_of, sidecar_for, source_label_keys
from mizzen import logs

log = logs.get("xds.generator")

ResourceMap = dict[str, dict[str, Resource]]  # type URL -> name -> resource


def empty_map() -> ResourceMap:
    return {t: {} for t in PUSH_ORDER}


class HostBundle(NamedTuple):
    inputs: tuple[Any, ...]  # the revisions it was built from
    resources: ResourceMap  # clusters, endpoints, listeners (and proxyless routes)
    vhosts: dict[int, rc.VirtualHost]  # HTTP port -> virtual host (sidecars)
    # Opaque-TCP ports of a host without a VIP: they share ``0.0.0.0_<port>``, assembled per port.
    tcp_wildcard: dict[int, tuple[l4.TcpChain, ...]]
    # Ports with no declared protocol: in ``vhosts`` and TCP at once, told apart by sniffing.
    sniffed: frozenset[int] = frozenset()


def _policy_for(dr: DestinationRule | None, port: int, subset: str | None) -> TrafficPolicy | None:
    if dr is None:
        return None
    base = dr.traffic_policy
    if subset is not None:
        sub = dr.subset(subset)
        if sub is not None and sub.traffic_policy is not None:
            base = sub.traffic_policy.merged_over(base)
    return base.for_port(port) if base is not None else None


def _namespace_of(reg: Registry, host: str) -> str:
    svc = reg.services.get(host)
    return svc.namespace if svc is not None else ""


def _hash_for(reg: Registry, client_namespace: str, host: str, subset: str | None, port: int) -> Any:
    """The consistent hash a DestinationRule sets for a destination, if any (it goes on the route)."""
    dr = reg.destination_rule_for(host, client_namespace, _namespace_of(reg, host))
    policy = _policy_for(dr, port, subset)
    return policy.consistent_hash if policy is not None else None


def _idle_for(reg: Registry, client_namespace: str, host: str, subset: str | None, port: int) -> Any:
    """A destination's connectionPool.tcp.idleTimeout (it goes on the TcpProxy that reaches it)."""
    dr = reg.destination_rule_for(host, client_namespace, _namespace_of(reg, host))
    policy = _policy_for(dr, port, subset)
    pool = policy.connection_pool if policy is not None else None
    return pool.tcp_idle_timeout if pool is not None else None


def _own_port(reg: Registry, port: int, host: str, given: int | None) -> int:
    """A TCP destination's port: given, else the service's only port, else the port being routed."""
    if given is not None:
        return given
    svc = reg.services.get(host)
    return svc.ports[0].port if svc is not None and len(svc.ports) == 1 else port


class ScopeView:
    """The outbound resources of one scope at one snapshot version, kept up to date incrementally."""

    def __init__(self, key: ScopeKey) -> None:
        self.key = key
        self.version = 0
        self.generation = 0  # bumped whenever resources change
        self.bundles: dict[str, HostBundle] = {}
        self.resources: ResourceMap = empty_map()
        self.port_hosts: dict[int, set[str]] = {}  # sidecar HTTP port -> hosts with a virtual host on it
        self.tcp_port_hosts: dict[int, set[str]] = {}  # port -> VIP-less TCP hosts wanting 0.0.0.0_<port>
        self._version_maps: dict[str, tuple[int, dict[str, str]]] = {}
        self.allow_any: bool | None = None

    def version_map(self, type_url: str) -> dict[str, str]:
        """name -> version of this type now; one shared, never-mutated dict per view update (proxies keep
        what they hold as a difference from it)."""
        cached = self._version_maps.get(type_url)
        if cached is not None and cached[0] == self.generation:
            return cached[1]
        built = {name: r.version for name, r in self.resources[type_url].items()}
        self._version_maps[type_url] = (self.generation, built)
        return built

    @staticmethod
    def _sni_dnat(
        res: ResourceMap, cluster: Any, cla: Any, port: int, subset: str | None, svc: MeshService
    ) -> None:
        """Istio's SNI-DNAT twin of an outbound cluster, for a gateway's AUTO_PASSTHROUGH servers: named by
        the SNI a client's sidecar sends (``outbound_.<port>_.<subset>_.<host>``), the same endpoints and
        policies, no TLS of its own -- the bytes are already the client's mTLS to the endpoint."""
        sni = security.outbound_sni(port, subset, svc.hostname)
        twin = cluster_pb2.Cluster()
        twin.CopyFrom(cluster)
        twin.name = sni
        twin.ClearField("transport_socket")
        twin.ClearField("transport_socket_matches")
        if twin.HasField("eds_cluster_config"):
            twin.eds_cluster_config.service_name = sni
        res[CLUSTER][sni] = make_resource(CLUSTER, sni, twin)
        if cla is not None:
            assignment = endpoint_pb2.ClusterLoadAssignment()
            assignment.CopyFrom(cla)
            assignment.cluster_name = sni
            res[ENDPOINT][sni] = make_resource(ENDPOINT, sni, assignment)

    # -- inputs of a host bundle --
    def _inputs(self, reg: Registry, scope: Scope, svc: MeshService) -> tuple[Any, ...]:
        snapshot = reg.snapshot
        vs = reg.virtual_service_for(svc.hostname, scope.namespace)
        dr = reg.destination_rule_for(svc.hostname, scope.namespace, svc.namespace)
        source_rev = snapshot.revision(svc.source)
        if svc.source.kind == "Service":
            slices = tuple(
                (k.name, snapshot.revision(k))
                for k in sorted(snapshot.slice_keys_of(svc.namespace, svc.source.name))
            )
        else:
            slices = ()
        pods: tuple[Any, ...] = ()
        if dr is not None and dr.subsets and slices:
            # Subsets select endpoints by pod labels: the pods behind the slices are inputs too.
            refs = sorted(
                {
                    ep.pod
                    for eps in snapshot.slices_of(svc.namespace, svc.source.name)
                    for ep in eps.endpoints
                    if ep.pod
                }
            )
            pods = tuple((k.name, snapshot.revision(k)) for k in refs)
        elif svc.source.kind == "ServiceEntry":
            entry = snapshot.get(svc.source)
            if entry is not None and entry.workload_selector is not None:
                # The pods its workloadSelector picks are its endpoints.
                pods = tuple((p.name, snapshot.revision(p.key)) for p in selected_pods(snapshot, entry))
        # A VirtualService route may name another host's port implicitly: its port list is an input; so are
        # the destinations' DestinationRules (their consistent hash goes on the routes), and delegates.
        dest_ports: tuple[Any, ...] = ()
        if vs is not None:
            rules = list(vs.http)
            delegates = [reg.delegate(d.namespace, d.name) for d in vs.delegates]
            for target in delegates:
                if target is not None:
                    rules += target.http
            dests = sorted(
                {d.destination.host for r in rules for d in r.route}
                | {m.host for r in rules for m in r.mirrors}
            )
            dest_ports = tuple(
                (h, reg.services[h].ports if h in reg.services else None) for h in dests if h != svc.hostname
            )
            dest_rules = [reg.destination_rule_for(h, scope.namespace, _namespace_of(reg, h)) for h in dests]
            dest_ports += tuple(
                (d.key, snapshot.revision(d.key)) for d in dest_rules if d is not None and d is not dr
            )
            dest_ports += tuple((d.key, snapshot.revision(d.key)) for d in delegates if d is not None)
        return (
            svc,
            source_rev,
            vs.key if vs else None,
            snapshot.revision(vs.key) if vs else 0,
            dr.key if dr else None,
            snapshot.revision(dr.key) if dr else 0,
            slices,
            pods,
            dest_ports,
            # Last: what mutual TLS towards the service depends on (identities, auto mTLS on or off).
            security.outbound_inputs(snapshot, svc, reg.domain),
        )

    def _bundle(self, reg: Registry, scope: Scope, svc: MeshService, inputs: tuple[Any, ...]) -> HostBundle:
        res = empty_map()
        vhosts: dict[int, rc.VirtualHost] = {}
        tcp_wildcard: dict[int, tuple[l4.TcpChain, ...]] = {}
        sniffed: set[int] = set()
        dr_key = inputs[4]
        dr: DestinationRule | None = reg.snapshot.get(dr_key) if dr_key else None
        vs_key = inputs[2]
        vs = reg.snapshot.get(vs_key) if vs_key else None
        subsets = [s.name for s in dr.subsets] if dr else []
        proxyless = self.key.proxyless
        for port in svc.ports:
            if port.protocol in (MeshProtocol.UDP, MeshProtocol.SCTP):
                continue
            endpoints = reg.endpoints(svc, port)
            for subset in (None, *subsets):
                name = cds.outbound_name(port.port, subset, svc.hostname)
                if subset is None:
                    selected = endpoints
                else:
                    labels = dr.subset(subset).labels  # type: ignore[union-attr]
                    selected = [e for e in endpoints if e.labels.matches(labels)]
                policy = _policy_for(dr, port.port, subset)
                if proxyless:
                    cluster = grpcgen.cluster(name, svc, policy)
                    if cluster is None:
                        continue
                else:
                    cluster = cds.outbound_cluster(
                        name, svc, policy, selected if svc.resolution == "DNS" else None, port.protocol
                    )
                    sans, auto, declared = inputs[-1]
                    security.apply_upstream_tls(
                        cluster,
                        host=svc.hostname,
                        port=port.port,
                        subset=subset,
                        tls=policy.tls if policy is not None else None,
                        sans=sans,
                        auto=auto,
                        declared=declared,
                    )
                if svc.resolution == "EDS":
                    cla = cds.load_assignment(name, selected)
                    if policy is not None and not proxyless:
                        # Locality load balancing: priorities or weights as seen from this scope's locality.
                        failover = policy.outlier_detection is not None
                        where = self.key.locality
                        setting = policy.locality_lb
                        if cpol.apply_locality(cla, where, setting, failover):
                            cluster.common_lb_config.locality_weighted_lb_config.SetInParent()
                        if failover and setting is not None and setting.enabled and setting.failover_priority:
                            # By labels: the scope key carries the client's values of the keys named.
                            labels = {(e.address, e.port): e.labels for e in selected}
                            priority = setting.failover_priority
                            cpol.apply_failover_priority(cla, labels, where, self.key.labels, priority)
                    res[ENDPOINT][name] = make_resource(ENDPOINT, name, cla)
                res[CLUSTER][name] = make_resource(CLUSTER, name, cluster)
                if self.key.sni_dnat:
                    self._sni_dnat(
                        res, cluster, cla if svc.resolution == "EDS" else None, port.port, subset, svc
                    )
            if self.key.router:
                continue  # a gateway's listeners and routes come from its Gateways (controller.xds.gateway)
            ctx = rds.RouteContext(
                reg.services,
                scope.namespace,
                self.key.labels,
                proxyless=proxyless,
                hash_for=functools.partial(_hash_for, reg, scope.namespace),
                delegate=reg.delegate,
            )
            routes = rds.routes_for(svc, port.port, vs, reg.services, proxyless=proxyless, ctx=ctx)

            if proxyless:
                for name, msg in grpcgen.listener_and_route(svc, port.port, scope.namespace, routes):
                    type_url = LISTENER if msg.DESCRIPTOR.name == "Listener" else ROUTE
                    res[type_url][name] = make_resource(type_url, name, msg)
            elif port.protocol.is_http:
                vhosts[port.port] = rds.virtual_host(svc, port.port, scope.namespace, routes)
            else:
                if port.protocol.sniffed:
                    # Istio's protocol sniffing: HTTP routes for what turns out to be HTTP, TCP for the rest.
                    sniffed.add(port.port)
                    vhosts[port.port] = rds.virtual_host(svc, port.port, scope.namespace, routes)
                port_chains = functools.partial(
                    l4.chains,
                    svc.hostname,
                    port.port,
                    vs,
                    l4.Client(scope.namespace, self.key.labels),
                    tls=port.protocol in (MeshProtocol.TLS, MeshProtocol.HTTPS),
                    subnets=svc.subnets,
                    idle_for=functools.partial(_idle_for, reg, scope.namespace),
                    own_port=functools.partial(_own_port, reg, port.port),
                )
                if not svc.addresses or svc.subnets:
                    # On the shared 0.0.0.0_<port>: no VIP, or address ranges (told apart by subnet there).
                    tcp_wildcard[port.port] = tuple(port_chains(shared=True))
                for address in svc.addresses:
                    listener = l4.listener(address, port.port, port_chains(shared=False))
                    if port.protocol.sniffed:
                        lds.sniff_http(listener, port.port)
                    res[LISTENER][listener.name] = make_resource(LISTENER, listener.name, listener)
        return HostBundle(inputs, res, vhosts, tcp_wildcard, frozenset(sniffed))

    # -- updating --
    def update(self, reg: Registry, scope: Scope, hosts: Iterable[str] | None) -> dict[str, set[str]]:
        """Bring the view to ``reg.snapshot``, looking only at ``hosts`` (all when None). Returns the names
        of resources that changed or disappeared, by type."""
        changed: dict[str, set[str]] = {t: set() for t in PUSH_ORDER}
        candidates = reg.services.keys() if hosts is None else hosts
        if hosts is None:
            candidates = set(candidates) | set(self.bundles)
        touched_ports: set[int] = set()
        for host in candidates:
            svc = reg.services.get(host)
            old = self.bundles.get(host)
            if svc is None or not scope.sees(svc):
                if old is not None:
                    del self.bundles[host]
                    self._remove(old, changed, touched_ports, host)
                continue
            inputs = self._inputs(reg, scope, svc)
            if old is not None and old.inputs == inputs:
                continue
            bundle = self._bundle(reg, scope, svc, inputs)
            self.bundles[host] = bundle
            if old is not None:
                self._remove(old, changed, touched_ports, host, keep=bundle)
            self._add(bundle, changed, touched_ports, host, old)
        if not self.key.proxyless:
            self._fixed(scope, changed)
            for port in touched_ports:
                self._assemble_port(port, scope, changed)
        self.version = reg.snapshot.version
        if any(changed.values()):
            self.generation += 1
        return changed

    def _remove(
        self,
        bundle: HostBundle,
        changed: dict[str, set[str]],
        ports: set[int],
        host: str,
        keep: HostBundle | None = None,
    ) -> None:
        for type_url, items in bundle.resources.items():
            current = self.resources[type_url]
            for name in items:
                if keep is not None and name in keep.resources[type_url]:
                    continue
                if name in current:
                    del current[name]
                    changed[type_url].add(name)
        for port in bundle.vhosts:
            if keep is None or port not in keep.vhosts:
                self.port_hosts.get(port, set()).discard(host)
                ports.add(port)
        for port in bundle.tcp_wildcard:
            if keep is None or port not in keep.tcp_wildcard:
                self.tcp_port_hosts.get(port, set()).discard(host)
                ports.add(port)

    def _add(
        self,
        bundle: HostBundle,
        changed: dict[str, set[str]],
        ports: set[int],
        host: str,
        old: HostBundle | None,
    ) -> None:
        for type_url, items in bundle.resources.items():
            current = self.resources[type_url]
            for name, resource in items.items():
                before = current.get(name)
                if before is None or before.version != resource.version:
                    current[name] = resource
                    changed[type_url].add(name)
        # A port's shared listener and RouteConfiguration are rebuilt only when this host's part of them
        # changed (an endpoint change rebuilds the bundle but leaves its virtual host as it was).
        for port, vhost in bundle.vhosts.items():
            self.port_hosts.setdefault(port, set()).add(host)
            if old is None or old.vhosts.get(port) != vhost:
                ports.add(port)
        for port, tcp in bundle.tcp_wildcard.items():
            self.tcp_port_hosts.setdefault(port, set()).add(host)
            if old is None or old.tcp_wildcard.get(port) != tcp:
                ports.add(port)

    def _fixed(self, scope: Scope, changed: dict[str, set[str]]) -> None:
        """The capture listener and special clusters; they change only with the outbound policy."""
        if self.allow_any == scope.allow_any:
            return
        self.allow_any = scope.allow_any
        fixed: list[tuple[str, str, Any]] = [
            (CLUSTER, cds.PASSTHROUGH, cds.passthrough_cluster()),
            (CLUSTER, cds.BLACKHOLE, cds.blackhole_cluster()),
        ]
        if not self.key.router:  # gateways capture nothing
            fixed += [
                (CLUSTER, cds.INBOUND_PASSTHROUGH, cds.inbound_passthrough_cluster()),
                (LISTENER, lds.VIRTUAL_OUTBOUND, lds.virtual_outbound(scope.allow_any)),
            ]
        for type_url, name, msg in fixed:
            resource = make_resource(type_url, name, msg)
            before = self.resources[type_url].get(name)
            if before is None or before.version != resource.version:
                self.resources[type_url][name] = resource
                changed[type_url].add(name)
        for port in list(self.port_hosts):
            self._assemble_port(port, scope, changed)

    def _assemble_port(self, port: int, scope: Scope, changed: dict[str, set[str]]) -> None:
        """``0.0.0.0_<port>`` and RouteConfiguration ``<port>``: HTTP when any HTTP service has the port
        (Istio gives HTTP precedence there), else opaque TCP to the first VIP-less TCP host by name."""
        name = str(port)
        listener_name = f"0.0.0.0_{port}"
        http_hosts = self.port_hosts.get(port)
        tcp_hosts = self.tcp_port_hosts.get(port)
        if not http_hosts:
            self.port_hosts.pop(port, None)
            if self.resources[ROUTE].pop(name, None) is not None:
                changed[ROUTE].add(name)
            listener = None
            if tcp_hosts:
                # VIP-less TCP hosts on one port share its listener: their chains (by destination
                # subnet or SNI) together, the first host by name keeping a match two would make.
                merged = l4.merge(self.bundles[h].tcp_wildcard[port] for h in sorted(tcp_hosts))
                fallback = cds.PASSTHROUGH if scope.allow_any else cds.BLACKHOLE
                listener = l4.listener("0.0.0.0", port, merged, fallback)
            else:
                self.tcp_port_hosts.pop(port, None)
            self._put(LISTENER, listener_name, listener, changed)
            return
        sniffing = any(port in self.bundles[h].sniffed for h in http_hosts)
        hidden = sorted(h for h in tcp_hosts or () if port not in self.bundles[h].sniffed)
        if hidden and not sniffing:
            log.warning("TCP services without VIP hidden by HTTP on the same port", port=port, hosts=hidden)
        seen: set[str] = set()
        vhosts = []
        for host in sorted(http_hosts):
            vh = self.bundles[host].vhosts[port]
            duplicate = [d for d in vh.domains if d in seen]
            if duplicate:
                # Envoy refuses a RouteConfiguration with a domain twice; drop the repeats, keep the host.
                log.warning("duplicate domains on one port", port=port, host=host, domains=duplicate)
                vh = rc.VirtualHost(
                    name=vh.name, domains=[d for d in vh.domains if d not in seen], routes=vh.routes
                )
            seen.update(vh.domains)
            vhosts.append(vh)
        vhosts.append(rds.fallback_virtual_host(scope.allow_any))
        self._put(ROUTE, name, rds.route_configuration(name, vhosts), changed)
        listener = self._http_listener(port, sniffing, tcp_hosts, scope)
        listener = telemetry.decorate(listener, self.key.telemetry)
        self._put(LISTENER, listener_name, listener, changed)

    def _http_listener(
        self, port: int, sniffing: bool, tcp_hosts: set[str] | None, scope: Scope
    ) -> listener_pb2.Listener:
        """``0.0.0.0_<port>`` for HTTP services: HTTP only, or, when a service on the port declares no
        protocol, sniffing (HTTP to RouteConfiguration ``<port>``, the rest as the capture listener would:
        the port's VIP-less TCP services, else PassthroughCluster or BlackHoleCluster)."""
        if not sniffing:
            return lds.outbound_http_listener(port)
        merged = l4.merge(self.bundles[h].tcp_wildcard[port] for h in sorted(tcp_hosts or ()))
        fallback = cds.PASSTHROUGH if scope.allow_any else cds.BLACKHOLE
        return lds.sniff_http(l4.listener("0.0.0.0", port, merged, fallback), port)

    def _put(self, type_url: str, name: str, message: Any, changed: dict[str, set[str]]) -> None:
        current = self.resources[type_url]
        if message is None:
            if current.pop(name, None) is not None:
                changed[type_url].add(name)
            return
        resource = make_resource(type_url, name, message)
        before = current.get(name)
        if before is None or before.version != resource.version:
            current[name] = resource
            changed[type_url].add(name)


def inbound_resources(snapshot: MeshSnapshot, pod: Pod | None) -> ResourceMap:
    """virtualInbound and the ``inbound|<port>||`` clusters of one pod: every port a Service selecting the
    pod targets (protocol from that Service port), plus declared container ports (opaque TCP) -- or, when
    the pod's Sidecar has ``ingress`` listeners, exactly those, each to its ``defaultEndpoint``."""
    out = empty_map()
    ports: dict[int, MeshProtocol] = {}
    endpoints: dict[int, tuple[str, int]] = {}
    sidecar = sidecar_for(snapshot, pod.namespace, pod.labels) if pod is not None else None
    if pod is not None and sidecar is not None and sidecar.ingress:
        # A Sidecar's ingress listeners are the workload's inbound side: these ports, to their endpoints.
        for ingress in sidecar.ingress:
            ports[ingress.port] = ingress.protocol
            if ingress.endpoint_port is not None:
                host = ingress.endpoint_host or pod.ip
                if host:
                    endpoints[ingress.port] = (host, ingress.endpoint_port)
    elif pod is not None:
        named = {p.name: p.port for p in pod.container_ports if p.name}
        for svc in snapshot.services():
            if svc.namespace != pod.namespace or not svc.selector or not pod.labels.matches(svc.selector):
                continue
            for sp in svc.ports:
                if sp.transport != "TCP":
                    continue
                target = sp.target_port if isinstance(sp.target_port, int) else named.get(sp.target_port)
                if target is not None:
                    ports[target] = _inbound_protocol(ports.get(target), sp.protocol)
        for cp in pod.container_ports:
            if cp.transport == "TCP":
                ports.setdefault(cp.port, MeshProtocol.TCP)
    for port, protocol in ports.items():
        name = cds.inbound_name(port)
        out[CLUSTER][name] = make_resource(
            CLUSTER, name, cds.inbound_cluster(port, protocol, endpoints.get(port))
        )
    listener = lds.virtual_inbound(ports.items(), security.InboundSecurity.for_pod(snapshot, pod))
    if pod is not None:
        telemetry.decorate(listener, resolve_cached(snapshot, pod.namespace, pod.labels, SERVER))
    out[LISTENER][lds.VIRTUAL_INBOUND] = make_resource(LISTENER, lds.VIRTUAL_INBOUND, listener)
    return out


def _inbound_protocol(seen: MeshProtocol | None, declared: MeshProtocol) -> MeshProtocol:
    """Services that target one pod port with different protocols: an HTTP-family protocol wins (the first
    seen), then sniffing, then opaque TCP."""

    def rank(p: MeshProtocol) -> int:
        return 2 if p.is_http else 1 if p.sniffed else 0

    return declared if seen is None or rank(declared) > rank(seen) else seen


class ChangeSummary(NamedTuple):
    """What one snapshot update touched, for deciding which proxies to push to."""

    version: int
    scopes: Mapping[ScopeKey, dict[str, set[str]]]  # scope -> type -> changed names
    pods: frozenset[ResourceKey]  # pods whose inbound config may have changed
    namespaces_rescoped: frozenset[str] | None  # Sidecar changes: re-resolve proxies' scopes (None: all)
    causes: tuple[ResourceKey, ...]


class Translator:
    """Holds the registry and scope views; turns each snapshot update into per-scope resource changes."""

    def __init__(
        self, snapshot: MeshSnapshot, *, allow_any: bool = True, domain: str = "cluster.local"
    ) -> None:
        self.allow_any = allow_any
        self.domain = domain
        self.registry = Registry(snapshot, domain=domain)
        self.scopes: dict[ScopeKey, ScopeView] = {}

    @property
    def snapshot(self) -> MeshSnapshot:
        return self.registry.snapshot

    def scope_key(self, node: ProxyNode) -> ScopeKey:
        return scope_of(self.snapshot, node)

    def view(self, key: ScopeKey) -> ScopeView:
        """The scope's view at the current snapshot (built on first use)."""
        view = self.scopes.get(key)
        if view is None:
            view = ScopeView(key)
            view.update(self.registry, Scope(key, self.snapshot, self.allow_any), None)
            self.scopes[key] = view
        return view

    def retain(self, keys: Iterable[ScopeKey]) -> None:
        """Forget the views of scopes no connected proxy uses (they would be updated for nothing)."""
        keep = set(keys)
        for key in [k for k in self.scopes if k not in keep]:
            del self.scopes[key]

    def proxy_resources(self, node: ProxyNode, key: ScopeKey | None = None) -> ResourceMap:
        """Everything one proxy should have now: its scope's outbound config plus its inbound config."""
        key = key or self.scope_key(node)
        view = self.view(key)
        if node.proxyless:
            return view.resources
        inbound = self.local_resources(node)
        merged = empty_map()
        for type_url in PUSH_ORDER:
            merged[type_url] = {**view.resources[type_url], **inbound[type_url]}
        return merged

    def local_resources(self, node: ProxyNode) -> ResourceMap:
        """What one proxy gets beyond its scope: a sidecar its inbound side, a gateway (``router``) the
        listeners and routes of the Gateways that select it."""
        pod = find_pod(self.snapshot, node)
        if node.type == "router":
            labels = pod.labels if pod is not None else node.labels
            out = gateways.gateway_resources(self.registry, labels, pod)
            # Telemetry reaches gateways too; Istio counts them as clients (their traffic leaves them).
            settings = resolve_cached(self.snapshot, node.namespace, labels, CLIENT)
            out[LISTENER] = telemetry.decorate_resources(out[LISTENER], settings)
            return out
        return inbound_resources(self.snapshot, pod)

    def update(self, snapshot: MeshSnapshot, changes: Iterable[ConfigChange]) -> ChangeSummary:
        changes = list(changes)
        old_registry = self.registry
        self.registry = Registry(snapshot, old_registry, domain=self.domain, changes=changes)
        hosts: set[str] = set()
        pods: set[ResourceKey] = set()
        rescoped: set[str] | None = set()
        if any(c.key.kind in ("VirtualService", "DestinationRule") for c in changes) and source_label_keys(
            old_registry.snapshot
        ) != source_label_keys(snapshot):
            # Which labels scope proxies changed (sourceLabels, failoverPriority): every proxy re-resolves.
            rescoped = None
        for change in changes:
            kind = change.key.kind
            hosts.update(old_registry.hosts_of_change(change.key, change.old, change.new))
            hosts.update(self.registry.hosts_of_change(change.key, change.old, change.new))
            if kind == "Sidecar":
                if change.key.namespace == "istio-system":
                    rescoped = None
                elif rescoped is not None:
                    rescoped.add(change.key.namespace)
                # Its ingress listeners are the inbound side of the workloads it may cover.
                pods.update(
                    p.key
                    for p in snapshot.objects("Pod")
                    if change.key.namespace in ("istio-system", p.namespace)
                )
            elif kind == "Pod":
                pods.add(change.key)
            elif kind == "Gateway":
                rescoped = None  # which gateways need SNI-DNAT clusters (AUTO_PASSTHROUGH) may have changed
            elif kind in ("Telemetry", "MeshConfig"):
                # Telemetry is resolved per workload into scope keys (outbound) and inbound listeners.
                rescoped = None
                pods.update(p.key for p in snapshot.objects("Pod"))
            elif kind in ("PeerAuthentication", "AuthorizationPolicy"):
                # Inbound chains and filters of the pods they may cover; auto mTLS towards the namespace.
                for o in (change.old, change.new):
                    if o is None:
                        continue
                    mesh_wide = o.meta.namespace == "istio-system"
                    for pod in snapshot.objects("Pod"):
                        if mesh_wide or pod.namespace == o.meta.namespace:
                            pods.add(pod.key)
                    if kind == "PeerAuthentication":
                        hosts.update(
                            h
                            for h, svc in self.registry.services.items()
                            if mesh_wide or svc.namespace == o.meta.namespace
                        )
            elif kind == "Service":
                # Inbound ports come from the Services that select a pod.
                for o in (change.old, change.new):
                    if o is not None and o.selector:
                        for pod in snapshot.objects("Pod"):
                            if pod.namespace == o.namespace and pod.labels.matches(o.selector):
                                pods.add(pod.key)
        scope_changes: dict[ScopeKey, dict[str, set[str]]] = {}
        for key, view in list(self.scopes.items()):
            if key.sidecar is not None and key.sidecar in {c.key for c in changes}:
                # The Sidecar itself changed: rebuild the view (visibility rules changed everywhere).
                if snapshot.get(key.sidecar) is None:
                    del self.scopes[key]
                    continue
                fresh = ScopeView(key)
                fresh.update(self.registry, Scope(key, snapshot, self.allow_any), None)
                self.scopes[key] = fresh
                scope_changes[key] = _diff(view.resources, fresh.resources)
                continue
            changed = view.update(self.registry, Scope(key, snapshot, self.allow_any), hosts)
            if any(changed.values()):
                scope_changes[key] = changed
        return ChangeSummary(
            snapshot.version,
            scope_changes,
            frozenset(pods),
            None if rescoped is None else frozenset(rescoped),
            tuple(c.key for c in changes),
        )


def _diff(before: ResourceMap, after: ResourceMap) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for type_url in PUSH_ORDER:
        a, b = before[type_url], after[type_url]
        out[type_url] = {
            n
            for n in a.keys() | b.keys()
            if (a.get(n) is None) != (b.get(n) is None) or a[n].version != b[n].version
        }
    return out
