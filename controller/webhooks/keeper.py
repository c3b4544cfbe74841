"""Keeping the webhooks' serving certificate: shared by every replica through a Secret, renewed before
it expires, its CA published in the webhook configurations' ``caBundle``.

Only the leader writes (the Secret and the caBundle patches); every replica reads the Secret and serves
what it holds. With ``cert-manager`` the certificate comes from mounted files instead (cert-manager
renews them and its cainjector fills the caBundle), and this only reloads them when they change.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.informer.kubeclient import KubeClient
from controller.informer.listwatch import ApiError, TransportError
from controller.webhooks import certs
from mizzen import logs

log = logs.get("webhook-certs")

MUTATING = "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
VALIDATING = "admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


@dataclass(frozen=True, slots=True)
class Serving:
    """What the webhook server presents: the certificate chain and key (PEM), and the CA bundle."""

    cert: bytes
    key: bytes
    ca_bundle: bytes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(data: Any) -> bytes:
    try:
        return base64.b64decode(data or "")
    except (ValueError, TypeError):
        return b""


class SecretKeeper:
    """The self-managed mode: CA and serving certificate in the Secret ``namespace/secret``."""

    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str,
        secret: str,
        service: str,
        webhook_configurations: tuple[str, str],
        on_change: Callable[[Serving], None],
        cluster_domain: str = "cluster.local",
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.secret = secret
        self.names = certs.dns_names(service, namespace, cluster_domain)
        self.mutating, self.validating = webhook_configurations
        self.on_change = on_change
        self.now = now
        self.current: Serving | None = None
        self.leader = False

    @property
    def _secret_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/secrets/{self.secret}"

    async def sync(self) -> Serving | None:
        """One round: read the Secret, (as leader) create or renew it and publish the caBundle, serve it."""
        secret = await self._get(self._secret_path)
        if self.leader:
            secret = await self._renew(secret)
        serving = _serving(secret)
        if serving is None:
            return None
        if serving != self.current:
            self.current = serving
            self.on_change(serving)
            log.info("serving certificate loaded", not_after=str(certs.validity(serving.cert)[1]))
        if self.leader:
            for collection, name in ((MUTATING, self.mutating), (VALIDATING, self.validating)):
                await self._publish(collection, name, serving.ca_bundle)
        return serving

    async def run(self, interval: float = 30.0) -> None:
        while True:
            try:
                await self.sync()
            except (ApiError, TransportError) as exc:
                log.warning("webhook certificate sync failed; retrying", error=str(exc))
            await asyncio.sleep(interval if self.current is not None else min(interval, 2.0))

    async def _get(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.client.request("GET", path)  # type: ignore[no-any-return]
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    async def _renew(self, secret: dict[str, Any] | None) -> dict[str, Any] | None:
        now = self.now()
        data = (secret or {}).get("data") or {}
        ca = certs.KeyPair(_unb64(data.get("ca.crt")), _unb64(data.get("ca.key")))
        bundle = ca.cert
        # ca.crt may hold the previous CA too; the first certificate is the current one.
        current_ca = certs.KeyPair(certs.first(ca.cert), ca.key)
        reason = None
        if not ca.cert or not ca.key:
            reason = "no certificate yet"
        elif certs.needs_renewal(current_ca.cert, now=now):
            reason = "the CA is due for renewal"
        if reason is not None:
            new_ca = certs.make_ca(now=now)
            bundle = certs.bundle(new_ca.cert, ca.cert, now=now) if ca.cert else new_ca.cert
            current_ca = new_ca
        serving = certs.KeyPair(_unb64(data.get("tls.crt")), _unb64(data.get("tls.key")))
        if reason is None:
            if not serving.cert or not certs.signed_by(serving.cert, current_ca.cert):
                reason = "the serving certificate is missing or not from the CA"
            elif certs.needs_renewal(serving.cert, now=now):
                reason = "the serving certificate is due for renewal"
        if reason is None:
            return secret
        serving = certs.make_serving(current_ca, self.names, now=now)
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.secret,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/part-of": "mizzen", "app.kubernetes.io/component": "webhook"},
            },
            "type": "Opaque",
            "data": {
                "ca.crt": _b64(bundle),
                "ca.key": _b64(current_ca.key),
                "tls.crt": _b64(serving.cert),
                "tls.key": _b64(serving.key),
            },
        }
        try:
            if secret is None:
                created = await self.client.request(
                    "POST", f"/api/v1/namespaces/{self.namespace}/secrets", body=body
                )
            else:
                body["metadata"]["resourceVersion"] = secret["metadata"]["resourceVersion"]
                created = await self.client.request("PUT", self._secret_path, body=body)
        except ApiError as exc:
            if exc.code in (409,):  # someone else wrote it first: use theirs
                return await self._get(self._secret_path)
            raise
        log.info("webhook certificate issued", reason=reason, names=self.names)
        return created  # type: ignore[no-any-return]

    async def _publish(self, collection: str, name: str, bundle: bytes) -> None:
        path = f"/apis/{collection}/{name}"
        config = await self._get(path)
        if config is None:
            return  # not installed (yet); the next round looks again
        wanted = _b64(bundle)
        ops: list[dict[str, Any]] = []
        for i, hook in enumerate(config.get("webhooks") or ()):
            if (hook.get("clientConfig") or {}).get("caBundle") != wanted:
                # "test" pins the entry we mean, should the list change under us.
                ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook.get("name")})
                ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": wanted})
        if not ops:
            return
        await self.client.request("PATCH", path, body=ops, content_type="application/json-patch+json")
        log.info("caBundle published", configuration=name, webhooks=len(ops) // 2)


def _serving(secret: dict[str, Any] | None) -> Serving | None:
    data = (secret or {}).get("data") or {}
    cert, key, ca = _unb64(data.get("tls.crt")), _unb64(data.get("tls.key")), _unb64(data.get("ca.crt"))
    if not (cert and key and ca):
        return None
    return Serving(cert, key, ca)


class FileKeeper:
    """The cert-manager mode: ``tls.crt``/``tls.key`` (and ``ca.crt``) mounted from its Secret."""

    def __init__(self, directory: Path, on_change: Callable[[Serving], None]) -> None:
        self.directory = directory
        self.on_change = on_change
        self.current: Serving | None = None

    async def sync(self) -> Serving | None:
        try:
            cert = (self.directory / "tls.crt").read_bytes()
            key = (self.directory / "tls.key").read_bytes()
        except OSError as exc:
            log.warning("webhook certificate files not readable yet", error=str(exc))
            return None
        ca_path = self.directory / "ca.crt"
        ca = ca_path.read_bytes() if ca_path.exists() else b""
        serving = Serving(cert, key, ca)
        if serving != self.current:
            self.current = serving
            self.on_change(serving)
            log.info("serving certificate loaded from files", directory=str(self.directory))
        return serving

    async def run(self, interval: float = 10.0) -> None:
        while True:
            await self.sync()
            await asyncio.sleep(interval)
