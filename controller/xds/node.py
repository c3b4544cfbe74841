"""Who a proxy is: its Envoy Node (id and metadata as Istio's agent sends them) read into a ProxyNode."""

from __future__ import annotations

from typing import Any

import msgspec
from google.protobuf import json_format

from controller.model.values import FrozenMap


class ProxyNode(msgspec.Struct, frozen=True, gc=False):
    id: str
    type: str  # "sidecar" or "router"
    ip: str
    pod: str
    namespace: str
    labels: FrozenMap[str]
    ips: tuple[str, ...]
    generator: str  # "grpc" for proxyless gRPC clients, else ""
    cluster_id: str
    istio_version: str
    service_account: str
    workload_name: str
    locality: str = ""  # "region/zone/sub_zone" from the Node's locality (empty parts allowed)

    @property
    def proxyless(self) -> bool:
        return self.generator == "grpc"


class NodeError(ValueError):
    pass


def parse_node(node: Any) -> ProxyNode:
    """Read an envoy.config.core.v3.Node. The id is ``<type>~<ip>~<pod>.<ns>~<ns>.svc.<domain>``; metadata
    keys win where both say something, since the agent derives them from the pod itself."""
    meta: dict[str, Any] = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    parts = node.id.split("~")
    if len(parts) != 4:
        raise NodeError(f"node id {node.id!r} is not <type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>")
    proxy_type, ip, pod_dot_ns, domain = parts
    pod, _, ns_from_id = pod_dot_ns.partition(".")
    namespace = str(meta.get("NAMESPACE") or ns_from_id or domain.split(".", 1)[0])
    ips_text = str(meta.get("INSTANCE_IPS") or ip)
    labels = meta.get("LABELS") or {}
    return ProxyNode(
        id=node.id,
        type=proxy_type,
        ip=ip,
        pod=str(meta.get("NAME") or pod),
        namespace=namespace,
        labels=FrozenMap({str(k): str(v) for k, v in labels.items()}),
        ips=tuple(x.strip() for x in ips_text.split(",") if x.strip()),
        generator=str(meta.get("GENERATOR") or ""),
        cluster_id=str(meta.get("CLUSTER_ID") or ""),
        istio_version=str(meta.get("ISTIO_VERSION") or ""),
        service_account=str(meta.get("SERVICE_ACCOUNT") or ""),
        workload_name=str(meta.get("WORKLOAD_NAME") or ""),
        locality=_locality(node),
    )


def _locality(node: Any) -> str:
    if not node.HasField("locality"):
        return ""
    loc = node.locality
    text = f"{loc.region}/{loc.zone}/{loc.sub_zone}"
    return "" if text == "//" else text
