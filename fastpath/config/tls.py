"""Transport sockets (``envoy.transport_sockets.tls``) compiled: what a cluster originates, what a filter
chain terminates, and the secrets they name.

The subset accepted is what Istio emits for mesh mTLS and DestinationRule TLS: certificates and trust
from SDS (``default`` / ``ROOTCA``, served in-process by the certificate client) or from files, SAN
matching (SPIFFE IDs), ALPN, SNI, protocol versions and cipher suites, required client certificates.
Every other field is refused with its path.
"""

from __future__ import annotations

import hashlib
import ssl
import tempfile
from dataclasses import dataclass, replace
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2

from fastpath import tls
from fastpath.config.errors import Resource, join

TLS_SOCKET = "envoy.transport_sockets.tls"
RAW_SOCKET = "envoy.transport_sockets.raw_buffer"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
RAW_BUFFER = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
# Istio's agent serves SDS to Envoy on this cluster; here the proxy is its own SDS server.
SDS_CLUSTER = "sds-grpc"

_VERSION_NAMES = {0: "TLS_AUTO", 1: "TLSv1_0", 2: "TLSv1_1", 3: "TLSv1_2", 4: "TLSv1_3"}
_SESSION_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class CommonTls:
    cert_sds: str = ""  # an SDS secret name, or
    cert_files: tuple[str, str] | None = None  # (chain, key) files
    roots_sds: str = ""
    roots_file: str = ""
    san: tls.SanMatcher | None = None
    alpn: tuple[str, ...] = ()
    min_version: str = "TLS_AUTO"
    max_version: str = "TLS_AUTO"
    ciphers: str = ""

    def cert(self) -> tls.CertSecret | None:
        if self.cert_sds:
            found = tls.SECRETS.certs.get(self.cert_sds)
            if found is None:
                raise tls.TlsError(f"no certificate yet (SDS secret {self.cert_sds!r})")
            return found
        if self.cert_files is not None:
            return tls.CertSecret(tls.read_file(self.cert_files[0]), tls.read_file(self.cert_files[1]))
        return None

    def roots(self) -> bytes | None:
        if self.roots_sds:
            found = tls.SECRETS.roots.get(self.roots_sds)
            if found is None:
                raise tls.TlsError(f"no trust bundle yet (SDS secret {self.roots_sds!r})")
            return found
        if self.roots_file:
            return tls.read_file(self.roots_file)
        return None


# Contexts by config, made again when the secrets change (a rotation): (generation, context).
_contexts: dict[Any, tuple[int, ssl.SSLContext]] = {}
# Client sessions by (config, host, port), for resumption: a reconnect skips the full handshake.
_sessions: dict[tuple[Any, str, int], Any] = {}


def _context(key: Any, build: Any) -> ssl.SSLContext:
    generation = tls.SECRETS.generation
    cached = _contexts.get(key)
    if cached is not None and cached[0] == generation:
        return cached[1]
    if cached is not None:
        # Sessions made under the old certificate would resume the old identity: start afresh.
        _sessions.clear()
    ctx = build()
    _contexts[key] = (generation, ctx)
    return ctx


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """Origination: this proxy is the TLS client."""

    common: CommonTls
    sni: str = ""

    def with_alpn(self, alpn: tuple[str, ...]) -> UpstreamTls:
        """The same origination offering ``alpn`` (Istio's per-request ALPN override)."""
        return replace(self, common=replace(self.common, alpn=alpn))

    def context(self) -> ssl.SSLContext:
        c = self.common
        return _context(
            self,
            lambda: tls.make_context(
                server_side=False,
                cert=c.cert(),
                roots=c.roots(),
                require_peer_cert=True,
                alpn=c.alpn,
                min_version=c.min_version,
                max_version=c.max_version,
                ciphers=c.ciphers,
            ),
        )

    def layer(self, inner: Any, host: str, port: int) -> tls.TlsLayer:
        """The client-side TLS layer for one connection (raises TlsError when a secret is missing)."""
        key = (self, host, port)

        def keep(session: Any) -> None:
            if len(_sessions) >= _SESSION_CACHE_MAX:
                _sessions.clear()
            _sessions[key] = session

        return tls.TlsLayer(
            self.context(),
            inner,
            server_side=False,
            server_hostname=self.sni or None,
            verify=self.common.san,
            session=_sessions.get(key),
            session_cb=keep,
        )


@dataclass(frozen=True, slots=True)
class DownstreamTls:
    """Termination: this proxy is the TLS server."""

    common: CommonTls
    require_client_certificate: bool = False

    def context(self) -> ssl.SSLContext:
        c = self.common
        return _context(
            self,
            lambda: tls.make_context(
                server_side=True,
                cert=c.cert(),
                roots=c.roots(),
                require_peer_cert=self.require_client_certificate,
                alpn=c.alpn,
                min_version=c.min_version,
                max_version=c.max_version,
                ciphers=c.ciphers,
            ),
        )


def _sds_name(res: Resource, path: str, sds: secret_pb2.SdsSecretConfig) -> str:
    res.reject_unsupported(sds, path, {"name", "sds_config"})
    if not sds.name:
        raise res.error(join(path, "name"), "required")
    if sds.HasField("sds_config"):
        src = sds.sds_config
        which = src.WhichOneof("config_source_specifier")
        if which == "api_config_source":
            services = src.api_config_source.grpc_services
            if len(services) != 1 or services[0].envoy_grpc.cluster_name != SDS_CLUSTER:
                raise res.error(
                    join(path, "sds_config.api_config_source"),
                    f"only the local SDS server (cluster {SDS_CLUSTER!r}) is supported",
                )
        elif which not in ("ads", None):
            raise res.error(join(path, "sds_config"), f"{which} is not supported (ads or {SDS_CLUSTER})")
    return sds.name


def _inline_data(ds: Any) -> bytes:
    """The bytes of a DataSource given inline (``inline_bytes`` or ``inline_string``)."""
    if ds.WhichOneof("specifier") == "inline_bytes":
        return bytes(ds.inline_bytes)
    return str(ds.inline_string).encode()


def _inline_cert(res: Resource, path: str, c: Any) -> str:
    """A certificate given inline (a gateway's credentialName, as the controller sends it): kept in the
    secret store under a name made from its content, so contexts are made and cached as for SDS ones."""

    chain, key = _inline_data(c.certificate_chain), _inline_data(c.private_key)
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            files = (f"{tmp}/chain.pem", f"{tmp}/key.pem")
            for name, content in zip(files, (chain, key), strict=True):
                with open(name, "wb") as f:
                    f.write(content)
            ctx.load_cert_chain(*files)
    except (ssl.SSLError, ValueError) as exc:
        raise res.error(path, f"not a usable certificate and key: {exc}") from None
    name = "inline:" + hashlib.sha256(chain + b"\0" + key).hexdigest()[:24]
    if name not in tls.SECRETS.certs:
        tls.SECRETS.set_cert(name, tls.CertSecret(chain, key))
    return name


def _data_source_file(res: Resource, path: str, ds: Any) -> str:
    if ds.WhichOneof("specifier") != "filename":
        raise res.error(path, "only a filename is supported")
    return str(ds.filename)


def _san(res: Resource, path: str, vc: common_pb2.CertificateValidationContext) -> tls.SanMatcher | None:
    exact: set[str] = set()
    prefixes: list[str] = []

    def add(p: str, m: Any) -> None:
        res.reject_unsupported(m, p, {"exact", "prefix"})
        if m.WhichOneof("match_pattern") == "exact":
            exact.add(m.exact)
        elif m.WhichOneof("match_pattern") == "prefix":
            prefixes.append(m.prefix)
        else:
            raise res.error(p, "exact or prefix")

    for i, m in enumerate(vc.match_subject_alt_names):
        add(f"{path}.match_subject_alt_names[{i}]", m)
    for i, typed in enumerate(vc.match_typed_subject_alt_names):
        p = f"{path}.match_typed_subject_alt_names[{i}]"
        res.reject_unsupported(typed, p, {"san_type", "matcher"})
        add(join(p, "matcher"), typed.matcher)
    if not exact and not prefixes:
        return None
    return tls.SanMatcher(frozenset(exact), tuple(prefixes))


def _inline_roots(res: Resource, path: str, ds: Any) -> str:
    """A trust bundle given inline (a gateway's mutual TLS CA from its credential Secret): kept in the
    secret store under a name made from its content, as inline certificates are."""
    pem = _inline_data(ds)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cadata=pem.decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as exc:
        raise res.error(path, f"not a usable CA bundle: {exc}") from None
    name = "inline-ca:" + hashlib.sha256(pem).hexdigest()[:24]
    if tls.SECRETS.roots.get(name) != pem:
        tls.SECRETS.set_root(name, pem)
    return name


def _validation(
    res: Resource, path: str, vc: common_pb2.CertificateValidationContext
) -> tuple[str, str, tls.SanMatcher | None]:
    """(CA file, CA secret name, peer name matcher) of a validation context."""
    res.reject_unsupported(
        vc, path, {"trusted_ca", "match_subject_alt_names", "match_typed_subject_alt_names"}
    )
    roots_file = roots_sds = ""
    if vc.HasField("trusted_ca"):
        p = join(path, "trusted_ca")
        if vc.trusted_ca.WhichOneof("specifier") in ("inline_bytes", "inline_string"):
            roots_sds = _inline_roots(res, p, vc.trusted_ca)
        else:
            roots_file = _data_source_file(res, p, vc.trusted_ca)
    return roots_file, roots_sds, _san(res, path, vc)


def compile_common(res: Resource, path: str, ctx: tls_pb2.CommonTlsContext) -> CommonTls:
    res.reject_unsupported(
        ctx,
        path,
        {
            "tls_params",
            "tls_certificates",
            "tls_certificate_sds_secret_configs",
            "validation_context",
            "validation_context_sds_secret_config",
            "combined_validation_context",
            "alpn_protocols",
        },
    )
    min_v = max_v = "TLS_AUTO"
    ciphers = ""
    if ctx.HasField("tls_params"):
        p = join(path, "tls_params")
        params = ctx.tls_params
        res.reject_unsupported(
            params, p, {"tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites"}
        )
        min_v = _VERSION_NAMES[params.tls_minimum_protocol_version]
        max_v = _VERSION_NAMES[params.tls_maximum_protocol_version]
        for name, value in (("tls_minimum_protocol_version", min_v), ("tls_maximum_protocol_version", max_v)):
            if value in ("TLSv1_0", "TLSv1_1"):
                raise res.error(join(p, name), f"{value} is not supported (TLSv1_2 or TLSv1_3)")
        if params.cipher_suites:
            ciphers = ":".join(params.cipher_suites)
            try:
                ssl.create_default_context().set_ciphers(ciphers)
            except ssl.SSLError:
                raise res.error(join(p, "cipher_suites"), f"OpenSSL accepts none of {ciphers!r}") from None
    cert_sds = ""
    cert_files = None
    if len(ctx.tls_certificate_sds_secret_configs) + len(ctx.tls_certificates) > 1:
        raise res.error(join(path, "tls_certificates"), "one certificate at most")
    if ctx.tls_certificate_sds_secret_configs:
        cert_sds = _sds_name(
            res, f"{path}.tls_certificate_sds_secret_configs[0]", ctx.tls_certificate_sds_secret_configs[0]
        )
    elif ctx.tls_certificates:
        c = ctx.tls_certificates[0]
        cp = f"{path}.tls_certificates[0]"
        res.reject_unsupported(c, cp, {"certificate_chain", "private_key"})
        inline = ("inline_bytes", "inline_string")
        kinds = (c.certificate_chain.WhichOneof("specifier"), c.private_key.WhichOneof("specifier"))
        if kinds[0] in inline and kinds[1] in inline:
            cert_sds = _inline_cert(res, cp, c)
        else:
            cert_files = (
                _data_source_file(res, join(cp, "certificate_chain"), c.certificate_chain),
                _data_source_file(res, join(cp, "private_key"), c.private_key),
            )
    roots_sds = ""
    roots_file = ""
    san = None
    which = ctx.WhichOneof("validation_context_type")
    if which == "validation_context":
        roots_file, roots_sds, san = _validation(
            res, join(path, "validation_context"), ctx.validation_context
        )
    elif which == "validation_context_sds_secret_config":
        roots_sds = _sds_name(
            res, join(path, "validation_context_sds_secret_config"), ctx.validation_context_sds_secret_config
        )
    elif which == "combined_validation_context":
        cp = join(path, "combined_validation_context")
        combined = ctx.combined_validation_context
        res.reject_unsupported(
            combined, cp, {"default_validation_context", "validation_context_sds_secret_config"}
        )
        roots_file, inline_roots, san = _validation(
            res, join(cp, "default_validation_context"), combined.default_validation_context
        )
        if inline_roots:
            raise res.error(
                join(cp, "default_validation_context.trusted_ca"), "given inline beside an SDS trust bundle"
            )
        roots_sds = _sds_name(
            res,
            join(cp, "validation_context_sds_secret_config"),
            combined.validation_context_sds_secret_config,
        )
    elif which is not None:
        raise res.error(join(path, which), "not supported by mizzen-proxy")
    return CommonTls(
        cert_sds=cert_sds,
        cert_files=cert_files,
        roots_sds=roots_sds,
        roots_file=roots_file,
        san=san,
        alpn=tuple(ctx.alpn_protocols),
        min_version=min_v,
        max_version=max_v,
        ciphers=ciphers,
    )


def compile_upstream_socket(res: Resource, path: str, ts: base_pb2.TransportSocket) -> UpstreamTls | None:
    """A cluster's transport socket: TLS origination, or None for plain text (raw_buffer)."""
    res.reject_unsupported(ts, path, {"name", "typed_config"})
    url = ts.typed_config.type_url
    if url == RAW_BUFFER or (not url and ts.name == RAW_SOCKET):
        return None
    if url != UPSTREAM_TLS:
        raise res.error(join(path, "typed_config"), f"unsupported transport socket {url or ts.name!r}")
    ctx = tls_pb2.UpstreamTlsContext()
    ts.typed_config.Unpack(ctx)
    p = join(path, "typed_config")
    res.reject_unsupported(ctx, p, {"common_tls_context", "sni"})
    common = compile_common(res, join(p, "common_tls_context"), ctx.common_tls_context)
    if common.san is not None and not common.roots_sds and not common.roots_file:
        raise res.error(join(p, "common_tls_context"), "matching peer names needs a trusted CA")
    # No validation context: the server is not verified (Envoy's meaning; DestinationRule SIMPLE with
    # insecureSkipVerify).
    return UpstreamTls(common, ctx.sni)


def compile_downstream_socket(res: Resource, path: str, ts: base_pb2.TransportSocket) -> DownstreamTls | None:
    """A filter chain's transport socket: TLS termination, or None for plain text."""
    res.reject_unsupported(ts, path, {"name", "typed_config"})
    url = ts.typed_config.type_url
    if url == RAW_BUFFER or (not url and ts.name == RAW_SOCKET):
        return None
    if url != DOWNSTREAM_TLS:
        raise res.error(join(path, "typed_config"), f"unsupported transport socket {url or ts.name!r}")
    ctx = tls_pb2.DownstreamTlsContext()
    ts.typed_config.Unpack(ctx)
    p = join(path, "typed_config")
    res.reject_unsupported(ctx, p, {"common_tls_context", "require_client_certificate"})
    common = compile_common(res, join(p, "common_tls_context"), ctx.common_tls_context)
    if not common.cert_sds and common.cert_files is None:
        raise res.error(join(p, "common_tls_context"), "a certificate is required to terminate TLS")
    require = ctx.require_client_certificate.value
    if require and not common.roots_sds and not common.roots_file:
        raise res.error(join(p, "require_client_certificate"), "needs a validation context (trusted CA)")
    return DownstreamTls(common, require)


def static_secret(res: Resource, path: str, secret: secret_pb2.Secret) -> None:
    """A bootstrap's static secret, into the store: a certificate (chain and key) or a trust bundle."""
    res.reject_unsupported(secret, path, {"name", "tls_certificate", "validation_context"})
    if not secret.name:
        raise res.error(join(path, "name"), "required")

    def data(p: str, ds: Any) -> bytes:
        which = ds.WhichOneof("specifier")
        if which == "filename":
            try:
                return tls.read_file(ds.filename)
            except OSError as exc:
                raise res.error(p, f"{ds.filename}: {exc.strerror}") from None
        if which == "inline_bytes":
            return bytes(ds.inline_bytes)
        if which == "inline_string":
            return str(ds.inline_string).encode()
        raise res.error(p, "filename, inline_bytes or inline_string")

    if secret.HasField("tls_certificate"):
        c = secret.tls_certificate
        cp = join(path, "tls_certificate")
        res.reject_unsupported(c, cp, {"certificate_chain", "private_key"})
        tls.SECRETS.set_cert(
            secret.name,
            tls.CertSecret(
                data(join(cp, "certificate_chain"), c.certificate_chain),
                data(join(cp, "private_key"), c.private_key),
            ),
        )
    elif secret.HasField("validation_context"):
        vc = secret.validation_context
        vp = join(path, "validation_context")
        res.reject_unsupported(vc, vp, {"trusted_ca"})
        tls.SECRETS.set_root(secret.name, data(join(vp, "trusted_ca"), vc.trusted_ca))
    else:
        raise res.error(path, "a tls_certificate or a validation_context")


# Referenced so that typed_config Any messages resolve when a bootstrap is parsed.
_TYPES = (raw_buffer_pb2.RawBuffer, tls_pb2.UpstreamTlsContext, tls_pb2.DownstreamTlsContext)
