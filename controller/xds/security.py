"""The security half of translation: mutual TLS on clusters and inbound filter chains, and
AuthorizationPolicy as Envoy RBAC, in the shapes Istio emits.

- Outbound (auto mTLS): every service cluster gets ``transport_socket_matches``: endpoints whose pod
  carries ``security.istio.io/tlsMode=istio`` (the injector's label, copied into the endpoint metadata
  ``envoy.transport_socket_match``) are reached over mutual TLS with the workload certificate (SDS
  ``default``), verified against the mesh root (SDS ``ROOTCA``) and the SPIFFE IDs of the service's pods;
  the rest in plain text. A DestinationRule's ``tls`` replaces that: DISABLE, SIMPLE, MUTUAL (files) or
  ISTIO_MUTUAL. A namespace or mesh PeerAuthentication DISABLE also turns auto mTLS off towards it.
- Inbound: ``virtualInbound`` gets the tls_inspector and, per port, the chains of its PeerAuthentication
  mode: STRICT only the mutual-TLS chain (plain text matches nothing and is closed), PERMISSIVE that
  chain plus plain text and non-mesh TLS, DISABLE plain text only. The catch-all chains follow the
  workload's mode; there is no default chain, so nothing falls through to plain text.
- AuthorizationPolicy: the policies that apply to the pod become RBAC filters, Istio's order AUDIT
  (LOG), DENY, ALLOW; HTTP chains get ``envoy.filters.http.rbac`` before the router, TCP chains
  ``envoy.filters.network.rbac`` before tcp_proxy. Policies are named ``ns[NS]-policy[NAME]-rule[N]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, grpc_service_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2
from google.protobuf import struct_pb2

from controller.model.kube import Pod
from controller.model.security import (
    AuthorizationPolicy,
    ClientTls,
    Condition,
    Operation,
    PeerAuthentication,
    Source,
)
from controller.model.snapshot import MeshSnapshot
from controller.model.values import FrozenMap
from controller.xds.registry import selected_pods
from controller.xds.resources import any_of

TLS_MODE_LABEL = "security.istio.io/tlsMode"
SOCKET_MATCH_KEY = "envoy.transport_socket_match"
SDS_CLUSTER = "sds-grpc"
DEFAULT_SECRET = "default"
ROOT_SECRET = "ROOTCA"
OUTBOUND_ALPN = ("istio-peer-exchange", "istio")
INBOUND_ALPN = ("istio-peer-exchange", "istio", "istio-http/1.0", "istio-http/1.1", "istio-h2")
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
HTTP_RBAC = "envoy.filters.http.rbac"
NETWORK_RBAC = "envoy.filters.network.rbac"
_DEFAULT_MODE = "PERMISSIVE"


# --- TLS building blocks ------------------------------------------------------------------------------------


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    api = source.api_config_source
    api.api_type = config_source_pb2.ApiConfigSource.GRPC
    api.transport_api_version = config_source_pb2.V3
    api.grpc_services.append(
        grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=SDS_CLUSTER)
        )
    )
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)


def _params() -> common_pb2.TlsParameters:
    return common_pb2.TlsParameters(
        tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2,
        tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
    )


def mesh_common(alpn: Iterable[str], sans: Iterable[str] = ()) -> tls_pb2.CommonTlsContext:
    """The workload certificate and the mesh root (SDS), peers checked against ``sans`` when given."""
    ctx = tls_pb2.CommonTlsContext(
        tls_params=_params(),
        tls_certificate_sds_secret_configs=[_sds(DEFAULT_SECRET)],
        alpn_protocols=list(alpn),
    )
    combined = ctx.combined_validation_context
    combined.default_validation_context.SetInParent()
    for san in sorted(set(sans)):
        combined.default_validation_context.match_subject_alt_names.append(
            string_pb2.StringMatcher(exact=san)
        )
    combined.validation_context_sds_secret_config.CopyFrom(_sds(ROOT_SECRET))
    return ctx


def _socket(message: object) -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=any_of(message))


def _raw_socket() -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(
        name="envoy.transport_sockets.raw_buffer", typed_config=any_of(raw_buffer_pb2.RawBuffer())
    )


def mesh_upstream_socket(sni: str, sans: Iterable[str]) -> base_pb2.TransportSocket:
    return _socket(tls_pb2.UpstreamTlsContext(common_tls_context=mesh_common(OUTBOUND_ALPN, sans), sni=sni))


def mesh_downstream_socket() -> base_pb2.TransportSocket:
    ctx = tls_pb2.DownstreamTlsContext(common_tls_context=mesh_common(INBOUND_ALPN))
    ctx.require_client_certificate.value = True
    return _socket(ctx)


def _file_upstream_socket(
    tls: ClientTls, sni: str, declared: tuple[str, ...] = ()
) -> base_pb2.TransportSocket:
    """DestinationRule SIMPLE / MUTUAL: certificates from files the workload mounted (Istio's fields); the
    server's names are the rule's ``subjectAltNames``, else those its ServiceEntry ``declared``."""
    common = tls_pb2.CommonTlsContext(tls_params=_params())
    if tls.mode == "MUTUAL" and tls.client_certificate and tls.private_key:
        cert = common.tls_certificates.add()
        cert.certificate_chain.filename = tls.client_certificate
        cert.private_key.filename = tls.private_key
    if not tls.insecure_skip_verify:
        vc = common.validation_context
        vc.trusted_ca.filename = tls.ca_certificates or SYSTEM_CA_BUNDLE
        for san in tls.subject_alt_names or declared:
            vc.match_subject_alt_names.append(string_pb2.StringMatcher(exact=san))
    return _socket(tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=tls.sni or sni))


# --- outbound -----------------------------------------------------------------------------------------------


def outbound_sni(port: int, subset: str | None, host: str) -> str:
    return f"outbound_.{port}_.{subset or ''}_.{host}"


def apply_upstream_tls(
    cluster: cluster_pb2.Cluster,
    *,
    host: str,
    port: int,
    subset: str | None,
    tls: ClientTls | None,
    sans: Iterable[str],
    auto: bool = True,
    declared: tuple[str, ...] = (),
) -> None:
    """Give an outbound cluster its transport socket(s); ORIGINAL_DST clusters are left in plain text."""
    if cluster.type == cluster_pb2.Cluster.ORIGINAL_DST:
        return
    sni = outbound_sni(port, subset, host)
    if tls is not None:
        if tls.mode == "ISTIO_MUTUAL":
            cluster.transport_socket.CopyFrom(mesh_upstream_socket(sni, sans))
        elif tls.mode in ("SIMPLE", "MUTUAL"):
            cluster.transport_socket.CopyFrom(_file_upstream_socket(tls, host, declared))
        return  # DISABLE: plain text
    if not auto:
        return
    cluster.transport_socket_matches.append(
        cluster_pb2.Cluster.TransportSocketMatch(
            name="tlsMode-istio",
            match=struct_pb2.Struct(fields={"tlsMode": struct_pb2.Value(string_value="istio")}),
            transport_socket=mesh_upstream_socket(sni, sans),
        )
    )
    cluster.transport_socket_matches.append(
        cluster_pb2.Cluster.TransportSocketMatch(
            name="tlsMode-disabled", match=struct_pb2.Struct(), transport_socket=_raw_socket()
        )
    )


def endpoint_metadata(labels: FrozenMap[str]) -> dict[str, dict[str, str]] | None:
    """The EDS metadata auto mTLS matches on, for an endpoint whose pod has a sidecar."""
    mode = labels.get(TLS_MODE_LABEL)
    return {SOCKET_MATCH_KEY: {"tlsMode": mode}} if mode else None


def service_identities(snapshot: MeshSnapshot, namespace: str, service: str, domain: str) -> tuple[str, ...]:
    """SPIFFE IDs the pods behind a Kubernetes Service run as: what a client accepts from the server."""
    accounts: set[str] = set()
    for eps in snapshot.slices_of(namespace, service):
        for ep in eps.endpoints:
            pod: Pod | None = snapshot.get(ep.pod) if ep.pod else None
            if pod is not None:
                accounts.add(spiffe(domain, pod.namespace, pod.service_account))
    return tuple(sorted(accounts))


def outbound_inputs(
    snapshot: MeshSnapshot, svc: object, domain: str
) -> tuple[tuple[str, ...], bool, tuple[str, ...]]:
    """(names the servers' certificates must carry over mesh mTLS, auto mTLS on, names a ServiceEntry
    declares): the inputs of a service's cluster TLS. A Kubernetes Service's servers are the SPIFFE IDs
    its pods run as; a ServiceEntry's, its ``subjectAltNames``."""
    source = svc.source  # type: ignore[attr-defined]
    namespace = svc.namespace  # type: ignore[attr-defined]
    declared: tuple[str, ...] = ()
    if source.kind == "Service":
        sans = service_identities(snapshot, namespace, source.name, domain)
    else:
        entry = snapshot.get(source)
        sans = declared = entry.subject_alt_names if entry is not None else ()
        if entry is not None:
            # Endpoints with an identity: the pods it selects run as their service accounts, as a
            # Service's do; an endpoint may name its own (``serviceAccount``, in the entry's namespace).
            accounts = {
                spiffe(domain, p.namespace, p.service_account) for p in selected_pods(snapshot, entry)
            } | {spiffe(domain, namespace, e.service_account) for e in entry.endpoints if e.service_account}
            if accounts:
                sans = tuple(sorted(accounts | set(declared)))
    return sans, not namespace_mtls_disabled(snapshot, namespace), declared


def spiffe(domain: str, namespace: str, account: str) -> str:
    return f"spiffe://{domain}/ns/{namespace}/sa/{account}"


# --- PeerAuthentication -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MtlsPolicy:
    """A workload's effective mTLS mode, and per-port overrides (target ports)."""

    mode: str = _DEFAULT_MODE
    ports: dict[int, str] = field(default_factory=dict)

    def for_port(self, port: int) -> str:
        return self.ports.get(port, self.mode)


def workload_mtls(snapshot: MeshSnapshot, namespace: str, labels: FrozenMap[str]) -> MtlsPolicy:
    """Istio's resolution: the workload's policy over the namespace's over the mesh's; UNSET inherits;
    among several at one level the oldest wins. Port-level modes come from the workload policy."""
    chosen: dict[int, PeerAuthentication] = {}
    for pa in sorted(
        snapshot.peer_authentications(),
        key=lambda p: (p.meta.creation_timestamp, p.meta.namespace, p.meta.name),
    ):
        if pa.applies_to(namespace, labels) and pa.level not in chosen:
            chosen[pa.level] = pa
    mode = _DEFAULT_MODE
    for level in (0, 1, 2):
        found = chosen.get(level)
        if found is not None and found.mode != "UNSET":
            mode = found.mode
    ports: dict[int, str] = {}
    workload = chosen.get(2)
    if workload is not None:
        for port, port_mode in workload.port_modes.items():
            ports[int(port)] = mode if port_mode == "UNSET" else port_mode
    return MtlsPolicy(mode, ports)


def namespace_mtls_disabled(snapshot: MeshSnapshot, namespace: str) -> bool:
    """Istio's best-effort inference for auto mTLS: DISABLE at namespace (else mesh) level means clients
    send plain text to the namespace's services."""
    return workload_mtls(snapshot, namespace, FrozenMap({"\x00no-workload": "\x00"})).mode == "DISABLE"


# --- AuthorizationPolicy -> RBAC ----------------------------------------------------------------------------


def _string(
    value: str, *, ignore_case: bool = False, spiffe_prefix: bool = False
) -> string_pb2.StringMatcher:
    """Istio's one-wildcard string match: ``*`` (present), ``*suffix``, ``prefix*`` or exact."""
    pre = "spiffe://" if spiffe_prefix else ""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:], ignore_case=ignore_case)
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=pre + value[:-1], ignore_case=ignore_case)
    return string_pb2.StringMatcher(exact=pre + value, ignore_case=ignore_case)


def _principal_id(value: str) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(
        authenticated=rbac_pb2.Principal.Authenticated(principal_name=_string(value, spiffe_prefix=True))
    )


def _namespace_id(value: str) -> rbac_pb2.Principal:
    """A namespace is the ``/ns/<namespace>/`` part of the peer's SPIFFE ID (Istio matches it so)."""
    if value == "*":
        pattern = ".*"
    elif value.startswith("*"):
        pattern = ".*" + re.escape(value[1:])
    elif value.endswith("*"):
        pattern = re.escape(value[:-1]) + ".*"
    else:
        pattern = re.escape(value)
    return rbac_pb2.Principal(
        authenticated=rbac_pb2.Principal.Authenticated(
            principal_name=string_pb2.StringMatcher(
                safe_regex=regex_pb2.RegexMatcher(regex=f".*/ns/{pattern}/.*")
            )
        )
    )


def _cidr(value: str) -> address_pb2.CidrRange:
    import ipaddress

    net = ipaddress.ip_network(value, strict=False)
    cidr = address_pb2.CidrRange(address_prefix=str(net.network_address))
    cidr.prefix_len.value = net.prefixlen
    return cidr


def _or_ids(ids: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    return ids[0] if len(ids) == 1 else rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=ids))


def _or_rules(rules: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    return rules[0] if len(rules) == 1 else rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=rules))


def _not_id(p: rbac_pb2.Principal) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(not_id=p)


def _not_rule(p: rbac_pb2.Permission) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(not_rule=p)


def _header(name: str, value: str, *, ignore_case: bool = False) -> rbac_pb2.Permission:
    from envoy.config.route.v3 import route_components_pb2 as rc

    return rbac_pb2.Permission(
        header=rc.HeaderMatcher(name=name, string_match=_string(value, ignore_case=ignore_case))
    )


def _path(value: str) -> rbac_pb2.Permission:
    matcher = string_pb2.StringMatcher(prefix="/") if value == "*" else _string(value)
    return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=matcher))


def _port(value: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(destination_port=int(value))


def _source_ids(src: Source) -> list[rbac_pb2.Principal]:
    parts: list[rbac_pb2.Principal] = []
    pairs: list[tuple[tuple[str, ...], bool, Callable[[str], rbac_pb2.Principal]]] = [
        (src.principals, False, _principal_id),
        (src.not_principals, True, _principal_id),
        (src.namespaces, False, _namespace_id),
        (src.not_namespaces, True, _namespace_id),
        (src.ip_blocks, False, lambda v: rbac_pb2.Principal(direct_remote_ip=_cidr(v))),
        (src.not_ip_blocks, True, lambda v: rbac_pb2.Principal(direct_remote_ip=_cidr(v))),
        (src.remote_ip_blocks, False, lambda v: rbac_pb2.Principal(remote_ip=_cidr(v))),
        (src.not_remote_ip_blocks, True, lambda v: rbac_pb2.Principal(remote_ip=_cidr(v))),
    ]
    for values, negate, make in pairs:
        if values:
            ids = _or_ids([make(v) for v in values])
            parts.append(_not_id(ids) if negate else ids)
    return parts


def _operation_rules(op: Operation, tcp: bool) -> list[rbac_pb2.Permission] | None:
    """The permission parts of one operation; None when a TCP chain cannot evaluate it (HTTP-only)."""
    parts: list[rbac_pb2.Permission] = []
    http_only = op.hosts or op.not_hosts or op.methods or op.not_methods or op.paths or op.not_paths
    if tcp and http_only:
        return None
    pairs: list[tuple[tuple[str, ...], bool, Callable[[str], rbac_pb2.Permission]]] = [
        (op.hosts, False, lambda v: _header(":authority", v, ignore_case=True)),
        (op.not_hosts, True, lambda v: _header(":authority", v, ignore_case=True)),
        (op.ports, False, _port),
        (op.not_ports, True, _port),
        (op.methods, False, lambda v: _header(":method", v)),
        (op.not_methods, True, lambda v: _header(":method", v)),
        (op.paths, False, _path),
        (op.not_paths, True, _path),
    ]
    for values, negate, make in pairs:
        if values:
            rules = _or_rules([make(v) for v in values])
            parts.append(_not_rule(rules) if negate else rules)
    return parts


_SOURCE_KEYS = ("source.ip", "remote.ip", "source.namespace", "source.principal")


def _condition(cond: Condition, tcp: bool) -> tuple[str, object] | None:
    """(kind, matcher): a principal or a permission for one ``when``; None when TCP cannot see it."""
    key = cond.key
    makers: dict[str, Callable[[str], object]] = {
        "source.ip": lambda v: rbac_pb2.Principal(direct_remote_ip=_cidr(v)),
        "remote.ip": lambda v: rbac_pb2.Principal(remote_ip=_cidr(v)),
        "source.namespace": _namespace_id,
        "source.principal": _principal_id,
        "destination.ip": lambda v: rbac_pb2.Permission(destination_ip=_cidr(v)),
        "destination.port": _port,
        "connection.sni": lambda v: rbac_pb2.Permission(requested_server_name=_string(v)),
    }
    header = re.match(r"^request\.headers\[([^\]]+)\]$", key)
    if header:
        if tcp:
            return None
        name = header.group(1).lower()
        makers[key] = lambda v: _header(name, v)
    make = makers[key]
    is_principal = key in _SOURCE_KEYS
    parts = []
    if cond.values:
        items = [make(v) for v in cond.values]
        parts.append(_or_ids(items) if is_principal else _or_rules(items))  # type: ignore[arg-type]
    if cond.not_values:
        items = [make(v) for v in cond.not_values]
        parts.append(
            _not_id(_or_ids(items)) if is_principal else _not_rule(_or_rules(items))  # type: ignore[arg-type]
        )
    if is_principal:
        return "principal", parts[0] if len(parts) == 1 else rbac_pb2.Principal(
            and_ids=rbac_pb2.Principal.Set(ids=parts)
        )
    return "permission", parts[0] if len(parts) == 1 else rbac_pb2.Permission(
        and_rules=rbac_pb2.Permission.Set(rules=parts)
    )


def _rule_policy(rule: object, tcp: bool, action: str) -> rbac_pb2.Policy | None:
    """One Istio rule as an RBAC policy; None when it cannot match on this chain (HTTP-only on TCP)."""
    from controller.model.security import Rule

    assert isinstance(rule, Rule)
    # HTTP-only parts on a TCP chain: an ALLOW (or AUDIT) rule cannot match there, a DENY rule loses
    # them and so denies more (Istio's choice: fail closed).
    strict = action != "DENY"
    extra_ids: list[rbac_pb2.Principal] = []
    extra_rules: list[rbac_pb2.Permission] = []
    for cond in rule.conditions:
        made = _condition(cond, tcp)
        if made is None:
            if strict:
                return None
            continue
        kind, matcher = made
        (extra_ids if kind == "principal" else extra_rules).append(matcher)  # type: ignore[arg-type]
    principals: list[rbac_pb2.Principal] = []
    for src in rule.sources or (Source(),):
        ids = [*_source_ids(src), *extra_ids]
        principals.append(
            rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=ids))
            if ids
            else rbac_pb2.Principal(any=True)
        )
    permissions: list[rbac_pb2.Permission] = []
    for op in rule.operations or (Operation(),):
        parts = _operation_rules(op, tcp)
        if parts is None:
            if strict:
                continue
            parts = _operation_rules(
                Operation(ports=op.ports, not_ports=op.not_ports), tcp
            )  # DENY on TCP: what TCP can see of it
            assert parts is not None
        parts = [*parts, *extra_rules]
        permissions.append(
            rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=parts))
            if parts
            else rbac_pb2.Permission(any=True)
        )
    if not permissions:
        return None
    return rbac_pb2.Policy(permissions=permissions, principals=principals)


_ACTIONS = {"ALLOW": rbac_pb2.RBAC.ALLOW, "DENY": rbac_pb2.RBAC.DENY, "AUDIT": rbac_pb2.RBAC.LOG}


def rbac_configs(policies: Iterable[AuthorizationPolicy], tcp: bool) -> list[tuple[str, rbac_pb2.RBAC]]:
    """(action, RBAC) in Istio's filter order: AUDIT, DENY, ALLOW; only actions some policy uses."""
    by_action: dict[str, list[AuthorizationPolicy]] = {}
    for p in sorted(policies, key=lambda p: (p.meta.namespace, p.meta.name)):
        by_action.setdefault(p.action, []).append(p)
    out = []
    for action in ("AUDIT", "DENY", "ALLOW"):
        group = by_action.get(action)
        if not group:
            continue
        rbac = rbac_pb2.RBAC(action=_ACTIONS[action])
        for p in group:
            for i, rule in enumerate(p.rules):
                policy = _rule_policy(rule, tcp, action)
                if policy is not None:
                    rbac.policies[f"ns[{p.meta.namespace}]-policy[{p.meta.name}]-rule[{i}]"].CopyFrom(policy)
        out.append((action, rbac))
    return out


def policies_for(snapshot: MeshSnapshot, namespace: str, labels: FrozenMap[str]) -> list[AuthorizationPolicy]:
    return [p for p in snapshot.authorization_policies() if p.applies_to(namespace, labels)]


# --- inbound ------------------------------------------------------------------------------------------------


@dataclass
class InboundSecurity:
    """What the inbound listener of one workload needs: its mTLS modes and its authorization filters."""

    mtls: MtlsPolicy
    policies: list[AuthorizationPolicy]

    @classmethod
    def for_pod(cls, snapshot: MeshSnapshot, pod: Pod | None) -> InboundSecurity:
        if pod is None:
            return cls(MtlsPolicy(), [])
        return cls(
            workload_mtls(snapshot, pod.namespace, pod.labels),
            policies_for(snapshot, pod.namespace, pod.labels),
        )

    def http_filters(self) -> list[hcm_pb2.HttpFilter]:
        return [
            hcm_pb2.HttpFilter(name=HTTP_RBAC, typed_config=any_of(http_rbac_pb2.RBAC(rules=rbac)))
            for _, rbac in rbac_configs(self.policies, tcp=False)
        ]

    def network_filters(self, stat_prefix: str) -> list[listener_components_pb2.Filter]:
        return [
            listener_components_pb2.Filter(
                name=NETWORK_RBAC,
                typed_config=any_of(network_rbac_pb2.RBAC(rules=rbac, stat_prefix=f"tcp.{stat_prefix}")),
            )
            for _, rbac in rbac_configs(self.policies, tcp=True)
        ]

    def chains(
        self,
        name: str,
        port: int | None,
        mode: str,
        filters: Callable[[bool], list[listener_components_pb2.Filter]],
    ) -> list[listener_components_pb2.FilterChain]:
        """The chains of one port (``port`` None: the catch-all) for ``mode``; ``filters(mtls)`` makes the
        network filters of a chain."""

        def chain(
            suffix: str, transport: str, alpn: tuple[str, ...], mtls: bool
        ) -> listener_components_pb2.FilterChain:
            fc = listener_components_pb2.FilterChain(name=f"{name}{suffix}", filters=filters(mtls))
            if port is not None:
                fc.filter_chain_match.destination_port.value = port
            if transport:
                fc.filter_chain_match.transport_protocol = transport
            fc.filter_chain_match.application_protocols.extend(alpn)
            if mtls:
                fc.transport_socket.CopyFrom(mesh_downstream_socket())
            return fc

        if mode == "DISABLE":
            return [chain("", "", (), False)]
        out = [chain("-mtls", "tls", INBOUND_ALPN, True)]
        if mode == "PERMISSIVE":
            out.append(chain("-plaintext", "raw_buffer", (), False))
            out.append(chain("-tls-passthrough", "tls", (), False))
        return out
