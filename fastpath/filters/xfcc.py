"""``x-forwarded-client-cert``: the HTTP connection manager's forward_client_cert_details, as Istio sets it
on inbound (APPEND_FORWARD with subject, URI and DNS): the application learns who called over mutual TLS.

An element reads ``By=<our SPIFFE ID>;Hash=<SHA-256 of the peer certificate>;Subject="<subject>";
URI=<the peer's SPIFFE ID>`` (Envoy's format). Without mutual TLS the header is removed, except in
ALWAYS_FORWARD_ONLY mode: a plain-text client must not be able to claim an identity.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from fastpath import filters, tls

if TYPE_CHECKING:
    from fastpath.exchange import Exchange

HEADER = b"x-forwarded-client-cert"
# HttpConnectionManager.ForwardClientCertDetails
SANITIZE, FORWARD_ONLY, APPEND_FORWARD, SANITIZE_SET, ALWAYS_FORWARD_ONLY = range(5)
MODES = ("SANITIZE", "FORWARD_ONLY", "APPEND_FORWARD", "SANITIZE_SET", "ALWAYS_FORWARD_ONLY")


class XfccFilter(filters.HttpFilter):
    name = "x-forwarded-client-cert"

    def __init__(self, mode: int, subject: bool, uri: bool, dns: bool, chain: bool, cert: bool) -> None:
        self.mode = mode
        self.subject = subject
        self.uri = uri
        self.dns = dns
        self.chain = chain
        self.cert = cert
        self._by: tuple[bytes, str] = (b"", "")  # (our chain, our URI), re-read when the chain rotates

    def on_request(self, exchange: Exchange) -> int:
        mode = self.mode
        if mode == ALWAYS_FORWARD_ONLY:
            return filters.CONTINUE
        layer = getattr(exchange.conn, "tls", None)
        mutual = layer is not None and layer.peer_cert
        if not mutual or mode == SANITIZE:
            if exchange.head.get(HEADER) is not None:
                _set(exchange, b"")
            return filters.CONTINUE
        if mode == FORWARD_ONLY:
            return filters.CONTINUE
        element = self._element(layer)
        existing = exchange.head.get(HEADER)
        _set(exchange, existing + b"," + element if existing and mode == APPEND_FORWARD else element)
        return filters.CONTINUE

    def _element(self, layer: Any) -> bytes:
        parts = []
        by = self._local_uri()
        if by:
            parts.append(f"By={by}")
        der = layer.sslobj.getpeercert(binary_form=True) or b""
        parts.append(f"Hash={hashlib.sha256(der).hexdigest()}")
        peer = layer.peer_cert or {}
        if self.subject:
            subject = ",".join("=".join(x) for rdn in peer.get("subject", ()) for x in rdn)
            parts.append(f'Subject="{subject}"')
        if self.uri:
            parts += [f"URI={u}" for u in tls.peer_uris(peer)]
        if self.dns:
            parts += [f"DNS={v}" for k, v in peer.get("subjectAltName", ()) if k == "DNS"]
        return ";".join(parts).encode()

    def _local_uri(self) -> str:
        secret = tls.SECRETS.certs.get(tls.DEFAULT_CERT)
        if secret is None:
            return ""
        if self._by[0] is not secret.chain:
            from cryptography import x509

            uri = ""
            try:
                leaf = x509.load_pem_x509_certificate(secret.chain)
                san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                uris = san.get_values_for_type(x509.UniformResourceIdentifier)
                uri = uris[0] if uris else ""
            except (ValueError, x509.ExtensionNotFound):
                pass
            self._by = (secret.chain, uri)
        return self._by[1]


def _set(exchange: Exchange, value: bytes) -> None:
    """What the router puts in the upstream request: ``value``, or no header at all when empty."""
    state = exchange.filter_state
    if state is None:
        state = exchange.filter_state = {}
    state["xfcc"] = value


def build(mode: int, details: Any) -> XfccFilter:
    return XfccFilter(
        mode,
        subject=details.subject.value if details.HasField("subject") else False,
        uri=details.uri,
        dns=details.dns,
        chain=details.chain,
        cert=details.cert,
    )
