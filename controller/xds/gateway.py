"""Gateways: the listeners and routes of a proxy running as a gateway (node type ``router``), from the
Gateways whose selector matches it and the VirtualServices bound to those Gateways.

Each server port becomes a bound listener ``0.0.0.0_<port>`` -- the port the gateway's own Service sends
that Gateway port to, when one does (Istio's Gateway port is the Service port) -- of one of these kinds:

- HTTP (HTTP, HTTP2, GRPC): an HTTP connection manager with the RouteConfiguration ``http.<port>``: a
  virtual host per host the bound VirtualServices serve within the server's hosts, their rules merged in
  creation order (several VirtualServices for one host are merged on gateways, as Istio does);
  ``httpsRedirect`` answers every request with a redirect to https.
- TLS ``PASSTHROUGH``: filter chains by SNI from the bound VirtualServices' ``tls`` rules, bytes untouched.
- TCP: the bound VirtualServices' ``tcp`` rules.

- HTTPS: TLS terminated by the gateway, a filter chain per server chosen by SNI, then HTTP routing as
  above (RouteConfiguration ``https.<port>.<server>.<gateway>``). SIMPLE, MUTUAL and OPTIONAL_MUTUAL
  present the certificate of the Kubernetes Secret ``credentialName`` in the Gateway's namespace; the
  mutual modes check clients against its ``ca.crt`` (or the Secret ``<credentialName>-cacert``) and
  ``subjectAltNames``. ISTIO_MUTUAL presents the gateway's workload certificate and checks clients
  against the mesh root. A server whose Secret is missing or incomplete is left out, and said so in
  the log.

The gateway's clusters are its scope's outbound clusters (every service its namespace can see).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from controller.model.gateway import Gateway, Server, ServerTls
from controller.model.hosts import host_matches, visible_to
from controller.model.istio import HTTPRoute, VirtualService
from controller.model.kube import Pod
from controller.model.protocol import MeshProtocol
from controller.model.snapshot import MeshSnapshot
from controller.model.values import FrozenMap, ResourceKey
from controller.xds import delegate as delegation
from controller.xds import listeners as lds
from controller.xds import routes as rds
from controller.xds import security
from controller.xds import tcp as l4
from controller.xds.registry import Registry
from controller.xds.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    Resource,
    any_of,
    make_resource,
)
from mizzen import logs

log = logs.get("xds.gateway")

ResourceMap = dict[str, dict[str, Resource]]
_HTTP = (MeshProtocol.HTTP, MeshProtocol.HTTP2, MeshProtocol.GRPC, MeshProtocol.GRPC_WEB)


def gateways_for(snapshot: MeshSnapshot, labels: FrozenMap[str]) -> list[Gateway]:
    """The Gateways whose selector matches a gateway proxy's labels (any namespace, as Istio by default),
    oldest first."""
    found = [g for g in snapshot.objects("Gateway") if labels.matches(g.selector)]
    return sorted(found, key=lambda g: (g.meta.creation_timestamp, g.key))


def listen_port(snapshot: MeshSnapshot, pod: Pod | None, number: int) -> int:
    """Where a Gateway port is served on the proxy: the target port of the gateway's Service port with that
    number (Istio's Gateway ports are its Service's), else the number itself."""
    if pod is None:
        return number
    named = {p.name: p.port for p in pod.container_ports if p.name}
    for svc in snapshot.services():
        if svc.namespace != pod.namespace or not svc.selector or not pod.labels.matches(svc.selector):
            continue
        for sp in svc.ports:
            if sp.port == number:
                target = sp.target_port if isinstance(sp.target_port, int) else named.get(sp.target_port)
                if target:
                    return int(target)
    return number


def _bound(snapshot: MeshSnapshot, gw: Gateway) -> list[VirtualService]:
    """VirtualServices that name this Gateway and that its namespace may see, oldest first."""
    out = [
        vs
        for vs in snapshot.virtual_services()
        if gw.name in vs.gateways and visible_to(vs.export_to, gw.meta.namespace)
    ]
    return sorted(out, key=lambda v: (v.meta.creation_timestamp, v.key))


def _served_hosts(server: Server, vs: VirtualService) -> list[str]:
    """The hosts of ``vs`` this server answers for: a VirtualService host within a server host, or the
    server host when it is the narrower of the two (``*.example.com`` VirtualService, ``a.example.com``
    server)."""
    out: list[str] = []
    for sh in server.hosts:
        if sh.namespace not in ("*", vs.meta.namespace):
            continue
        for host in vs.hosts:
            if host_matches(sh.host, host):
                out.append(host)
            elif host_matches(host, sh.host):
                out.append(sh.host)
    return list(dict.fromkeys(out))


def _domains(host: str, port: int) -> list[str]:
    return ["*"] if host == "*" else [host, f"{host}:{port}"]


class _Build:
    def __init__(self, reg: Registry, gws: list[Gateway], pod: Pod | None, labels: FrozenMap[str]) -> None:
        self.reg = reg
        self.snapshot = reg.snapshot
        self.gws = gws
        self.pod = pod
        self.labels = labels
        self.out: ResourceMap = {t: {} for t in PUSH_ORDER}

    def run(self) -> ResourceMap:
        by_port: dict[int, list[tuple[Gateway, Server]]] = {}
        for gw in self.gws:
            for server in gw.servers:
                port = listen_port(self.snapshot, self.pod, server.number)
                by_port.setdefault(port, []).append((gw, server))
        for port, servers in sorted(by_port.items()):
            kinds = {self._kind(s) for _, s in servers}
            kind = sorted(kinds)[0]
            if len(kinds) > 1:
                log.warning("gateway servers of different kinds share a port", port=port, used=kind)
            usable = [(g, s) for g, s in servers if self._kind(s) == kind]
            if kind == "http":
                self._http(port, usable)
            elif kind in ("tls", "tcp"):
                self._l4(port, usable, tls=kind == "tls")
            else:
                self._https(port, usable)
        return self.out

    @staticmethod
    def _kind(server: Server) -> str:
        if server.passthrough and server.protocol in (MeshProtocol.TLS, MeshProtocol.HTTPS):
            return "tls"
        if server.terminates_tls:
            return "terminate"
        if server.protocol in _HTTP:
            return "http"
        return "tcp"

    def _put(self, type_url: str, name: str, message: Any) -> None:
        self.out[type_url][name] = make_resource(type_url, name, message)

    def _ctx(self, gw: Gateway) -> rds.RouteContext:
        namespace = gw.meta.namespace
        return rds.RouteContext(
            self.reg.services,
            namespace,
            self.labels,
            gateway=gw.name,
            hash_for=functools.partial(_hash_for, self.reg, namespace),
            delegate=self.reg.delegate,
        )

    def _http(self, port: int, servers: list[tuple[Gateway, Server]]) -> None:
        name = f"http.{port}"
        self._put(ROUTE, name, rds.route_configuration(name, self._vhosts(port, servers)))
        chain = listener_components_pb2.FilterChain(filters=[lds.hcm_filter(self._manager(port, name))])
        self._put(LISTENER, f"0.0.0.0_{port}", _listener(port, [chain]))

    def _https(self, port: int, servers: list[tuple[Gateway, Server]]) -> None:
        """Servers that terminate TLS: HTTPS routes HTTP as above, TLS the bound ``tcp`` routes."""
        chains = []
        for i, (gw, server) in enumerate(servers):
            tls = server.tls
            assert tls is not None
            socket, why = self._termination(gw, tls, http=server.protocol == MeshProtocol.HTTPS)
            chain = None
            if socket is not None:
                if server.protocol == MeshProtocol.HTTPS:
                    chain = self._https_chain(port, i, gw, server)
                else:
                    chain = self._terminated_tcp(gw, server)
                    why = "a VirtualService bound to it with a tcp route for its port"
            if chain is None:
                log.warning("gateway server not served", gateway=gw.name, port=server.number, missing=why)
                continue
            assert socket is not None
            names = [h.host for h in server.hosts if h.host != "*"]
            if names:
                chain.filter_chain_match.server_names.extend(names)
            chain.transport_socket.CopyFrom(socket)
            chains.append(chain)
        if not chains:
            return
        listener = _listener(port, chains)
        listener.listener_filters.append(
            listener_components_pb2.ListenerFilter(
                name=l4.TLS_INSPECTOR, typed_config=any_of(tls_inspector_pb2.TlsInspector())
            )
        )
        self._put(LISTENER, listener.name, listener)

    def _https_chain(
        self, port: int, i: int, gw: Gateway, server: Server
    ) -> listener_components_pb2.FilterChain:
        name = f"https.{port}.{server.name or i}.{gw.meta.name}.{gw.meta.namespace}"
        self._put(ROUTE, name, rds.route_configuration(name, self._vhosts(port, [(gw, server)])))
        return listener_components_pb2.FilterChain(
            name=name, filters=[lds.hcm_filter(self._manager(port, name))]
        )

    def _terminated_tcp(self, gw: Gateway, server: Server) -> listener_components_pb2.FilterChain | None:
        """A TLS server's decrypted bytes go where the first bound VirtualService's ``tcp`` rule for its
        port sends them (as Istio routes a terminated TLS server)."""
        client = l4.Client(gw.meta.namespace, self.labels, gw.name)
        for vs in _bound(self.snapshot, gw):
            if not _served_hosts(server, vs):
                continue
            own = functools.partial(_own_port, self.reg, server.number)
            found = l4.chains(vs.hosts[0], server.number, vs, client, tls=False, own_port=own, fallback=False)
            if found:
                chain = l4.filter_chain(found[0])
                chain.name = f"tls.{server.number}.{server.name}.{gw.meta.name}.{gw.meta.namespace}"
                return chain
        return None

    def _termination(
        self, gw: Gateway, tls: ServerTls, *, http: bool
    ) -> tuple[base_pb2.TransportSocket | None, str]:
        """The server side of a terminating server's TLS, or (None, what is missing)."""
        alpn = ("http/1.1",) if http else ()
        if tls.mode == "ISTIO_MUTUAL":
            # The gateway's own workload certificate, clients checked against the mesh's root: a client
            # from another mesh of the same root (an east-west gateway) or a sidecar.
            return _downstream_tls(tls, cert=None, require=True, alpn=alpn), ""
        if tls.mode not in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
            return None, f"TLS mode {tls.mode} on a terminating server"
        if tls.server_certificate and tls.private_key:
            # Files mounted in the gateway's pod (Istio's older way): the proxy reads them.
            files = (tls.server_certificate, tls.private_key)
            ca_file = tls.ca_certificates if tls.mode != "SIMPLE" else None
            return _downstream_tls(
                tls, cert=None, files=files, ca_file=ca_file, require=tls.mode == "MUTUAL", alpn=alpn
            ), ""
        where = gw.meta.namespace
        secret = self.snapshot.get(ResourceKey("Secret", where, tls.credential_name or ""))
        if secret is None or not secret.usable:
            return None, f"Secret {where}/{tls.credential_name} with a certificate and key"
        ca = b""
        if tls.mode != "SIMPLE":
            # Istio's two places for the client CA: the credential's own ca.crt, or "<name>-cacert".
            separate = self.snapshot.get(ResourceKey("Secret", where, f"{tls.credential_name}-cacert"))
            ca = secret.ca or (separate.ca if separate is not None else b"")
            if not ca:
                return None, (
                    f"a CA certificate for {tls.mode} (ca.crt in Secret {where}/{tls.credential_name}, "
                    f"or Secret {where}/{tls.credential_name}-cacert)"
                )
        cert = (secret.cert, secret.key)
        return _downstream_tls(tls, cert=cert, ca=ca, require=tls.mode == "MUTUAL", alpn=alpn), ""

    def _manager(self, port: int, rds_name: str) -> Any:
        manager = lds.http_manager(f"outbound_0.0.0.0_{port}", rds_name=rds_name, policies=True)
        manager.use_remote_address.value = True  # the edge: the client's address is the peer's
        # Istio's gateway default (SANITIZE_SET): a client's own x-forwarded-client-cert is dropped, and a
        # client that presented a certificate (MUTUAL) is described to the backends by the gateway.
        manager.forward_client_cert_details = hcm_pb2.HttpConnectionManager.SANITIZE_SET
        details = manager.set_current_client_cert_details
        details.subject.value = True
        details.dns = True
        details.uri = True
        return manager

    def _vhosts(self, port: int, servers: list[tuple[Gateway, Server]]) -> list[rc.VirtualHost]:
        routes_by_host: dict[str, list[rc.Route]] = {}
        redirect_hosts: set[str] = set()
        for gw, server in servers:
            redirect = server.tls is not None and server.tls.https_redirect
            ctx = self._ctx(gw)
            for vs in _bound(self.snapshot, gw):
                hosts = _served_hosts(server, vs)
                if not hosts:
                    continue
                rules: Iterable[HTTPRoute] = delegation.expand(vs, self.reg.delegate)
                routes = rds.http_routes(f"{vs.meta.namespace}/{vs.meta.name}", rules, server.number, ctx)
                for host in hosts:
                    routes_by_host.setdefault(host, []).extend(routes)
                    if redirect:
                        redirect_hosts.add(host)
        vhosts = []
        seen: set[str] = set()
        for host in sorted(routes_by_host, key=lambda h: (h == "*", h)):
            domains = [d for d in _domains(host, port) if d not in seen]
            if not domains:
                continue
            seen.update(domains)
            vh = rc.VirtualHost(name=f"{host}:{port}", domains=domains, routes=routes_by_host[host])
            if host in redirect_hosts:
                vh.require_tls = rc.VirtualHost.ALL
            vhosts.append(vh)
        return vhosts

    def _l4(self, port: int, servers: list[tuple[Gateway, Server]], *, tls: bool) -> None:
        chains: list[l4.TcpChain] = []
        for gw, server in servers:
            if server.tls is not None and server.tls.mode == "AUTO_PASSTHROUGH":
                chains += self._auto_passthrough(gw, server)
                continue
            client = l4.Client(gw.meta.namespace, self.labels, gw.name)
            for vs in _bound(self.snapshot, gw):
                if not _served_hosts(server, vs):
                    continue
                for chain in l4.chains(
                    vs.hosts[0],
                    server.number,
                    vs,
                    client,
                    tls=tls,
                    own_port=functools.partial(_own_port, self.reg, server.number),
                ):
                    if tls and not chain.sni:
                        continue  # a passthrough server routes by SNI only
                    if not tls and not (vs.tcp and any(_routes_somewhere(r) for r in vs.tcp)):
                        continue
                    chains.append(chain)
        merged = l4.merge([chains])
        if not merged:
            return
        listener = l4.listener("0.0.0.0", port, merged)
        listener.ClearField("bind_to_port")  # a gateway binds its ports itself
        self._put(LISTENER, listener.name, listener)

    def _auto_passthrough(self, gw: Gateway, server: Server) -> list[l4.TcpChain]:
        """AUTO_PASSTHROUGH (an east-west gateway): no VirtualService; the SNI a client's sidecar sends
        for mesh mTLS, ``outbound_.<port>_.<subset>_.<host>``, names the cluster, and the bytes go there
        untouched (the endpoint's sidecar ends the client's mTLS). One chain per service port and subset
        the gateway's namespace can see within the server's hosts."""
        namespace = gw.meta.namespace
        out = []
        for host, svc in sorted(self.reg.services.items()):
            if not visible_to(svc.export_to, namespace) or svc.resolution != "EDS":
                continue
            if not any(
                sh.namespace in ("*", svc.namespace) and host_matches(sh.host, host) for sh in server.hosts
            ):
                continue
            dr = self.reg.destination_rule_for(host, namespace, svc.namespace)
            subsets = [s.name for s in dr.subsets] if dr is not None else []
            for port in svc.ports:
                if port.protocol in (MeshProtocol.UDP, MeshProtocol.SCTP):
                    continue
                for subset in (None, *subsets):
                    # The SNI names the cluster too: the scope's SNI-DNAT twin (ScopeKey.sni_dnat).
                    sni = security.outbound_sni(port.port, subset, host)
                    out.append(l4.TcpChain(sni, ((sni, 1),), sni=(sni,)))
        return out


def _listener(port: int, chains: list[listener_components_pb2.FilterChain]) -> listener_pb2.Listener:
    """A gateway listener: bound on ``port`` on every address."""
    return listener_pb2.Listener(
        name=f"0.0.0.0_{port}",
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="0.0.0.0", port_value=port)
        ),
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=chains,
    )


_TLS_VERSIONS = {"TLSV1_2": common_pb2.TlsParameters.TLSv1_2, "TLSV1_3": common_pb2.TlsParameters.TLSv1_3}


def _downstream_tls(
    tls: ServerTls,
    *,
    cert: tuple[bytes, bytes] | None,
    ca: bytes = b"",
    files: tuple[str, str] | None = None,
    ca_file: str | None = None,
    require: bool = False,
    alpn: tuple[str, ...] = (),
) -> base_pb2.TransportSocket:
    """The server side of TLS: with a credential's certificate (and client CA for mutual TLS) given
    inline -- the proxy keeps them in its secret store; the controller's debug dumps redact the key -- or,
    without one, the gateway's workload certificate and the mesh root from its SDS (ISTIO_MUTUAL)."""
    ctx = tls_pb2.DownstreamTlsContext()
    common = ctx.common_tls_context
    if cert is not None:
        certificate = common.tls_certificates.add()
        certificate.certificate_chain.inline_bytes = cert[0]
        certificate.private_key.inline_bytes = cert[1]
        if ca:
            common.validation_context.trusted_ca.inline_bytes = ca
            for san in tls.subject_alt_names:
                common.validation_context.match_subject_alt_names.append(string_pb2.StringMatcher(exact=san))
    elif files is not None:
        certificate = common.tls_certificates.add()
        certificate.certificate_chain.filename, certificate.private_key.filename = files
        if ca_file:
            common.validation_context.trusted_ca.filename = ca_file
            for san in tls.subject_alt_names:
                common.validation_context.match_subject_alt_names.append(string_pb2.StringMatcher(exact=san))
    else:
        common.CopyFrom(security.mesh_common((), tls.subject_alt_names))
    if require:
        ctx.require_client_certificate.value = True
    common.alpn_protocols.extend(alpn)
    if tls.min_version in _TLS_VERSIONS:
        common.tls_params.tls_minimum_protocol_version = _TLS_VERSIONS[tls.min_version]
    if tls.max_version in _TLS_VERSIONS:
        common.tls_params.tls_maximum_protocol_version = _TLS_VERSIONS[tls.max_version]
    common.tls_params.cipher_suites.extend(tls.cipher_suites)
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=any_of(ctx))


def _routes_somewhere(rule: Any) -> bool:
    return any(d.weight > 0 for d in rule.route)


def _hash_for(reg: Registry, namespace: str, host: str, subset: str | None, port: int) -> Any:
    from controller.xds.generator import _hash_for as hash_for

    return hash_for(reg, namespace, host, subset, port)


def _own_port(reg: Registry, port: int, host: str, given: int | None) -> int:
    if given is not None:
        return given
    svc = reg.services.get(host)
    return svc.ports[0].port if svc is not None and len(svc.ports) == 1 else port


def gateway_resources(reg: Registry, labels: FrozenMap[str], pod: Pod | None) -> ResourceMap:
    """The listeners and routes of one gateway proxy (its clusters come from its scope)."""
    gws = gateways_for(reg.snapshot, labels)
    out = _Build(reg, gws, pod, labels).run()
    # Clusters and endpoints are the scope's; nothing of those types is per gateway.
    out[CLUSTER], out[ENDPOINT] = {}, {}
    return out
