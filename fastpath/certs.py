"""The sidecar's workload certificate: its key made here, a CSR to the mesh's CA, rotation at half life.

The key never leaves the process. The CA (``istio.v1.auth.IstioCertificateService``, on the controller's
xDS ports) is asked with the pod's service-account token; the answer's last certificate is the mesh's
root, which becomes the ``ROOTCA`` trust bundle (so the controller needs no SDS over ADS, and a root
change reaches proxies with their next certificate). A renewal starts at half of the certificate's life
(Istio's SECRET_GRACE_PERIOD_RATIO); while the CA cannot be reached the proxy keeps serving with the
certificate it has and retries with jittered backoff until that one expires.

Like the xDS client, this runs on its own thread and event loop (grpcio's poller never shares the proxy's
loop); new secrets are handed to the proxy's loop, where new connections pick them up.
"""

from __future__ import annotations

import asyncio
import datetime
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastpath import tls
from fastpath.loopthread import LoopThread
from mizzen import logs

log = logs.get("certs")

GRACE_RATIO = 0.5
SERVER_NAME = "istiod.istio-system.svc"  # what the CA's serving certificate is checked against


@dataclass(frozen=True)
class CertConfig:
    ca_address: str  # host:port
    token_path: Path
    identity: str  # spiffe://<trust domain>/ns/<ns>/sa/<sa>
    ca_root: Path | None = None  # verify the CA over TLS with this root; None: plaintext (15010)
    ttl: float = 0.0  # asked lifetime, seconds; 0: the CA's default
    grace_ratio: float = GRACE_RATIO
    retry_base: float = 0.5
    retry_max: float = 30.0
    cluster_id: str = "Kubernetes"


class ReadyGate(asyncio.Event):
    """The proxy's readiness when it serves mutual TLS: its config is applied *and* it has a certificate
    (Envoy's listeners warm until their SDS secrets arrive)."""

    def __init__(self) -> None:
        super().__init__()
        self.config_ready = False
        self.cert_ready = False

    def set(self) -> None:
        self.config_ready = True
        if self.cert_ready:
            super().set()

    def certificate_ready(self) -> None:
        self.cert_ready = True
        if self.config_ready:
            super().set()


class CertificateClient:
    def __init__(self, config: CertConfig, *, store: tls.SecretStore | None = None) -> None:
        self.config = config
        self.store = store or tls.SECRETS
        self.main_loop: asyncio.AbstractEventLoop | None = None
        self.gate: ReadyGate | None = None
        self.issued = 0
        self.failures = 0
        self.last_error = ""
        self.not_after = 0.0
        self._runner = LoopThread("certs", self._run)

    def start(self, gate: ReadyGate | None = None) -> None:
        self.main_loop = asyncio.get_running_loop()
        self.gate = gate
        self._runner.start()

    async def stop(self) -> None:
        await self._runner.stop()

    def status(self) -> dict[str, Any]:
        return {
            "identity": self.config.identity,
            "ca": self.config.ca_address,
            "issued": self.issued,
            "failures": self.failures,
            "last_error": self.last_error,
            "not_after": self.not_after,
        }

    # -- the loop ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self._runner.stopping:
            try:
                secret, root, not_before, not_after = await self.fetch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the CA away or refusing: keep what we have, try again
                self.failures += 1
                self.last_error = str(exc)
                attempt += 1
                delay = random.uniform(
                    self.config.retry_base, min(self.config.retry_max, self.config.retry_base * 2**attempt)
                )
                if self.not_after:
                    # Never sleep past the current certificate's end.
                    delay = max(0.05, min(delay, self.not_after - time.time()))
                log.warning(
                    "certificate request failed",
                    error=self.last_error,
                    retry_s=round(delay, 2),
                    current_valid_s=round(self.not_after - time.time(), 1) if self.not_after else None,
                )
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self.issued += 1
            self.not_after = not_after
            self._install(secret, root)
            # From when it arrived, not from not_before: the CA back-dates that for clock skew.
            received = max(not_before, time.time())
            refresh = received + (not_after - received) * self.config.grace_ratio
            log.info(
                "certificate installed",
                identity=self.config.identity,
                expires_in_s=round(not_after - time.time(), 1),
                renew_in_s=round(max(0.0, refresh - time.time()), 1),
            )
            await asyncio.sleep(max(0.05, refresh - time.time()))

    def _install(self, secret: tls.CertSecret, root: bytes) -> None:
        main = self.main_loop
        assert main is not None

        def apply() -> None:
            if self.store.roots.get(tls.ROOT_CA) != root:
                self.store.set_root(tls.ROOT_CA, root)
            self.store.set_cert(tls.DEFAULT_CERT, secret)
            if self.gate is not None:
                self.gate.certificate_ready()

        main.call_soon_threadsafe(apply)

    async def fetch(self) -> tuple[tls.CertSecret, bytes, float, float]:
        """One CSR round trip: (secret, root, not_before, not_after). Raises on any failure."""
        import grpc
        from cryptography import x509

        from controller.ca.authority import key_pem, make_csr, new_key
        from controller.ca.proto import ca_pb2

        cfg = self.config
        try:
            token = cfg.token_path.read_text().strip()
        except OSError as exc:
            raise RuntimeError(f"cannot read the token {cfg.token_path}: {exc.strerror}") from None
        key = new_key()
        request = ca_pb2.IstioCertificateRequest(
            csr=make_csr(key, cfg.identity).decode(), validity_duration=int(cfg.ttl)
        )
        options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", 4 * 1024 * 1024)]
        if cfg.ca_root is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=cfg.ca_root.read_bytes())
            options.append(("grpc.ssl_target_name_override", SERVER_NAME))
            channel = grpc.aio.secure_channel(cfg.ca_address, creds, options=options)
        else:
            channel = grpc.aio.insecure_channel(cfg.ca_address, options=options)
        async with channel:
            call = channel.unary_unary(
                "/istio.v1.auth.IstioCertificateService/CreateCertificate",
                request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
                response_deserializer=ca_pb2.IstioCertificateResponse.FromString,
            )
            try:
                response = await call(
                    request,
                    metadata=(("authorization", f"Bearer {token}"), ("clusterid", cfg.cluster_id)),
                    timeout=10.0,
                )
            except grpc.aio.AioRpcError as exc:
                raise RuntimeError(f"the CA said {exc.code().name}: {exc.details()}") from None
        chain = list(response.cert_chain)
        if len(chain) < 2:
            raise RuntimeError("the CA returned no chain up to a root")
        leaf = x509.load_pem_x509_certificate(chain[0].encode())
        uris = []
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            pass
        if uris != [cfg.identity]:
            raise RuntimeError(f"the CA issued {uris} instead of {cfg.identity}")
        not_before = leaf.not_valid_before_utc.timestamp()
        not_after = leaf.not_valid_after_utc.timestamp()
        if not_after <= time.time():
            raise RuntimeError(
                "the CA issued an expired certificate (until "
                f"{datetime.datetime.fromtimestamp(not_after, datetime.UTC).isoformat()})"
            )
        secret = tls.CertSecret("".join(chain[:-1]).encode(), key_pem(key), not_after)
        return secret, chain[-1].encode(), not_before, not_after
