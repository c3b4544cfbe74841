"""Lease-based leader election (client-go's ``leaderelection`` over ``coordination.k8s.io/v1`` Leases).

Every replica serves; one leads the few writes (the webhooks' certificate and caBundle). Expiry is judged
by when *this* replica last saw the record change, never by comparing clocks across machines.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from controller.informer.kubeclient import KubeClient
from controller.informer.listwatch import ApiError, TransportError
from mizzen import logs

log = logs.get("leader")


def _micro_time(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """``is_leader`` tells whether this replica holds the Lease ``namespace/name`` right now."""

    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.monotonic = monotonic
        self.on_change = on_change
        self.is_leader = False
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0

    @property
    def _path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"

    def _set(self, leading: bool) -> None:
        if leading != self.is_leader:
            self.is_leader = leading
            log.info(
                "leadership " + ("acquired" if leading else "lost"), lease=self.name, identity=self.identity
            )
            if self.on_change is not None:
                self.on_change(leading)

    def _spec(self, transitions: int, acquired: str | None = None) -> dict[str, Any]:
        now = _micro_time(dt.datetime.now(dt.UTC))
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards."""
        now = self.monotonic()
        try:
            lease = await self.client.request("GET", self._path)
        except ApiError as exc:
            if exc.code != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(0),
            }
            try:
                await self.client.request(
                    "POST", f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases", body=body
                )
            except ApiError as exc2:
                if exc2.code == 409:
                    return False
                raise
            self._observed_at = self._renewed_at = now
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and self._observed_at + duration > now:
            self._set(False)  # someone else leads: step down at once
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        acquired = spec.get("acquireTime") if holder == self.identity else None
        lease["spec"] = {**spec, **self._spec(transitions, acquired)}
        try:
            await self.client.request("PUT", self._path, body=lease)
        except ApiError as exc:
            if exc.code == 409:
                return False
            raise
        self._renewed_at = now
        return True

    async def run(self) -> None:
        while True:
            try:
                held = await self.try_acquire_or_renew()
            except (ApiError, TransportError) as exc:
                log.warning("lease request failed", lease=self.name, error=str(exc))
                held = False
            if held:
                self._set(True)
            elif self.is_leader and self.monotonic() - self._renewed_at > self.renew_deadline:
                # A leader that cannot reach the API keeps leading only until its renew deadline.
                self._set(False)
            await asyncio.sleep(self.retry_period)

    async def release(self) -> None:
        """Give the Lease up (on shutdown), so another replica need not wait for it to expire."""
        if not self.is_leader:
            return
        self._set(False)
        try:
            lease = await self.client.request("GET", self._path)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"] = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
                await self.client.request("PUT", self._path, body=lease)
        except (ApiError, TransportError) as exc:
            log.warning("lease release failed", lease=self.name, error=str(exc))
