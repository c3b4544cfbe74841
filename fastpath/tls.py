"""TLS for the sidecar: the secrets it holds, the contexts made from them, and the TLS layer.

The layer is an asyncio protocol below (it owns the TCP transport) and a transport above (the HTTP
connection manager, a TCP proxy leg or an upstream connection sit on it unchanged). It runs OpenSSL
through ``ssl.SSLObject`` over memory BIOs rather than ``loop.start_tls``: on the inbound side the
listener's tls_inspector has already read the ClientHello from the socket to choose the filter chain,
and those bytes must be handed to the handshake, which start_tls cannot take.

Secrets are Envoy's SDS names: ``default`` is this workload's certificate and key, ``ROOTCA`` the
mesh's trust bundle. The certificate client (``fastpath.certs``) or a bootstrap's static secrets fill
the store; contexts are rebuilt when a secret changes, so connections opened after a rotation present
the new certificate while those in flight keep the one they started with.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mizzen import logs

log = logs.get("tls")

DEFAULT_CERT = "default"
ROOT_CA = "ROOTCA"
SPIFFE = "spiffe://"
_MAX_READ = 256 * 1024

_VERSIONS = {
    "TLS_AUTO": None,
    "TLSv1_2": ssl.TLSVersion.TLSv1_2,
    "TLSv1_3": ssl.TLSVersion.TLSv1_3,
}


class TlsError(ConnectionError):
    """A TLS handshake that failed or a peer that is not who the config says it must be."""


@dataclass(frozen=True, slots=True)
class CertSecret:
    """A certificate chain and its private key, PEM."""

    chain: bytes
    key: bytes
    not_after: float = 0.0  # epoch seconds, for /certs and rotation


class SecretStore:
    """SDS secrets by name: certificates (``default``) and trust bundles (``ROOTCA``).

    Contexts made from them are cached by the store's generation, which every change bumps."""

    def __init__(self) -> None:
        self.certs: dict[str, CertSecret] = {}
        self.roots: dict[str, bytes] = {}
        self.generation = 0
        self.watchers: list[Callable[[], None]] = []

    def set_cert(self, name: str, secret: CertSecret) -> None:
        self.certs[name] = secret
        self._changed()

    def set_root(self, name: str, pem: bytes) -> None:
        self.roots[name] = pem
        self._changed()

    def clear(self) -> None:
        self.certs.clear()
        self.roots.clear()
        self._changed()

    def _changed(self) -> None:
        self.generation += 1
        for watcher in list(self.watchers):
            watcher()


SECRETS = SecretStore()


def read_file(path: str) -> bytes:
    """A file named by config (certificate, key or CA bundle): read when a context is made."""
    with open(path, "rb") as f:
        return f.read()


def _load_chain(ctx: ssl.SSLContext, cert: CertSecret) -> None:
    # ssl loads keys from files only; an anonymous memory file keeps the key off every disk.
    fd = os.memfd_create("mizzen-cert", os.MFD_CLOEXEC)
    try:
        os.write(fd, cert.chain + b"\n" + cert.key)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def make_context(
    *,
    server_side: bool,
    cert: CertSecret | None,
    roots: bytes | None,
    require_peer_cert: bool,
    alpn: tuple[str, ...] = (),
    min_version: str = "TLS_AUTO",
    max_version: str = "TLS_AUTO",
    ciphers: str = "",
) -> ssl.SSLContext:
    """An OpenSSL context for one side. Peer names are checked by the layer (SPIFFE URIs are not DNS
    names), so hostname checking is off; the chain is verified against ``roots`` when given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.minimum_version = _VERSIONS.get(min_version) or ssl.TLSVersion.TLSv1_2
    top = _VERSIONS.get(max_version)
    if top is not None:
        ctx.maximum_version = top
    if ciphers:
        ctx.set_ciphers(ciphers)
    if cert is not None:
        _load_chain(ctx, cert)
    if roots:
        ctx.load_verify_locations(cadata=roots.decode("ascii"))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_peer_cert or not server_side else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def peer_uris(cert: dict[str, Any] | None) -> tuple[str, ...]:
    """URI subject alternative names of a peer certificate as ``SSLObject.getpeercert()`` gives it."""
    if not cert:
        return ()
    return tuple(v for k, v in cert.get("subjectAltName", ()) if k == "URI")


def peer_names(cert: dict[str, Any] | None) -> tuple[str, ...]:
    """Every subject alternative name (URI, DNS, IP) of a peer certificate."""
    if not cert:
        return ()
    return tuple(str(v) for _, v in cert.get("subjectAltName", ()))


def principal_of(cert: dict[str, Any] | None) -> str:
    """The peer's SPIFFE ID (Istio's source.principal), or "" when it has none."""
    for uri in peer_uris(cert):
        if uri.startswith(SPIFFE):
            return uri
    return ""


@dataclass(frozen=True, slots=True)
class SanMatcher:
    """Envoy's match_subject_alt_names: the peer must carry one name equal to ``exact`` or starting with
    one of ``prefixes`` (Istio's SPIFFE IDs are exact)."""

    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    def matches(self, names: tuple[str, ...]) -> bool:
        for name in names:
            if name in self.exact or any(name.startswith(p) for p in self.prefixes):
                return True
        return False

    def __str__(self) -> str:
        return ", ".join([*sorted(self.exact), *(p + "*" for p in self.prefixes)])


# Called once the handshake is done, with the layer; returns False to refuse the connection (the
# network RBAC filter) after which the layer closes.
HandshakeHook = Callable[["TlsLayer"], bool]


class TlsLayer:
    """TLS between a TCP transport (below) and a protocol (above); see the module docstring.

    Server side: created once the filter chain is known, fed the bytes already read. Client side: the
    protocol factory of ``create_connection``; ``handshake`` is awaited before the connection is used,
    so a handshake or verification failure is a connect failure (Envoy's UF), never a half-open pool
    entry."""

    __slots__ = (
        "alpn",
        "closed",
        "eof_seen",
        "eof_sent",
        "handshake",
        "incoming",
        "inner",
        "inner_made",
        "on_handshake",
        "on_lost",
        "outgoing",
        "peer_cert",
        "pending",
        "principal",
        "raw",
        "server_side",
        "session_cb",
        "sni",
        "sslobj",
        "verify",
    )

    def __init__(
        self,
        context: ssl.SSLContext,
        inner: Any,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        verify: SanMatcher | None = None,
        on_handshake: HandshakeHook | None = None,
        session: Any = None,
        session_cb: Callable[[Any], None] | None = None,
    ) -> None:
        self.inner = inner
        self.server_side = server_side
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(
            self.incoming,
            self.outgoing,
            server_side=server_side,
            server_hostname=server_hostname or None,
            session=session,
        )
        self.raw: Any = None
        self.verify = verify
        self.on_handshake = on_handshake
        self.on_lost: Callable[[], None] | None = None  # the connection ended before the inner protocol
        self.session_cb = session_cb
        self.handshake: asyncio.Future[None] | None = None
        self.pending: list[bytes] = []  # written above before the handshake finished
        self.inner_made = False
        self.closed = False
        self.eof_sent = False
        self.eof_seen = False  # the inner protocol has had its eof_received (close_notify or FIN)
        self.peer_cert: dict[str, Any] | None = None
        self.principal = ""
        self.alpn: str | None = None
        self.sni = server_hostname or ""  # server side: what the ClientHello asked for (set by the proxy)

    # -- protocol (below) ----------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.raw = transport
        if not self.server_side:
            self.handshake = asyncio.get_running_loop().create_future()
            self._do_handshake()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.incoming.write(data)
        if not self.inner_made:
            self._do_handshake()
            if not self.inner_made:
                return
        self._read()

    def _read(self) -> None:
        sslobj = self.sslobj
        chunks: list[bytes] = []
        eof = False
        while True:
            try:
                chunk = sslobj.read(_MAX_READ)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                eof = True
                break
            except ssl.SSLError as exc:
                self._fail(exc)
                return
            if not chunk:
                eof = True
                break
            chunks.append(chunk)
        if self.outgoing.pending:  # a key update or session ticket answer
            self.raw.write(self.outgoing.read())
        if self.session_cb is not None and chunks:
            # TLS 1.3 tickets arrive after the handshake: the session is worth keeping from here on.
            cb, self.session_cb = self.session_cb, None
            cb(sslobj.session)
        if chunks:
            self.inner.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if eof and not self.closed and not self.eof_seen:
            self.eof_seen = True
            if not self.inner.eof_received():
                self.close()

    def eof_received(self) -> bool:
        if not self.inner_made:
            self._fail(TlsError("connection closed during the TLS handshake"))
            return False
        if self.eof_seen:
            return not self.closed  # close_notify came first and was passed on
        # A TCP FIN without close_notify: the peer is done sending all the same.
        self.eof_seen = True
        return bool(self.inner.eof_received())

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if self.handshake is not None and not self.handshake.done():
            self.handshake.set_exception(exc or TlsError("connection closed during the TLS handshake"))
        if self.inner_made:
            self.inner.connection_lost(exc)
        elif self.on_lost is not None:
            cb, self.on_lost = self.on_lost, None
            cb()

    def pause_writing(self) -> None:
        if self.inner_made:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner_made:
            self.inner.resume_writing()

    # -- the handshake -------------------------------------------------------------------------------

    def _do_handshake(self) -> None:
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            if self.outgoing.pending:
                self.raw.write(self.outgoing.read())
            return
        except (ssl.SSLError, ssl.CertificateError) as exc:
            if self.outgoing.pending:  # the alert, so that the peer learns why
                self.raw.write(self.outgoing.read())
            self._fail(exc)
            return
        if self.outgoing.pending:
            self.raw.write(self.outgoing.read())
        sslobj = self.sslobj
        self.peer_cert = sslobj.getpeercert()
        self.principal = principal_of(self.peer_cert)
        self.alpn = sslobj.selected_alpn_protocol()
        # A server verifies the names of a certificate the client presented; whether one was needed at
        # all is the context's verify mode (a client without one was refused by OpenSSL if it was).
        checked = self.verify is not None and (self.peer_cert or not self.server_side)
        if checked and not self.verify.matches(peer_names(self.peer_cert)):  # type: ignore[union-attr]
            self._fail(
                TlsError(
                    "peer certificate names "
                    f"{', '.join(peer_names(self.peer_cert)) or '(none)'} match none of {self.verify}"
                )
            )
            return
        if self.on_handshake is not None and not self.on_handshake(self):
            self.close()
            return
        self.inner_made = True
        self.inner.connection_made(self)
        if self.pending:
            data, self.pending = b"".join(self.pending), []
            self.write(data)
        if self.handshake is not None and not self.handshake.done():
            self.handshake.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.closed:
            return
        log.debug("tls handshake failed" if not self.inner_made else "tls error", error=str(exc))
        if self.handshake is not None and not self.handshake.done():
            self.handshake.set_exception(exc if isinstance(exc, TlsError) else TlsError(f"TLS error: {exc}"))
        self.closed = True
        if self.raw is not None:
            self.raw.close()  # after the alert, if any
        if self.inner_made:
            self.on_lost = None
            self.inner.connection_lost(exc if isinstance(exc, Exception) else None)
            self.inner_made = False

    # -- transport (above) ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed or self.eof_sent:
            return
        if not self.inner_made:
            self.pending.append(bytes(data))
            return
        sslobj = self.sslobj
        view = memoryview(data)
        offset = 0
        total = len(data)
        try:
            while offset < total:
                offset += sslobj.write(view[offset:])
        except ssl.SSLError as exc:
            self._fail(exc)
            return
        self.raw.write(self.outgoing.read())

    def writelines(self, lines: Any) -> None:
        self.write(b"".join(lines))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """close_notify: TLS 1.3 lets the other direction go on (a half-close, as TCP's FIN)."""
        if self.closed or self.eof_sent or not self.inner_made:
            return
        self.eof_sent = True
        try:
            self.sslobj.unwrap()
        except ssl.SSLError:
            pass  # wants the peer's close_notify too: not waited for
        if self.outgoing.pending:
            self.raw.write(self.outgoing.read())

    def close(self) -> None:
        if self.raw is None:
            return
        if not self.closed and self.inner_made and not self.eof_sent:
            self.write_eof()
        self.closed = True
        self.raw.close()

    def abort(self) -> None:
        self.closed = True
        if self.raw is not None:
            self.raw.abort()

    def is_closing(self) -> bool:
        return self.closed or self.raw is None or bool(self.raw.is_closing())

    def pause_reading(self) -> None:
        if self.raw is not None:
            self.raw.pause_reading()

    def resume_reading(self) -> None:
        if self.raw is not None:
            self.raw.resume_reading()

    def is_reading(self) -> bool:
        return self.raw is not None and bool(self.raw.is_reading())

    def get_write_buffer_size(self) -> int:
        return int(self.raw.get_write_buffer_size()) if self.raw is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self.raw is not None:
            self.raw.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: Any) -> None:
        self.inner = protocol

    def get_protocol(self) -> Any:
        return self.inner

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peer_principal":
            return self.principal
        if name == "peercert":
            return self.peer_cert
        if name == "ssl_object":
            return self.sslobj
        if name == "alpn_protocol":
            return self.alpn
        if name == "tls_layer":
            return self
        return self.raw.get_extra_info(name, default) if self.raw is not None else default
