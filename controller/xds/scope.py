"""Which config a proxy sees: its namespace, the Sidecar resource that applies to it, and its generator.

Proxies with equal :class:`ScopeKey` get identical outbound config, so it is computed once per scope and
shared; only the inbound side is per proxy.
"""

from __future__ import annotations

from typing import NamedTuple

from controller.model.hosts import ROOT_NAMESPACE, host_matches, visible_to
from controller.model.istio import Sidecar
from controller.model.kube import Pod
from controller.model.policies import TOPOLOGY_KEYS
from controller.model.snapshot import MeshSnapshot
from controller.model.telemetry import CLIENT, TelemetrySettings, resolve_cached
from controller.model.values import FrozenMap, ResourceKey
from controller.xds.node import ProxyNode
from controller.xds.registry import MeshService


class ScopeKey(NamedTuple):
    namespace: str
    sidecar: ResourceKey | None
    proxyless: bool
    # The proxy's labels that some VirtualService's sourceLabels names (usually none): routes depend on them.
    labels: FrozenMap[str] = FrozenMap()
    # The proxy's locality ("region/zone/sub_zone"): endpoints are prioritised by it (locality failover).
    locality: str = ""
    # A gateway ("router" node): outbound clusters only; its listeners come from its Gateways.
    router: bool = False
    # What the Telemetry API and the mesh config put into its outbound HCMs (controller.model.telemetry).
    telemetry: TelemetrySettings | None = None
    # A gateway with an AUTO_PASSTHROUGH server: every cluster also comes as Istio's "SNI-DNAT" twin,
    # named by the mesh SNI and without TLS origination (the client's own mTLS passes through it).
    sni_dnat: bool = False


# (the VirtualService and DestinationRule maps it was computed from, keys)
_label_keys: list[tuple[tuple[object, object], frozenset[str]]] = []


def source_label_keys(snapshot: MeshSnapshot) -> frozenset[str]:
    """Every client label key config depends on: what VirtualService matches select clients by
    (``sourceLabels``) and what DestinationRules order endpoints by (``failoverPriority`` label keys).
    Snapshots share their object maps until one changes, so the answer is kept against those maps."""
    current = (snapshot.items("VirtualService"), snapshot.items("DestinationRule"))
    if _label_keys and _label_keys[0][0][0] is current[0] and _label_keys[0][0][1] is current[1]:
        return _label_keys[0][1]
    keys: set[str] = set()
    for vs in snapshot.virtual_services():
        for rule in vs.http:
            for m in rule.matches:
                keys.update(m.source_labels)
        for l4 in (*vs.tcp, *vs.tls):
            for m4 in l4.matches:
                keys.update(m4.source_labels)
    for dr in snapshot.destination_rules():
        for policy in dr.policies():
            setting = policy.locality_lb
            if setting is not None:
                keys.update(k for k in setting.failover_priority if "=" not in k and k not in TOPOLOGY_KEYS)
    found = frozenset(keys)
    _label_keys[:] = [(current, found)]
    return found


def find_pod(snapshot: MeshSnapshot, node: ProxyNode) -> Pod | None:
    """The proxy's Pod: by namespace/name, else by IP."""
    pod = snapshot.pod(node.namespace, node.pod) if node.pod else None
    if pod is None:
        for ip in (node.ip, *node.ips):
            pod = snapshot.pod_by_ip(ip)
            if pod is not None:
                break
    return pod


def sidecar_for(snapshot: MeshSnapshot, namespace: str, labels: FrozenMap[str]) -> Sidecar | None:
    """Istio's choice: a Sidecar of the namespace whose selector matches (oldest first), else the namespace's
    Sidecar without selector, else the root namespace's Sidecar without selector."""
    candidates = sorted(
        (s for s in snapshot.sidecars() if s.meta.namespace in (namespace, ROOT_NAMESPACE)),
        key=lambda s: (s.meta.creation_timestamp, s.meta.name),
    )
    for sc in candidates:
        if sc.meta.namespace == namespace and sc.workload_selector and labels.matches(sc.workload_selector):
            return sc
    for ns in (namespace, ROOT_NAMESPACE):
        for sc in candidates:
            if sc.meta.namespace == ns and sc.workload_selector is None:
                return sc
    return None


def scope_of(snapshot: MeshSnapshot, node: ProxyNode) -> ScopeKey:
    pod = find_pod(snapshot, node)
    labels = pod.labels if pod is not None else node.labels
    # Sidecar resources scope sidecars only; a gateway sees what its namespace may see (as in Istio).
    sidecar = None if node.type == "router" else sidecar_for(snapshot, node.namespace, labels)
    keys = source_label_keys(snapshot)
    picked = FrozenMap({k: labels[k] for k in keys if k in labels}) if keys else FrozenMap()
    return ScopeKey(
        node.namespace,
        sidecar.key if sidecar else None,
        node.proxyless,
        picked,
        node.locality,
        node.type == "router",
        None if node.proxyless else resolve_cached(snapshot, node.namespace, labels, CLIENT),
        node.type == "router" and _auto_passthrough(snapshot, labels),
    )


def _auto_passthrough(snapshot: MeshSnapshot, labels: FrozenMap[str]) -> bool:
    """Whether a Gateway selecting these labels has an AUTO_PASSTHROUGH server."""
    return any(
        server.tls is not None and server.tls.mode == "AUTO_PASSTHROUGH"
        for gw in snapshot.objects("Gateway")
        if labels.matches(gw.selector)
        for server in gw.servers
    )


def egress_allows(sidecar: Sidecar, service: MeshService) -> bool:
    """True when one of the Sidecar's ``namespace/host`` egress patterns covers the service."""
    for entry in sidecar.egress_hosts:
        ns, _, host = entry.partition("/")
        if ns == "~":
            continue
        if ns == ".":
            ns = sidecar.meta.namespace
        if ns != "*" and ns != service.namespace:
            continue
        if host_matches(host, service.hostname):
            return True
    return False


class Scope:
    """A resolved scope: the Sidecar object (if any) and the visibility rules it implies."""

    def __init__(self, key: ScopeKey, snapshot: MeshSnapshot, allow_any_default: bool = True) -> None:
        self.key = key
        self.namespace = key.namespace
        self.sidecar: Sidecar | None = snapshot.get(key.sidecar) if key.sidecar else None
        policy = self.sidecar.outbound_traffic_policy if self.sidecar else None
        self.allow_any = policy == "ALLOW_ANY" if policy else allow_any_default

    def sees(self, service: MeshService) -> bool:
        if not visible_to(service.export_to, self.namespace):
            return False
        if self.sidecar is not None and self.sidecar.egress_hosts:
            return egress_allows(self.sidecar, service)
        return True
