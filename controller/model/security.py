"""Istio's security resources as the mesh uses them: PeerAuthentication, AuthorizationPolicy, and the
client TLS settings of a DestinationRule (``trafficPolicy.tls``).

Builders take raw objects validation has accepted. Which workloads a policy applies to is decided here
(:meth:`applies_to`), once, with Istio's rules: a policy in the root namespace without a selector is
mesh-wide, one in a namespace without a selector covers the namespace, one with a selector covers the
pods of its namespace whose labels match.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from controller.model.hosts import ROOT_NAMESPACE
from controller.model.meta import ObjectMeta, object_meta, spec_of
from controller.model.values import FrozenMap, ResourceKey, str_map, str_tuple

MTLS_MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")
TLS_MODES = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")


def _selects(
    meta: ObjectMeta, selector: FrozenMap[str] | None, namespace: str, labels: FrozenMap[str]
) -> bool:
    if meta.namespace == ROOT_NAMESPACE and selector is None:
        return True
    return meta.namespace == namespace and (selector is None or labels.matches(selector))


# --- PeerAuthentication -------------------------------------------------------------------------------------


class PeerAuthentication(msgspec.Struct, frozen=True, gc=False):
    meta: ObjectMeta
    selector: FrozenMap[str] | None  # matchLabels; None: the whole namespace (mesh-wide in the root one)
    mode: str  # UNSET, DISABLE, PERMISSIVE or STRICT
    port_modes: FrozenMap[str]  # str(target port) -> mode (portLevelMtls; with a selector only)

    @property
    def key(self) -> ResourceKey:
        return ResourceKey("PeerAuthentication", self.meta.namespace, self.meta.name)

    @property
    def level(self) -> int:
        """2 workload, 1 namespace, 0 mesh: the more specific level wins."""
        if self.selector is not None:
            return 2
        return 0 if self.meta.namespace == ROOT_NAMESPACE else 1

    def applies_to(self, namespace: str, labels: FrozenMap[str]) -> bool:
        return _selects(self.meta, self.selector, namespace, labels)


def build_peer_authentication(raw: Mapping[str, Any]) -> PeerAuthentication:
    meta = object_meta(raw)
    spec = spec_of(raw)
    selector = spec.get("selector")
    ports = spec.get("portLevelMtls") or {}
    return PeerAuthentication(
        meta=meta,
        selector=str_map(selector.get("matchLabels")) if selector else None,
        mode=str((spec.get("mtls") or {}).get("mode") or "UNSET"),
        port_modes=FrozenMap({str(k): str((v or {}).get("mode") or "UNSET") for k, v in ports.items()}),
    )


# --- AuthorizationPolicy ------------------------------------------------------------------------------------


class Source(msgspec.Struct, frozen=True, gc=False):
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()


class Operation(msgspec.Struct, frozen=True, gc=False):
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


class Condition(msgspec.Struct, frozen=True, gc=False):
    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


class Rule(msgspec.Struct, frozen=True, gc=False):
    sources: tuple[Source, ...]  # from: any of them (empty: anyone)
    operations: tuple[Operation, ...]  # to: any of them (empty: anything)
    conditions: tuple[Condition, ...]  # when: all of them


class AuthorizationPolicy(msgspec.Struct, frozen=True, gc=False):
    meta: ObjectMeta
    selector: FrozenMap[str] | None
    action: str  # ALLOW, DENY or AUDIT
    rules: tuple[Rule, ...]  # empty: matches nothing (an ALLOW policy without rules denies everything)
    targeted: bool  # targetRef(s): for gateways and waypoints, never for sidecars

    @property
    def key(self) -> ResourceKey:
        return ResourceKey("AuthorizationPolicy", self.meta.namespace, self.meta.name)

    def applies_to(self, namespace: str, labels: FrozenMap[str]) -> bool:
        return not self.targeted and _selects(self.meta, self.selector, namespace, labels)


def _source(raw: Mapping[str, Any]) -> Source:
    return Source(
        principals=str_tuple(raw.get("principals")),
        not_principals=str_tuple(raw.get("notPrincipals")),
        namespaces=str_tuple(raw.get("namespaces")),
        not_namespaces=str_tuple(raw.get("notNamespaces")),
        ip_blocks=str_tuple(raw.get("ipBlocks")),
        not_ip_blocks=str_tuple(raw.get("notIpBlocks")),
        remote_ip_blocks=str_tuple(raw.get("remoteIpBlocks")),
        not_remote_ip_blocks=str_tuple(raw.get("notRemoteIpBlocks")),
    )


def _operation(raw: Mapping[str, Any]) -> Operation:
    return Operation(
        hosts=str_tuple(raw.get("hosts")),
        not_hosts=str_tuple(raw.get("notHosts")),
        ports=tuple(str(p) for p in raw.get("ports") or ()),
        not_ports=tuple(str(p) for p in raw.get("notPorts") or ()),
        methods=str_tuple(raw.get("methods")),
        not_methods=str_tuple(raw.get("notMethods")),
        paths=str_tuple(raw.get("paths")),
        not_paths=str_tuple(raw.get("notPaths")),
    )


def build_authorization_policy(raw: Mapping[str, Any]) -> AuthorizationPolicy:
    meta = object_meta(raw)
    spec = spec_of(raw)
    selector = spec.get("selector")
    rules = tuple(
        Rule(
            sources=tuple(_source(f.get("source") or {}) for f in r.get("from") or ()),
            operations=tuple(_operation(t.get("operation") or {}) for t in r.get("to") or ()),
            conditions=tuple(
                Condition(str(c.get("key") or ""), str_tuple(c.get("values")), str_tuple(c.get("notValues")))
                for c in r.get("when") or ()
            ),
        )
        for r in spec.get("rules") or ()
    )
    return AuthorizationPolicy(
        meta=meta,
        selector=str_map(selector.get("matchLabels")) if selector else None,
        action=str(spec.get("action") or "ALLOW"),
        rules=rules,
        targeted=bool(spec.get("targetRef") or spec.get("targetRefs")),
    )


# --- DestinationRule trafficPolicy.tls ----------------------------------------------------------------------


class ClientTls(msgspec.Struct, frozen=True, gc=False):
    mode: str  # DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    sni: str | None = None
    insecure_skip_verify: bool = False


def build_client_tls(raw: Mapping[str, Any] | None) -> ClientTls | None:
    if not raw:
        return None
    return ClientTls(
        mode=str(raw.get("mode") or "DISABLE"),
        client_certificate=raw.get("clientCertificate") or None,
        private_key=raw.get("privateKey") or None,
        ca_certificates=raw.get("caCertificates") or None,
        subject_alt_names=str_tuple(raw.get("subjectAltNames")),
        sni=raw.get("sni") or None,
        insecure_skip_verify=bool(raw.get("insecureSkipVerify", False)),
    )
