"""The CA: signing, plug-in material, local tokens, and IstioCertificateService over real gRPC."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controller.ca.authority import (
    CaMaterial,
    CertificateAuthority,
    CsrError,
    make_csr,
    new_key,
    spiffe_id,
)
from controller.ca.proto import ca_pb2
from controller.ca.service import CertificateService
from controller.ca.tokens import AuthError, LocalTokens, write_token
from fastpath import tls
from fastpath.certs import CertConfig, CertificateClient

ME = spiffe_id("cluster.local", "shop", "web")


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority(CaMaterial.self_signed())


def _load(chain: list[str]) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(c.encode()) for c in chain]


def test_a_csr_for_the_callers_identity_is_signed(ca: CertificateAuthority) -> None:
    key = new_key()
    chain = _load(ca.sign(make_csr(key, ME), ME, ttl=3600))
    leaf, root = chain[0], chain[-1]
    assert len(chain) == 2 and root.subject == root.issuer
    leaf.verify_directly_issued_by(root)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.UniformResourceIdentifier) == [ME]
    assert leaf.subject == x509.Name([])  # Istio's workload certificates carry the SAN only
    life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert 3600 <= life.total_seconds() <= 3600 + 61  # back-dated a minute for clock skew
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_lifetime_defaults_and_is_capped(ca: CertificateAuthority) -> None:
    short = CertificateAuthority(ca.material, default_ttl=120, max_ttl=600)
    leaf = _load(short.sign(make_csr(new_key(), ME), ME))[0]
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds() <= 181
    leaf = _load(short.sign(make_csr(new_key(), ME), ME, ttl=10**6))[0]
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds() <= 661


def test_a_csr_for_another_identity_is_refused(ca: CertificateAuthority) -> None:
    other = spiffe_id("cluster.local", "kube-system", "admin")
    with pytest.raises(CsrError, match=re.escape("asks for spiffe://cluster.local/ns/kube-system/sa/admin")):
        ca.sign(make_csr(new_key(), other), ME)


@pytest.mark.parametrize(
    "csr", ["", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"]
)
def test_a_malformed_csr_is_refused(ca: CertificateAuthority, csr: str) -> None:
    with pytest.raises(CsrError, match="malformed CSR"):
        ca.sign(csr, ME)


def test_plug_in_intermediate_chains_to_its_root(tmp_path: Path) -> None:
    root = CaMaterial.self_signed()
    inter = CaMaterial.intermediate(root, "plug-in intermediate")
    inter.save_dir(tmp_path)
    loaded = CaMaterial.load_dir(tmp_path)
    assert loaded == inter
    chain = _load(CertificateAuthority(loaded).sign(make_csr(new_key(), ME), ME))
    assert len(chain) == 3
    chain[0].verify_directly_issued_by(chain[1])
    chain[1].verify_directly_issued_by(chain[2])
    assert chain[2].subject == x509.load_pem_x509_certificate(root.cert).subject


def test_plug_in_material_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    a, b = CaMaterial.self_signed(), CaMaterial.self_signed()
    files = a.files()
    files["ca-key.pem"] = b.key
    with pytest.raises(ValueError, match=re.escape("ca-key.pem does not belong to ca-cert.pem")):
        CaMaterial.from_files(files, "cacerts")
    files = CaMaterial.intermediate(a, "i").files()
    files["root-cert.pem"] = b.root
    with pytest.raises(ValueError, match=re.escape("does not end at a certificate root-cert.pem signed")):
        CaMaterial.from_files(files, "cacerts")


async def test_local_tokens(tmp_path: Path) -> None:
    signer = LocalTokens.load_or_create(tmp_path)
    caller = await signer.authenticate(signer.issue("shop", "web", pod="web-1"))
    assert (caller.namespace, caller.service_account, caller.pod) == ("shop", "web", "web-1")
    with pytest.raises(AuthError, match="expired"):
        await signer.authenticate(signer.issue("shop", "web", ttl=10, now=time.time() - 3600))
    with pytest.raises(AuthError, match="audience"):
        await signer.authenticate(signer.issue("shop", "web", audience="kubernetes"))
    foreign = LocalTokens.load_or_create(tmp_path / "other")
    with pytest.raises(AuthError, match="signature does not verify"):
        await signer.authenticate(foreign.issue("shop", "web"))
    with pytest.raises(AuthError, match="invalid token"):
        await signer.authenticate("not-a-jwt")
    # The same directory gives the same signer back (the node and the controller share it).
    assert await LocalTokens.load_or_create(tmp_path).authenticate(signer.issue("a", "b"))


class _Server:
    def __init__(self, service: CertificateService) -> None:
        self.service = service
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((service.handler(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def call(self, csr: str, token: str | None, ttl: int = 0) -> ca_pb2.IstioCertificateResponse:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            call = channel.unary_unary(
                "/istio.v1.auth.IstioCertificateService/CreateCertificate",
                request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
                response_deserializer=ca_pb2.IstioCertificateResponse.FromString,
            )
            metadata = (("authorization", f"Bearer {token}"),) if token else ()
            return await call(
                ca_pb2.IstioCertificateRequest(csr=csr, validity_duration=ttl), metadata=metadata
            )


async def test_certificate_service_over_grpc(tmp_path: Path, ca: CertificateAuthority) -> None:
    tokens = LocalTokens.load_or_create(tmp_path)
    srv = _Server(CertificateService(ca, tokens))
    await srv.server.start()
    try:
        good = tokens.issue("shop", "web")
        reply = await srv.call(make_csr(new_key(), ME).decode(), good, ttl=600)
        assert _load(list(reply.cert_chain))[0].extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier) == [ME]
        cases = [
            (make_csr(new_key(), ME).decode(), None, grpc.StatusCode.UNAUTHENTICATED, "no bearer token"),
            (
                make_csr(new_key(), ME).decode(),
                tokens.issue("shop", "web", ttl=1, now=time.time() - 60),
                grpc.StatusCode.UNAUTHENTICATED,
                "expired",
            ),
            (
                make_csr(new_key(), spiffe_id("cluster.local", "shop", "admin")).decode(),
                good,
                grpc.StatusCode.INVALID_ARGUMENT,
                "may only ask for that",
            ),
            ("garbage", good, grpc.StatusCode.INVALID_ARGUMENT, "malformed CSR"),
            (
                make_csr(new_key(), ME).decode(),
                LocalTokens.load_or_create(tmp_path / "foreign").issue("shop", "web"),
                grpc.StatusCode.UNAUTHENTICATED,
                "signature",
            ),
        ]
        for csr, token, code, words in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await srv.call(csr, token)
            assert err.value.code() == code and words in (err.value.details() or ""), err.value.details()
        assert srv.service.issued == 1
        assert srv.service.metrics.refused.labels("auth")._value.get() == 2
    finally:
        await srv.server.stop(None)


async def test_sidecar_certificate_client_fetches_and_installs(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    tokens = LocalTokens.load_or_create(tmp_path)
    srv = _Server(CertificateService(ca, tokens))
    await srv.server.start()
    token = tmp_path / "token"
    write_token(token, tokens.issue("shop", "web"))
    store = tls.SecretStore()
    client = CertificateClient(
        CertConfig(ca_address=f"127.0.0.1:{srv.port}", token_path=token, identity=ME, ttl=600), store=store
    )
    try:
        client.start()
        for _ in range(200):
            if tls.DEFAULT_CERT in store.certs:
                break
            await asyncio.sleep(0.05)
        secret = store.certs[tls.DEFAULT_CERT]
        assert store.roots[tls.ROOT_CA] == ca.root_pem.strip() + b"\n"
        leaf = x509.load_pem_x509_certificate(secret.chain)
        # The key was made in the client (only the CSR went out) and belongs to the certificate.
        key = serialization.load_pem_private_key(secret.key, None)
        assert leaf.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
        assert 500 < secret.not_after - time.time() <= 600
    finally:
        await client.stop()
        await srv.server.stop(None)
