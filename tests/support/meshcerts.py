"""Certificates for tests, from the controller's own CA code: workload certificates written as files (for
proxies configured statically, or clients of a mutual TLS gateway) and gateway credential Secrets."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.ca.authority import CaMaterial, CertificateAuthority, key_pem, make_csr, new_key, spiffe_id

MESH_ALPN = ["istio-peer-exchange", "istio"]


def mesh_identities(tmp: Path) -> Callable[..., dict[str, Any]]:
    """``files(sa, peer=None, alpn=MESH_ALPN)``: the CommonTlsContext (Envoy JSON) of a workload running as
    service account ``sa`` in ``default``, verifying ``peer``'s SPIFFE ID when given."""
    ca = CertificateAuthority(CaMaterial.self_signed())
    root = tmp / "root.pem"
    root.write_bytes(ca.root_pem)

    def files(sa: str, peer: str | None = None, alpn: list[str] | None = None) -> dict[str, Any]:
        issue(ca, spiffe_id("cluster.local", "default", sa), tmp, sa)
        validation: dict[str, Any] = {"trusted_ca": {"filename": str(root)}}
        if peer is not None:
            validation["match_typed_subject_alt_names"] = [
                {"san_type": "URI", "matcher": {"exact": spiffe_id("cluster.local", "default", peer)}}
            ]
        return {
            "tls_certificates": [
                {
                    "certificate_chain": {"filename": str(tmp / f"{sa}.pem")},
                    "private_key": {"filename": str(tmp / f"{sa}.key")},
                }
            ],
            "validation_context": validation,
            "alpn_protocols": MESH_ALPN if alpn is None else alpn,
        }

    return files


def issue(ca: CertificateAuthority, identity: str, where: Path, name: str) -> tuple[Path, Path]:
    """A workload certificate for ``identity`` (a SPIFFE ID) signed by ``ca``: the chain and key files
    ``where/<name>.pem`` and ``where/<name>.key``."""
    key = new_key()
    chain, key_file = where / f"{name}.pem", where / f"{name}.key"
    chain.write_text("".join(ca.sign(make_csr(key, identity), identity)))
    key_file.write_bytes(key_pem(key))
    return chain, key_file


def credential_secret(name: str, host: str, *, ca: bytes = b"", namespace: str = "default") -> dict[str, Any]:
    """A kubernetes.io/tls Secret as a Gateway's ``credentialName`` names it: a fresh serving certificate
    for ``host`` (from a throwaway CA), and ``ca.crt`` -- what clients of a mutual TLS server must be
    signed by -- when given."""
    chain, key = CertificateAuthority(CaMaterial.self_signed()).serving_certificate([host])
    data = {"tls.crt": chain, "tls.key": key, **({"ca.crt": ca} if ca else {})}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }
