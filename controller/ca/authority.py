"""The mesh's certificate authority: a signing key and certificate, and the workload certificates it issues.

Either self-signed (made on first start and persisted: a Kubernetes Secret ``istio-ca-secret`` or, in
local mode, a directory) or plugged in by the user as Istio's ``cacerts`` files: ``ca-cert.pem`` and
``ca-key.pem`` (an intermediate or a root), ``root-cert.pem`` (the root that anchors trust) and
``cert-chain.pem`` (from the signing certificate up to the root). Workload certificates carry only the
SPIFFE ID ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`` as a URI SAN, as Istio's do.
Keys are ECDSA P-256: the cheapest to sign with and to verify in every handshake.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mizzen import logs

log = logs.get("ca")

DEFAULT_TRUST_DOMAIN = "cluster.local"
DEFAULT_WORKLOAD_TTL = 24 * 3600.0  # Istio's DEFAULT_WORKLOAD_CERT_TTL
MAX_WORKLOAD_TTL = 90 * 24 * 3600.0  # Istio's MAX_WORKLOAD_CERT_TTL
ROOT_TTL = 10 * 365 * 24 * 3600.0
CLOCK_SKEW = 60.0  # certificates are valid from a minute ago: clocks in a cluster differ a little
ORGANIZATION = "cluster.local"

# Istio's plug-in CA file names (the ``cacerts`` Secret's keys).
CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN = "ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"


class CsrError(ValueError):
    """A certificate request the CA refuses; the message says why (it goes back to the caller)."""


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_csr(key: ec.EllipticCurvePrivateKey, identity: str) -> bytes:
    """A CSR for ``identity`` (a SPIFFE ID), PEM: what a sidecar sends the CA."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ca_certificate(
    key: ec.EllipticCurvePrivateKey, subject: str, ttl: float, issuer: tuple[x509.Certificate, object] | None
) -> x509.Certificate:
    now = _now()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, subject),
        ]
    )
    issuer_name, signer = (name, key) if issuer is None else (issuer[0].subject, issuer[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(seconds=CLOCK_SKEW))
        .not_valid_after(now + datetime.timedelta(seconds=ttl))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]


@dataclass(frozen=True)
class CaMaterial:
    """What the CA signs with and what it hands out with each certificate, PEM."""

    cert: bytes  # the signing certificate
    key: bytes
    root: bytes  # the trust anchor(s) published to every namespace and proxy
    chain: bytes = b""  # from the signing certificate up to the root (plug-in CA); "" when self-signed

    @classmethod
    def self_signed(cls, trust_domain: str = DEFAULT_TRUST_DOMAIN, ttl: float = ROOT_TTL) -> CaMaterial:
        key = new_key()
        cert = _ca_certificate(key, f"Mizzen CA ({trust_domain})", ttl, None)
        pem = cert_pem(cert)
        return cls(pem, key_pem(key), pem)

    @classmethod
    def intermediate(cls, root: CaMaterial, name: str, ttl: float = ROOT_TTL) -> CaMaterial:
        """An intermediate signed by ``root``: a plug-in CA's usual shape (tests, demos)."""
        root_cert = x509.load_pem_x509_certificate(root.cert)
        root_key = serialization.load_pem_private_key(root.key, None)
        key = new_key()
        cert = _ca_certificate(key, name, ttl, (root_cert, root_key))
        pem = cert_pem(cert)
        return cls(pem, key_pem(key), root.root, pem + root.cert)

    def files(self) -> dict[str, bytes]:
        """Istio's ``cacerts`` layout."""
        return {
            CA_CERT: self.cert,
            CA_KEY: self.key,
            ROOT_CERT: self.root,
            CERT_CHAIN: self.chain or self.cert,
        }

    @classmethod
    def from_files(cls, files: dict[str, bytes], where: str) -> CaMaterial:
        missing = [n for n in (CA_CERT, CA_KEY) if not files.get(n)]
        if missing:
            raise ValueError(f"{where}: {', '.join(missing)} missing")
        cert, key = files[CA_CERT], files[CA_KEY]
        root = files.get(ROOT_CERT) or cert
        chain = files.get(CERT_CHAIN) or b""
        if chain.strip() == cert.strip():
            chain = b""
        material = cls(cert, key, root, chain)
        material.check(where)
        return material

    @classmethod
    def load_dir(cls, directory: Path) -> CaMaterial:
        files = {}
        for name in (CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN):
            path = directory / name
            if path.exists():
                files[name] = path.read_bytes()
        return cls.from_files(files, str(directory))

    def save_dir(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in self.files().items():
            path = directory / name
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.chmod(tmp, 0o600 if name == CA_KEY else 0o644)
            tmp.rename(path)

    def check(self, where: str) -> None:
        """The key matches the certificate, which is a CA, and the chain reaches the root."""
        cert = x509.load_pem_x509_certificate(self.cert)
        key = serialization.load_pem_private_key(self.key, None)
        if key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise ValueError(f"{where}: {CA_KEY} does not belong to {CA_CERT}")
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            bc = None
        if bc is None or not bc.ca:
            raise ValueError(f"{where}: {CA_CERT} is not a CA certificate (basicConstraints CA:TRUE)")
        roots = x509.load_pem_x509_certificates(self.root)
        chain = x509.load_pem_x509_certificates(self.chain) if self.chain else [cert]
        top = chain[-1]
        if not any(_signed_by(top, r) for r in roots):
            raise ValueError(f"{where}: {CERT_CHAIN} does not end at a certificate {ROOT_CERT} signed")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class CertificateAuthority:
    """Signs workload CSRs. Pure: authentication happens before (``controller.ca.service``)."""

    def __init__(
        self,
        material: CaMaterial,
        *,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        default_ttl: float = DEFAULT_WORKLOAD_TTL,
        max_ttl: float = MAX_WORKLOAD_TTL,
    ) -> None:
        self.material = material
        self.trust_domain = trust_domain
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self._cert = x509.load_pem_x509_certificate(material.cert)
        self._key = serialization.load_pem_private_key(material.key, None)
        self._chain_tail = [
            c.strip().decode() + "\n" for c in _split_pem(material.chain if material.chain else material.cert)
        ]
        self._root = material.root.strip().decode() + "\n"

    @property
    def root_pem(self) -> bytes:
        return self.material.root

    def sign(self, csr_pem: str | bytes, identity: str, ttl: float | None = None) -> list[str]:
        """A certificate for ``identity`` from a PEM CSR: the chain as Istio returns it (the workload
        certificate, the CA's chain, the root last). Raises CsrError for a CSR it will not sign."""
        data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
        try:
            csr = x509.load_pem_x509_csr(data)
        except ValueError as exc:
            raise CsrError(f"malformed CSR: {exc}") from None
        if not csr.is_signature_valid:
            raise CsrError("malformed CSR: its signature does not verify")
        key = csr.public_key()
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
            raise CsrError(f"RSA keys must be at least 2048 bits (got {key.key_size})")
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
            raise CsrError(f"unsupported key type {type(key).__name__}")
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            asked = san.get_values_for_type(x509.UniformResourceIdentifier) + [
                str(v) for v in san.get_values_for_type(x509.DNSName)
            ]
        except x509.ExtensionNotFound:
            asked = []
        if asked != [identity]:
            raise CsrError(
                f"the CSR asks for {', '.join(asked) or 'no identity'}; the caller is {identity} and "
                "may only ask for that"
            )
        if ttl is None or ttl <= 0:
            ttl = self.default_ttl
        ttl = min(ttl, self.max_ttl)
        now = _now()
        not_after = now + datetime.timedelta(seconds=ttl)
        # Never past the signing certificate: a chain that outlives its issuer does not verify.
        not_after = min(not_after, self._cert.not_valid_after_utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._cert.subject)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(seconds=CLOCK_SKEW))
            .not_valid_after(not_after)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
            .sign(self._key, hashes.SHA256())  # type: ignore[arg-type]
        )
        leaf = cert_pem(cert).decode()
        chain = [leaf, *self._chain_tail]
        if self._root not in chain:
            chain.append(self._root)
        return chain

    def serving_certificate(
        self, dns_names: list[str], ttl: float = 365 * 24 * 3600.0
    ) -> tuple[bytes, bytes]:
        """A certificate and key for the CA's own TLS port (15012): DNS names, as istiod's."""
        key = new_key()
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(seconds=CLOCK_SKEW))
            .not_valid_after(min(now + datetime.timedelta(seconds=ttl), self._cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())  # type: ignore[arg-type]
        )
        chain = cert_pem(cert) + b"".join(c.encode() for c in self._chain_tail)
        return chain, key_pem(key)


def _split_pem(data: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    parts = []
    for piece in data.split(marker):
        if b"-----BEGIN CERTIFICATE-----" in piece:
            parts.append(piece[piece.index(b"-----BEGIN") :] + marker)
    return parts
