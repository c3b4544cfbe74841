"""What the controller and the pods see of the local cluster: pure functions of the running pods.

The local agent plays the API server's and the controllers' parts that a mesh depends on: it gives each
Service a ClusterIP from the node's service range, keeps one EndpointSlice per Service with each pod's
readiness (as the EndpointSlice controller does), writes the Pods with their IPs, and gives every pod an
``/etc/hosts`` that names every Service (``reviews``, ``reviews.default``, ``reviews.default.svc``,
``reviews.default.svc.cluster.local``), the part of cluster DNS the apps use.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mizzen.local.workloads import Namespace, Service, Workloads

Obj = dict[str, Any]
CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class PodView:
    """A running (or starting, or terminating) pod as the cluster objects show it."""

    name: str
    namespace: str
    uid: str
    ip: str | None
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    service_account: str
    # (container name, port name, number) for every declared container port.
    ports: tuple[tuple[str, str, int], ...] = ()
    ready: bool = False
    terminating: bool = False
    owner: tuple[str, str] | None = None  # (kind, name): ReplicaSet <deployment>-<hash>
    node_name: str = "local"


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return selector is not None and all(labels.get(k) == v for k, v in selector.items())


def allocate_ips(
    services: Iterable[Service], cidr: str, taken: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """ClusterIPs by ``namespace/name``: kept from ``taken``, else the one asked for, else the next free.

    Returns the assignment and problems (an asked-for address outside the range or in use), which fall
    back to a free address, as an API server would refuse them instead (local mode keeps running).
    """
    network = ipaddress.ip_network(cidr)
    out: dict[str, str] = {}
    problems: list[str] = []
    wanted = [s for s in services if not s.headless]
    used = {ip for key, ip in taken.items() if any(s.key == key for s in wanted)}
    for svc in wanted:
        if svc.key in taken:
            out[svc.key] = taken[svc.key]
            continue
        asked = (svc.raw.get("spec") or {}).get("clusterIP")
        if asked:
            try:
                address = ipaddress.ip_address(asked)
            except ValueError:
                address = None
            if address is None or address not in network:
                problems.append(
                    f"Service {svc.key}: spec.clusterIP {asked} is not in the service range {cidr}"
                )
            elif str(address) in used:
                problems.append(f"Service {svc.key}: spec.clusterIP {asked} is already in use")
            else:
                out[svc.key] = str(address)
                used.add(str(address))
                continue
        # .1 is left out, as Kubernetes keeps it for the API server's own Service.
        for host in list(network.hosts())[1:]:
            if str(host) not in used:
                out[svc.key] = str(host)
                used.add(str(host))
                break
        else:
            problems.append(f"Service {svc.key}: the service range {cidr} is full")
    return out, problems


def _target_port(port: int | str, pod: PodView) -> int | None:
    if isinstance(port, int):
        return port
    for _container, name, number in pod.ports:
        if name == port:
            return number
    return None


def namespace_objects(namespaces: Iterable[Namespace]) -> list[Obj]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns.name,
                "labels": {"kubernetes.io/metadata.name": ns.name, **ns.labels},
                "annotations": dict(ns.annotations),
            },
        }
        for ns in sorted(namespaces, key=lambda n: n.name)
    ]


def service_object(svc: Service, cluster_ip: str | None) -> Obj:
    spec: Obj = {
        "type": (svc.raw.get("spec") or {}).get("type", "ClusterIP"),
        "clusterIP": cluster_ip or "None",
        "ports": [
            {
                k: v
                for k, v in (
                    ("name", p.name or None),
                    ("port", p.port),
                    ("targetPort", p.target_port),
                    ("protocol", p.protocol),
                    ("appProtocol", p.app_protocol),
                )
                if v is not None
            }
            for p in svc.ports
        ],
    }
    if svc.selector is not None:
        spec["selector"] = dict(svc.selector)
    meta = svc.raw.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": svc.name,
            "namespace": svc.namespace,
            "labels": dict(meta.get("labels") or {}),
            "annotations": dict(meta.get("annotations") or {}),
        },
        "spec": spec,
    }


def endpoint_slices(svc: Service, pods: Iterable[PodView]) -> list[Obj]:
    """The Service's EndpointSlices: one per distinct set of resolved ports (named target ports can differ
    between pods), every selected pod with an IP in it, with its readiness."""
    if svc.selector is None:
        return []  # Endpoints of a selector-less Service are the user's to write
    groups: dict[tuple[tuple[str, int], ...], list[Obj]] = {}
    for pod in sorted(pods, key=lambda p: p.name):
        if pod.namespace != svc.namespace or not pod.ip or not selects(svc.selector, pod.labels):
            continue
        resolved = tuple((p.name, _target_port(p.target_port, pod) or 0) for p in svc.ports)
        if any(number == 0 for _, number in resolved):
            continue  # a named target port this pod does not declare: not an endpoint for that port
        groups.setdefault(resolved, []).append(
            {
                "addresses": [pod.ip],
                "conditions": {
                    "ready": pod.ready and not pod.terminating,
                    "serving": pod.ready,
                    "terminating": pod.terminating,
                },
                "nodeName": pod.node_name,
                "targetRef": {"kind": "Pod", "name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
            }
        )
    protocols = {p.name: (p.protocol, p.app_protocol) for p in svc.ports}
    slices = []
    for index, (ports, endpoints) in enumerate(sorted(groups.items())):
        slices.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{svc.name}-{index + 1}",
                    "namespace": svc.namespace,
                    "labels": {
                        "kubernetes.io/service-name": svc.name,
                        "endpointslice.kubernetes.io/managed-by": "local.mizzen.io",
                    },
                },
                "addressType": "IPv4",
                "ports": [
                    {
                        k: v
                        for k, v in (
                            ("name", name or None),
                            ("port", number),
                            ("protocol", protocols[name][0]),
                            ("appProtocol", protocols[name][1]),
                        )
                        if v is not None
                    }
                    for name, number in ports
                ],
                "endpoints": endpoints,
            }
        )
    return slices


def pod_object(pod: PodView) -> Obj:
    containers: dict[str, list[Obj]] = {}
    for container, name, number in pod.ports:
        entry: Obj = {"containerPort": number, "protocol": "TCP"}
        if name:
            entry["name"] = name
        containers.setdefault(container, []).append(entry)
    meta: Obj = {
        "name": pod.name,
        "namespace": pod.namespace,
        "uid": pod.uid,
        "labels": dict(pod.labels),
        "annotations": dict(pod.annotations),
    }
    if pod.owner is not None:
        kind, owner = pod.owner
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": kind, "name": owner, "controller": True, "uid": owner}
        ]
    status: Obj = {
        "phase": "Running" if pod.ip else "Pending",
        "conditions": [{"type": "Ready", "status": "True" if pod.ready else "False"}],
    }
    if pod.ip:
        status["podIP"] = pod.ip
        status["podIPs"] = [{"ip": pod.ip}]
    obj: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "serviceAccountName": pod.service_account,
            "nodeName": pod.node_name,
            "containers": [{"name": c, "ports": p} for c, p in containers.items()] or [{"name": "app"}],
        },
        "status": status,
    }
    if pod.terminating:
        meta["deletionTimestamp"] = "1970-01-01T00:00:00Z"
    return obj


def cluster_objects(
    workloads: Workloads, namespaces: Iterable[str], pods: Iterable[PodView], cluster_ips: Mapping[str, str]
) -> list[Obj]:
    """Everything the controller reads about the cluster, in a stable order (so unchanged state writes the
    same bytes and the controller's files source sees no change)."""
    pods = sorted(pods, key=lambda p: (p.namespace, p.name))
    objects = namespace_objects(workloads.namespace(n) for n in sorted(set(namespaces)))
    for key in sorted(workloads.services):
        svc = workloads.services[key]
        objects.append(service_object(svc, cluster_ips.get(key)))
        objects.extend(endpoint_slices(svc, pods))
    objects.extend(pod_object(p) for p in pods)
    return objects


@dataclass
class HostsEntry:
    ip: str
    names: list[str] = field(default_factory=list)


def service_names(name: str, namespace: str, *, same_namespace: bool) -> list[str]:
    """The names cluster DNS answers for a Service, as a pod in ``namespace`` (or another) may write them."""
    full = [f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"]
    return [name, *full] if same_namespace else full


def hosts_file(
    pod_name: str,
    pod_namespace: str,
    pod_ip: str | None,
    services: Iterable[Service],
    cluster_ips: Mapping[str, str],
    endpoints: Mapping[str, list[str]] | None = None,
) -> str:
    """A pod's /etc/hosts: itself, then every Service by its ClusterIP (headless ones by their first ready
    endpoint, as DNS would answer)."""
    lines = [
        "# Written by mizzen local: the cluster's Service names (cluster DNS stands here).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    if pod_ip:
        lines.append(f"{pod_ip}\t{pod_name}")
    for svc in sorted(services, key=lambda s: (s.namespace, s.name)):
        ip = cluster_ips.get(svc.key)
        if ip is None and svc.headless:
            ready = (endpoints or {}).get(svc.key) or []
            ip = ready[0] if ready else None
        if ip is None:
            continue
        names = service_names(svc.name, svc.namespace, same_namespace=svc.namespace == pod_namespace)
        lines.append(f"{ip}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"
