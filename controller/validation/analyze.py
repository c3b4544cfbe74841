"""Checks across objects, in the spirit of ``istioctl analyze``: each object is valid on its own, but
together they route traffic nowhere.

- a VirtualService route to a subset no DestinationRule defines (Istio's IST0101; requests get 503 NR);
- a route to a host that neither a Service nor a ServiceEntry provides (IST0101, "referenced host not found");
- two VirtualServices for one host bound to the sidecars (IST0109): sidecars use the older one for that
  host and ignore the newer (gateways merge them instead).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from controller.model.hosts import host_matches, is_wildcard
from controller.model.istio import DestinationRule, VirtualService
from controller.model.snapshot import MeshSnapshot
from controller.model.values import ResourceKey
from controller.validation.schema import Issue


def known_hosts(snapshot: MeshSnapshot) -> set[str]:
    hosts = {svc.hostname for svc in snapshot.services()}
    for entry in snapshot.service_entries():
        hosts.update(entry.hosts)
    return hosts


def _host_known(host: str, hosts: set[str], wildcards: list[str]) -> bool:
    return host in hosts or any(host_matches(pattern, host) for pattern in wildcards)


def _subsets_for(host: str, rules: Iterable[DestinationRule]) -> set[str]:
    names: set[str] = set()
    for dr in rules:
        if dr.host == host or (is_wildcard(dr.host) and host_matches(dr.host, host)):
            names.update(s.name for s in dr.subsets)
    return names


def analyze(snapshot: MeshSnapshot) -> Mapping[ResourceKey, tuple[Issue, ...]]:
    """Warnings per VirtualService; empty when every route leads somewhere."""
    hosts = known_hosts(snapshot)
    wildcards = [h for h in hosts if is_wildcard(h)]
    rules = list(snapshot.destination_rules())
    conflicts = _mesh_host_conflicts(snapshot)
    out: dict[ResourceKey, tuple[Issue, ...]] = {}
    for vs in snapshot.virtual_services():
        issues = list(_analyze_virtual_service(vs, hosts, wildcards, rules)) + conflicts.get(vs.key, [])
        if issues:
            out[vs.key] = tuple(issues)
    return out


def _seen_together(a: frozenset[str], b: frozenset[str]) -> bool:
    """Whether some namespace sees both (exportTo sets; ``*`` is every namespace)."""
    return "*" in a or "*" in b or bool(a & b)


def _mesh_host_conflicts(snapshot: MeshSnapshot) -> dict[ResourceKey, list[Issue]]:
    """IST0109: a host defined by several VirtualServices bound to the mesh. Sidecars use the oldest one
    for it (as Istio picks one), so each newer one is told which older one wins."""
    owner: dict[str, VirtualService] = {}
    out: dict[ResourceKey, list[Issue]] = {}
    ordered = sorted(snapshot.virtual_services(), key=lambda v: (v.meta.creation_timestamp, v.key))
    for vs in ordered:
        if not vs.applies_to_mesh or not vs.hosts:
            continue
        for i, host in enumerate(vs.hosts):
            first = owner.setdefault(host, vs)
            if first is not vs and _seen_together(first.export_to, vs.export_to):
                out.setdefault(vs.key, []).append(
                    Issue(
                        "warning",
                        f"hosts[{i}]",
                        f"{host} is also defined by VirtualService {first.meta.namespace}/{first.meta.name}, "
                        "which sidecars use for it; this one is ignored there (merge them, or bind one to "
                        "a gateway)",
                    )
                )
    return out


def _analyze_virtual_service(
    vs: VirtualService, hosts: set[str], wildcards: list[str], rules: list[DestinationRule]
) -> Iterable[Issue]:
    routes = [(f"http[{i}].route", r.route) for i, r in enumerate(vs.http)]
    routes += [(f"tcp[{i}].route", r.route) for i, r in enumerate(vs.tcp)]
    routes += [(f"tls[{i}].route", r.route) for i, r in enumerate(vs.tls)]
    for path, destinations in routes:
        for j, dest in enumerate(destinations):
            host, subset = dest.destination.host, dest.destination.subset
            where = f"{path}[{j}].destination"
            if not _host_known(host, hosts, wildcards):
                yield Issue("warning", f"{where}.host", f"no Service or ServiceEntry provides {host}")
            elif subset and subset not in _subsets_for(host, rules):
                yield Issue(
                    "warning",
                    f"{where}.subset",
                    f"subset {subset!r} is not defined by any DestinationRule for {host} "
                    "(requests routed to it fail with 503)",
                )
