"""``istio.v1.auth.IstioCertificateService/CreateCertificate`` over gRPC, on the controller's xDS ports.

The caller proves who it is with its service-account token in the ``authorization: Bearer`` metadata
(Istio's agent sends it so); the CSR may ask only for the caller's own SPIFFE ID. Every refusal is logged
with its reason, counted, and returned to the caller as a gRPC status whose message says what is wrong.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from controller.ca.authority import CertificateAuthority, CsrError, spiffe_id
from controller.ca.proto import ca_pb2
from controller.ca.tokens import Authenticator, AuthError
from mizzen import logs

log = logs.get("ca")

SERVICE = "istio.v1.auth.IstioCertificateService"
METHOD = f"/{SERVICE}/CreateCertificate"


class CaMetrics:
    """Istio's CA metric names where they exist (citadel_server_*)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kw: dict[str, Any] = {"registry": registry} if registry is not None else {}
        self.requests = Counter("citadel_server_csr_count", "CSRs received", **kw)
        self.issued = Counter("citadel_server_success_cert_issuance_count", "certificates issued", **kw)
        self.refused = Counter("mizzen_ca_refused_total", "CSRs refused, by reason", ["reason"], **kw)
        self.sign_seconds = Histogram("mizzen_ca_sign_seconds", "time to sign one certificate", **kw)


class CertificateService:
    """The gRPC side of the CA: authenticate, check, sign."""

    def __init__(
        self,
        authority: CertificateAuthority,
        authenticator: Authenticator,
        metrics: CaMetrics | None = None,
    ) -> None:
        self.authority = authority
        self.authenticator = authenticator
        self.metrics = metrics or CaMetrics(CollectorRegistry())
        self.issued = 0

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "CreateCertificate": grpc.unary_unary_rpc_method_handler(
                    self.CreateCertificate,
                    request_deserializer=ca_pb2.IstioCertificateRequest.FromString,
                    response_serializer=ca_pb2.IstioCertificateResponse.SerializeToString,
                )
            },
        )

    async def CreateCertificate(self, request: Any, context: Any) -> Any:
        self.metrics.requests.inc()
        peer = context.peer()
        token = _bearer(context.invocation_metadata() or ())
        if token is None:
            await self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, "no_token", "no bearer token", peer)
        try:
            caller = await self.authenticator.authenticate(token or "")
        except AuthError as exc:
            await self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, "auth", str(exc), peer)
            raise AssertionError("unreachable") from None
        identity = spiffe_id(self.authority.trust_domain, caller.namespace, caller.service_account)
        if request.HasField("metadata") and request.metadata.fields:
            await self._refuse(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                "impersonation",
                f"request metadata ({', '.join(sorted(request.metadata.fields))}) is not accepted: "
                "a caller may only ask for its own identity",
                peer,
                identity,
            )
        started = time.perf_counter()
        try:
            # Signing is CPU work: off the loop, so that xDS streams keep flowing.
            chain = await asyncio.get_running_loop().run_in_executor(
                None, self.authority.sign, request.csr, identity, float(request.validity_duration) or None
            )
        except CsrError as exc:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "csr", str(exc), peer, identity)
        self.metrics.sign_seconds.observe(time.perf_counter() - started)
        self.metrics.issued.inc()
        self.issued += 1
        log.info(
            "certificate issued",
            identity=identity,
            pod=caller.pod or None,
            ttl_s=request.validity_duration or None,
            peer=peer,
        )
        return ca_pb2.IstioCertificateResponse(cert_chain=chain)

    async def _refuse(
        self, context: Any, code: grpc.StatusCode, reason: str, message: str, peer: str, identity: str = ""
    ) -> None:
        self.metrics.refused.labels(reason).inc()
        log.warning("certificate refused", reason=message, identity=identity or None, peer=peer)
        await context.abort(code, message)


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata:
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None
