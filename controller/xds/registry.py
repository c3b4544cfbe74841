"""The service registry translation works from: Kubernetes Services and ServiceEntries as one kind of
service, with their endpoints, and the VirtualServices/DestinationRules that apply to each host.

A :class:`Registry` is derived from one snapshot. Service views are memoised per source object revision,
so deriving the registry of the next snapshot costs only what changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import msgspec

from controller.model.hosts import DEFAULT_DOMAIN, host_matches, is_wildcard, service_hostname, visible_to
from controller.model.istio import DestinationRule, ServiceEntry, VirtualService
from controller.model.kube import Pod, Service
from controller.model.protocol import MeshProtocol
from controller.model.snapshot import ConfigChange, MeshSnapshot
from controller.model.values import FrozenMap, ResourceKey

HEALTHY, UNHEALTHY, DRAINING = "HEALTHY", "UNHEALTHY", "DRAINING"


class MeshPort(msgspec.Struct, frozen=True, gc=False):
    name: str
    port: int
    protocol: MeshProtocol
    target_port: int | str | None


class MeshService(msgspec.Struct, frozen=True, gc=False):
    """One host the mesh can route to (a Kubernetes Service, or one host of a ServiceEntry)."""

    hostname: str
    namespace: str
    source: ResourceKey
    addresses: tuple[str, ...]  # ClusterIPs or ServiceEntry addresses; empty: headless / no VIP
    ports: tuple[MeshPort, ...]
    # EDS (Kubernetes endpoints or ServiceEntry STATIC endpoints), DNS, or NONE (original destination)
    resolution: str
    export_to: frozenset[str]
    external: bool
    # ServiceEntry address ranges (CIDRs): a VIP-less host's TCP traffic is told apart by destination.
    subnets: tuple[str, ...] = ()

    def port(self, number: int) -> MeshPort | None:
        return next((p for p in self.ports if p.port == number), None)


class LbEndpoint(NamedTuple):
    address: str
    port: int
    health: str
    labels: FrozenMap[str]
    locality: str  # Istio's "region/zone/subzone"; parts may be empty
    weight: int | None


def service_view(svc: Service) -> MeshService:
    return MeshService(
        hostname=svc.hostname,
        namespace=svc.namespace,
        source=svc.key,
        addresses=svc.cluster_ips,
        ports=tuple(
            MeshPort(p.name, p.port, p.protocol, p.target_port) for p in svc.ports if p.transport == "TCP"
        ),
        resolution="EDS" if svc.service_type != "ExternalName" else "DNS",
        export_to=svc.export_to,
        external=False,
    )


def service_entry_views(se: ServiceEntry) -> tuple[MeshService, ...]:
    resolution = {"STATIC": "EDS", "DNS_ROUND_ROBIN": "DNS"}.get(se.resolution, se.resolution)
    ports = tuple(MeshPort(p.name, p.number, p.protocol, p.target_port) for p in se.ports)
    return tuple(
        MeshService(
            hostname=host,
            namespace=se.meta.namespace,
            source=se.key,
            addresses=tuple(a for a in se.addresses if "/" not in a),
            subnets=tuple(a for a in se.addresses if "/" in a),
            ports=ports,
            resolution=resolution,
            export_to=se.export_to,
            external=se.location == "MESH_EXTERNAL",
        )
        for host in se.hosts
    )


def selected_pods(snapshot: MeshSnapshot, se: ServiceEntry) -> list[Pod]:
    """The pods a ServiceEntry's workloadSelector picks: running, addressed, in its namespace, by address."""
    selector = se.workload_selector
    if selector is None:
        return []
    pods = [
        p
        for p in snapshot.objects("Pod")
        if p.namespace == se.meta.namespace and p.ip and p.phase == "Running" and p.labels.matches(selector)
    ]
    return sorted(pods, key=lambda p: p.ip)


class Registry:
    """Services by host and the routing config for each, for one snapshot.

    Built from the previous registry and the snapshot's changes, it touches only the changed sources; the
    VirtualService and DestinationRule indexes are rebuilt only when one of those changed.
    """

    def __init__(
        self,
        snapshot: MeshSnapshot,
        previous: Registry | None = None,
        domain: str = DEFAULT_DOMAIN,
        changes: Iterable[ConfigChange] | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.domain = domain
        self._vs_by_host: dict[str, list[VirtualService]] = {}
        self._wildcard_vs: list[VirtualService] = []
        self._dr_by_host: dict[str, list[DestinationRule]] = {}
        kinds = {c.key.kind for c in changes} if changes is not None else None
        if previous is None or changes is None:
            self._memo: dict[ResourceKey, tuple[int, tuple[MeshService, ...]]] = {}
            self._sources: dict[str, frozenset[ResourceKey]] = {}
            for kind in ("ServiceEntry", "Service"):
                for key, stamped in snapshot.items(kind).items():
                    self._put(key, stamped.revision, stamped.obj)
            self.services: dict[str, MeshService] = {}
            for host in self._sources:
                self._elect(host)
        else:
            self._memo = dict(previous._memo)
            self._sources = dict(previous._sources)
            self.services = dict(previous.services)
            hosts: set[str] = set()
            for change in changes:
                if change.key.kind not in ("Service", "ServiceEntry"):
                    continue
                hosts.update(self._drop(change.key))
                current = snapshot.items(change.key.kind).get(change.key)
                if current is not None:
                    hosts.update(v.hostname for v in self._put(change.key, current.revision, current.obj))
            for host in hosts:
                self._elect(host)
        if previous is not None and kinds is not None and "VirtualService" not in kinds:
            self._vs_by_host, self._wildcard_vs = previous._vs_by_host, previous._wildcard_vs
        else:
            self._index_virtual_services()
        if previous is not None and kinds is not None and "DestinationRule" not in kinds:
            self._dr_by_host = previous._dr_by_host
        else:
            self._dr_by_host = {}
            for dr in sorted(snapshot.destination_rules(), key=lambda d: (d.meta.creation_timestamp, d.key)):
                self._dr_by_host.setdefault(dr.host, []).append(dr)

    def _put(self, key: ResourceKey, revision: int, obj: Any) -> tuple[MeshService, ...]:
        views = (service_view(obj),) if key.kind == "Service" else service_entry_views(obj)
        self._memo[key] = (revision, views)
        for view in views:
            self._sources[view.hostname] = self._sources.get(view.hostname, frozenset()) | {key}
        return views

    def _drop(self, key: ResourceKey) -> list[str]:
        _, views = self._memo.pop(key, (0, ()))
        for view in views:
            remaining = self._sources.get(view.hostname, frozenset()) - {key}
            if remaining:
                self._sources[view.hostname] = remaining
            else:
                self._sources.pop(view.hostname, None)
        return [v.hostname for v in views]

    def _elect(self, host: str) -> None:
        """One service per host: a Kubernetes Service wins over ServiceEntries (Istio's registry merge),
        then the first source by key, so the choice does not depend on arrival order."""
        sources = self._sources.get(host)
        if not sources:
            self.services.pop(host, None)
            return
        winner = min(sources, key=lambda k: (k.kind != "Service", k))
        self.services[host] = next(v for v in self._memo[winner][1] if v.hostname == host)

    def _index_virtual_services(self) -> None:
        self._vs_by_host = {}
        self._wildcard_vs = []
        for vs in sorted(self.snapshot.virtual_services(), key=lambda v: (v.meta.creation_timestamp, v.key)):
            if not vs.applies_to_mesh:
                continue
            for host in vs.hosts:
                if is_wildcard(host):
                    self._wildcard_vs.append(vs)
                else:
                    self._vs_by_host.setdefault(host, []).append(vs)

    def sources_of(self, key: ResourceKey) -> tuple[MeshService, ...]:
        entry = self._memo.get(key)
        return entry[1] if entry else ()

    def virtual_service_for(self, host: str, namespace: str) -> VirtualService | None:
        """The VirtualService a client in ``namespace`` uses for ``host``: the oldest one visible, exact host
        before wildcard (Istio merges several; Mizzen takes the first and reports nothing lost: the others
        remain visible in the debug view)."""
        for vs in self._vs_by_host.get(host, ()):
            if visible_to(vs.export_to, namespace):
                return vs
        best: VirtualService | None = None
        best_len = -1
        for vs in self._wildcard_vs:
            if not visible_to(vs.export_to, namespace):
                continue
            for pattern in vs.hosts:
                if is_wildcard(pattern) and host_matches(pattern, host) and len(pattern) > best_len:
                    best, best_len = vs, len(pattern)
        return best

    def delegate(self, namespace: str, name: str) -> VirtualService | None:
        """A delegate VirtualService (no hosts of its own) by name, for a root's ``http[].delegate``."""
        found = self.snapshot.get(ResourceKey("VirtualService", namespace, name))
        return found if isinstance(found, VirtualService) and not found.hosts else None

    def destination_rule_for(
        self, host: str, client_namespace: str, service_namespace: str
    ) -> DestinationRule | None:
        """Istio's lookup order: the client's namespace, then the service's, then the root namespace;
        an exact host before the most specific wildcard."""
        candidates: list[DestinationRule] = list(self._dr_by_host.get(host, ()))
        if not candidates:
            best = -1
            for pattern, rules in self._dr_by_host.items():
                if is_wildcard(pattern) and host_matches(pattern, host) and len(pattern) > best:
                    candidates, best = list(rules), len(pattern)
        for namespace in (client_namespace, service_namespace, "istio-system"):
            for dr in candidates:
                if dr.meta.namespace == namespace and visible_to(dr.export_to, client_namespace):
                    return dr
        return None

    def endpoints(self, service: MeshService, port: MeshPort) -> list[LbEndpoint]:
        """The endpoints of one service port, with labels for subset selection."""
        if service.source.kind == "ServiceEntry":
            return self._entry_endpoints(service, port)
        snapshot = self.snapshot
        if service.resolution == "DNS":
            # An ExternalName Service: the proxy resolves the external name itself (as Istio does).
            svc: Service | None = snapshot.get(service.source)
            name = svc.external_name if svc is not None else None
            return [LbEndpoint(name, port.port, HEALTHY, FrozenMap(), "", None)] if name else []
        out: list[LbEndpoint] = []
        for eps in snapshot.slices_of(service.source.namespace, service.source.name):
            target = next((p for p in eps.ports if p.name == port.name), None)
            if target is None:
                continue
            for ep in eps.endpoints:
                if ep.ready:
                    health = HEALTHY
                elif ep.serving and ep.terminating:
                    health = DRAINING
                else:
                    health = UNHEALTHY
                pod = snapshot.get(ep.pod) if ep.pod else None
                labels = pod.labels if pod is not None else FrozenMap()
                for address in ep.addresses:
                    out.append(
                        LbEndpoint(
                            address, target.port, health, labels, f"/{ep.zone}" if ep.zone else "", None
                        )
                    )
        out.sort(key=lambda e: (e.address, e.port))
        return out

    def _entry_endpoints(self, service: MeshService, port: MeshPort) -> list[LbEndpoint]:
        se: ServiceEntry | None = self.snapshot.get(service.source)
        if se is None:
            return []
        target = port.target_port if isinstance(port.target_port, int) else port.port
        if se.workload_selector is not None:
            # Istio's selection of pods by a ServiceEntry: the running pods of its namespace whose labels
            # match, at their pod address and the port's target port.
            return [
                LbEndpoint(str(pod.ip), target, HEALTHY, pod.labels, "", None)
                for pod in selected_pods(self.snapshot, se)
            ]
        out = [
            LbEndpoint(
                e.address, e.ports.get(port.name, target), HEALTHY, e.labels, e.locality or "", e.weight
            )
            for e in se.endpoints
        ]
        if not out and service.resolution == "DNS":
            # DNS resolution without endpoints: the host itself is resolved by the proxy.
            out.append(LbEndpoint(service.hostname, target, HEALTHY, FrozenMap(), "", None))
        return out

    def hosts_of_change(self, key: ResourceKey, old: object, new: object) -> Iterable[str]:
        """Hostnames whose generated config a change to ``key`` may touch (old and new state)."""
        kind = key.kind
        if kind == "Service":
            return {o.hostname for o in (old, new) if isinstance(o, Service)}
        if kind == "ServiceEntry":
            return {h for o in (old, new) if isinstance(o, ServiceEntry) for h in o.hosts}
        if kind == "EndpointSlice":
            names = {getattr(o, "service_name", None) for o in (old, new)} - {None}
            return {service_hostname(str(n), key.namespace, self.domain) for n in names}
        if kind in ("VirtualService", "DestinationRule"):
            patterns: set[str] = set()
            for o in (old, new):
                if isinstance(o, VirtualService):
                    patterns.update(o.hosts)
                    if not o.hosts:
                        # A delegate: the hosts of every root that delegates to it.
                        for root in self.snapshot.virtual_services():
                            named = {(d.namespace, d.name) for d in root.delegates}
                            if (key.namespace, key.name) in named:
                                patterns.update(root.hosts)
                elif isinstance(o, DestinationRule):
                    patterns.add(o.host)
                    # Routes to this host from other hosts' VirtualServices carry its consistent hash.
                    patterns.update(self._routing_to(o.host))
            return self._expand(patterns)
        if kind == "Pod":
            # Labels pick subsets: every service selecting the pod (before or after) is touched, and
            # every ServiceEntry whose workloadSelector does (the pod is, or was, one of its endpoints).
            hosts: set[str] = set()
            entries = [
                se
                for se in self.snapshot.objects("ServiceEntry")
                if se.workload_selector is not None and se.meta.namespace == key.namespace
            ]
            for o in (old, new):
                if o is None:
                    continue
                for svc in self.snapshot.services():
                    if svc.namespace == key.namespace and svc.selector and o.labels.matches(svc.selector):  # type: ignore[attr-defined]
                        hosts.add(svc.hostname)
                for se in entries:
                    if o.labels.matches(se.workload_selector):  # type: ignore[attr-defined]
                        hosts.update(se.hosts)
            return hosts
        return ()

    def _routing_to(self, pattern: str) -> set[str]:
        """Hosts whose VirtualService routes to a host ``pattern`` covers."""
        out: set[str] = set()
        for vs in self.snapshot.virtual_services():
            if any(host_matches(pattern, d.destination.host) for r in vs.http for d in r.route):
                out.update(vs.hosts)
        return out

    def _expand(self, patterns: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for pattern in patterns:
            if is_wildcard(pattern):
                out.update(h for h in self.services if host_matches(pattern, h))
            else:
                out.add(pattern)
        return out
