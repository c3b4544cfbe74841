"""The webhooks' serving certificate and the CA that signs it (what the API server checks via caBundle).

Pure functions on PEM bytes: make a CA, make a serving certificate for the Service's DNS names, tell when
one is due for renewal. The CA lives ten times longer than the serving certificate, so a renewal does not
change the caBundle; when the CA itself is renewed, the old one stays in the bundle until it expires.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVING_LIFETIME = dt.timedelta(days=30)
CA_LIFETIME = dt.timedelta(days=3650)
# Renew once two thirds of the lifetime have passed (cert-manager's default point).
RENEW_AT = 2 / 3


@dataclass(frozen=True, slots=True)
class KeyPair:
    cert: bytes  # PEM
    key: bytes  # PEM, PKCS#8


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(
    common_name: str = "mizzen-webhook-ca",
    *,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = CA_LIFETIME,
) -> KeyPair:
    now = now or _now()
    key = _key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mizzen"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def make_serving(
    ca: KeyPair,
    dns_names: list[str],
    *,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = SERVING_LIFETIME,
) -> KeyPair:
    """A server certificate for ``dns_names`` (the Service's names), signed by ``ca``."""
    if not dns_names:
        raise ValueError("a serving certificate needs at least one DNS name")
    now = now or _now()
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + lifetime, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def validity(cert_pem: bytes) -> tuple[dt.datetime, dt.datetime]:
    """(not before, not after) of the first certificate in ``cert_pem``."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def renewal_due(cert_pem: bytes) -> dt.datetime:
    start, end = validity(cert_pem)
    return start + (end - start) * RENEW_AT


def needs_renewal(cert_pem: bytes, *, now: dt.datetime | None = None) -> bool:
    try:
        return (now or _now()) >= renewal_due(cert_pem)
    except ValueError:
        return True  # unreadable: make a new one


def dns_names(service: str, namespace: str, domain: str = "cluster.local") -> list[str]:
    """The names the API server may use to reach a Service (it dials ``<svc>.<ns>.svc``)."""
    return [
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{domain}",
        f"{service}.{namespace}",
        service,
    ]


def signed_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    """Whether ``cert_pem`` was issued by the CA certificate ``ca_pem`` (its signature checks out)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def bundle(*cas: bytes, now: dt.datetime | None = None) -> bytes:
    """The caBundle: the given CA certificates that have not expired, concatenated."""
    now = now or _now()
    kept = []
    for pem in cas:
        for one in x509.load_pem_x509_certificates(pem):
            if one.not_valid_after_utc > now:
                kept.append(one.public_bytes(serialization.Encoding.PEM))
    return b"".join(dict.fromkeys(kept))


def first(pem: bytes) -> bytes:
    """The first certificate of a PEM bundle (empty when there is none or it does not parse)."""
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return b""
    return certificates[0].public_bytes(serialization.Encoding.PEM)
