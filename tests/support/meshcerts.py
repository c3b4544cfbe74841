"""Workload certificates from the controller's CA, written as files for proxies configured statically."""

from __future__ import annotations

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
        key = new_key()
        identity = spiffe_id("cluster.local", "default", sa)
        chain = "".join(ca.sign(make_csr(key, identity), identity))
        (tmp / f"{sa}.pem").write_text(chain)
        (tmp / f"{sa}.key").write_bytes(key_pem(key))
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
