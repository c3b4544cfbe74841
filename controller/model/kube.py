"""Kubernetes objects the mesh reads: Namespace, Service, EndpointSlice, Pod."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from controller.model.hosts import resolve_export_to, service_hostname
from controller.model.meta import ObjectMeta, metadata_of, namespace_of, object_meta, spec_of
from controller.model.protocol import MeshProtocol, resolve_port_protocol
from controller.model.values import FrozenMap, ResourceKey, str_map

# Istio's per-Service exportTo, written as a comma-separated annotation.
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ZONE_LABEL = "topology.kubernetes.io/zone"


class Namespace(msgspec.Struct, frozen=True, gc=False):
    name: str
    labels: FrozenMap[str]

    @property
    def key(self) -> ResourceKey:
        return ResourceKey("Namespace", "", self.name)

    @property
    def injection_enabled(self) -> bool:
        return self.labels.get("istio-injection") == "enabled"


class ServicePort(msgspec.Struct, frozen=True, gc=False):
    """One Service port and the protocol the mesh resolved for it."""

    name: str
    port: int
    # An int, or the name of a container port (resolved per endpoint through the EndpointSlice).
    target_port: int | str
    transport: str  # TCP, UDP or SCTP
    app_protocol: str | None
    protocol: MeshProtocol


class Service(msgspec.Struct, frozen=True, gc=False):
    meta: ObjectMeta
    hostname: str
    service_type: str
    cluster_ips: tuple[str, ...]  # empty for a headless Service
    ports: tuple[ServicePort, ...]
    selector: FrozenMap[str]
    export_to: frozenset[str]
    external_name: str | None

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def key(self) -> ResourceKey:
        return ResourceKey("Service", self.meta.namespace, self.meta.name)

    @property
    def headless(self) -> bool:
        return not self.cluster_ips and self.service_type != "ExternalName"

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)


class EndpointPort(msgspec.Struct, frozen=True, gc=False):
    name: str
    port: int
    transport: str
    app_protocol: str | None


class SliceEndpoint(msgspec.Struct, frozen=True, gc=False):
    """One endpoint of an EndpointSlice, with its conditions read as Kubernetes defines them."""

    addresses: tuple[str, ...]
    ready: bool
    serving: bool
    terminating: bool
    pod: ResourceKey | None
    node_name: str | None
    zone: str | None
    hostname: str | None


class EndpointSlice(msgspec.Struct, frozen=True, gc=False):
    meta: ObjectMeta
    service_name: str | None  # from the kubernetes.io/service-name label
    address_type: str
    ports: tuple[EndpointPort, ...]
    endpoints: tuple[SliceEndpoint, ...]

    @property
    def key(self) -> ResourceKey:
        return ResourceKey("EndpointSlice", self.meta.namespace, self.meta.name)


class ContainerPort(msgspec.Struct, frozen=True, gc=False):
    name: str
    port: int
    transport: str


class Pod(msgspec.Struct, frozen=True, gc=False):
    meta: ObjectMeta
    ip: str | None
    ips: tuple[str, ...]
    node_name: str | None
    service_account: str
    phase: str
    container_ports: tuple[ContainerPort, ...]

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def labels(self) -> FrozenMap[str]:
        return self.meta.labels

    @property
    def key(self) -> ResourceKey:
        return ResourceKey("Pod", self.meta.namespace, self.meta.name)


def build_namespace(raw: Mapping[str, Any]) -> Namespace:
    meta = metadata_of(raw)
    return Namespace(name=str(meta.get("name") or ""), labels=str_map(meta.get("labels")))


def _service_port(raw: Mapping[str, Any]) -> ServicePort:
    port = int(raw["port"])
    name = str(raw.get("name") or "")
    transport = str(raw.get("protocol") or "TCP")
    app_protocol = raw.get("appProtocol")
    app_protocol = str(app_protocol) if app_protocol is not None else None
    target = raw.get("targetPort")
    target_port: int | str = port if target is None else (target if isinstance(target, str) else int(target))
    return ServicePort(
        name=name,
        port=port,
        target_port=target_port,
        transport=transport,
        app_protocol=app_protocol,
        protocol=resolve_port_protocol(port, name, transport, app_protocol),
    )


def build_service(raw: Mapping[str, Any], domain: str = "cluster.local") -> Service:
    meta = object_meta(raw, keep_annotations=True)
    spec = spec_of(raw)
    cluster_ips = [str(ip) for ip in (spec.get("clusterIPs") or ()) if ip and ip != "None"]
    if not cluster_ips and spec.get("clusterIP") not in (None, "", "None"):
        cluster_ips = [str(spec["clusterIP"])]
    export_annotation = meta.annotations.get(EXPORT_TO_ANNOTATION, "")
    export_to = [part.strip() for part in export_annotation.split(",") if part.strip()]
    return Service(
        meta=meta,
        hostname=service_hostname(meta.name, meta.namespace, domain),
        service_type=str(spec.get("type") or "ClusterIP"),
        cluster_ips=tuple(cluster_ips),
        ports=tuple(_service_port(p) for p in spec.get("ports") or ()),
        selector=str_map(spec.get("selector")),
        export_to=resolve_export_to(export_to, meta.namespace),
        external_name=str(spec["externalName"]) if spec.get("externalName") else None,
    )


def _slice_endpoint(raw: Mapping[str, Any], namespace: str) -> SliceEndpoint:
    conditions = raw.get("conditions") or {}
    # Kubernetes: nil "ready" means ready; nil "serving" means the same as ready; nil terminating is false.
    ready = conditions.get("ready") is not False
    serving = conditions["serving"] if conditions.get("serving") is not None else ready
    target = raw.get("targetRef") or {}
    pod = None
    if target.get("kind", "Pod") == "Pod" and target.get("name"):
        pod = ResourceKey("Pod", str(target.get("namespace") or namespace), str(target["name"]))
    return SliceEndpoint(
        addresses=tuple(str(a) for a in raw.get("addresses") or ()),
        ready=ready,
        serving=bool(serving),
        terminating=bool(conditions.get("terminating", False)),
        pod=pod,
        node_name=raw.get("nodeName"),
        zone=raw.get("zone"),
        hostname=raw.get("hostname"),
    )


def build_endpoint_slice(raw: Mapping[str, Any]) -> EndpointSlice:
    meta = object_meta(raw)
    namespace = namespace_of(raw)
    ports = tuple(
        EndpointPort(
            name=str(p.get("name") or ""),
            port=int(p["port"]),
            transport=str(p.get("protocol") or "TCP"),
            app_protocol=p.get("appProtocol"),
        )
        for p in raw.get("ports") or ()
        if p.get("port") is not None  # a nil port means "all ports"; the mesh cannot route to that
    )
    return EndpointSlice(
        meta=meta,
        service_name=meta.labels.get("kubernetes.io/service-name"),
        address_type=str(raw.get("addressType") or "IPv4"),
        ports=ports,
        endpoints=tuple(_slice_endpoint(e, namespace) for e in raw.get("endpoints") or ()),
    )


def build_pod(raw: Mapping[str, Any]) -> Pod:
    meta = object_meta(raw, keep_annotations=True)
    spec = spec_of(raw)
    status = raw.get("status") or {}
    ips = tuple(str(entry["ip"]) for entry in status.get("podIPs") or () if entry.get("ip"))
    ip = status.get("podIP") or (ips[0] if ips else None)
    container_ports = tuple(
        ContainerPort(
            name=str(port.get("name") or ""),
            port=int(port["containerPort"]),
            transport=str(port.get("protocol") or "TCP"),
        )
        for container in spec.get("containers") or ()
        for port in container.get("ports") or ()
        if port.get("containerPort") is not None
    )
    return Pod(
        meta=meta,
        ip=str(ip) if ip else None,
        ips=ips or ((str(ip),) if ip else ()),
        node_name=spec.get("nodeName"),
        service_account=str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"),
        phase=str(status.get("phase") or ""),
        container_ports=container_ports,
    )
