"""Outlier detection (passive health checking), Envoy's consecutive-error detectors.

Every response (or connection failure) of a host is reported here. A host is ejected -- taken out of load
balancing -- as soon as it reaches a threshold of consecutive 5xx, consecutive gateway errors (502, 503,
504) or, when locally originated errors are counted apart, consecutive connect failures and resets. At
most ``max_ejection_percent`` of the hosts are ejected at once (one always may be).

Time runs in intervals: a timer ticks every ``interval`` and brings back the hosts whose ejection is over.
An ejection lasts ``base_ejection_time`` times the host's ejection count (capped by ``max_ejection_time``),
so a host that keeps failing stays out longer each time; each interval a healthy host spends in service
takes one off its count. Below the cluster's panic threshold of healthy hosts, the cluster balances over
all hosts again (Istio's ``minHealthPercent``; Istio sets 0, so by default that never happens).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mizzen import logs

if TYPE_CHECKING:
    from fastpath.clusters import Cluster, Host
    from fastpath.config.clusters import OutlierDetection

log = logs.get("proxy")

GATEWAY_ERRORS = (502, 503, 504)


class OutlierDetector:
    """The detector of one cluster. ``clock`` is injectable so that tests drive time themselves."""

    def __init__(
        self, cluster: Cluster, config: OutlierDetection, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.clock = clock
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        # Hosts just back in service: their first interval does not yet count towards forgiveness.
        self.unejected_at: dict[Host, float] = {}
        self.ejections_total = 0

    # -- reports ------------------------------------------------------------------------------------

    def report(self, host: Host, status: int, local_origin: bool = False) -> None:
        """One outcome: an HTTP status from the host, or (``local_origin``) a connect failure or reset,
        reported as 503 (or 504 for a timeout) so that it counts as Envoy counts it when not split."""
        od = self.config
        if local_origin and od.split_local_origin:
            host.consecutive_local += 1
            if host.consecutive_local >= od.consecutive_local_origin_failure and _enforce(
                od.enforcing_consecutive_local_origin_failure
            ):
                self.eject(host, "consecutive local-origin failures")
            return
        if status >= 500:
            host.consecutive_5xx += 1
            gateway = status in GATEWAY_ERRORS
            host.consecutive_gateway = host.consecutive_gateway + 1 if gateway else 0
            if host.consecutive_5xx >= od.consecutive_5xx and _enforce(od.enforcing_consecutive_5xx):
                self.eject(host, "consecutive 5xx")
            elif (
                gateway
                and host.consecutive_gateway >= od.consecutive_gateway_failure
                and _enforce(od.enforcing_consecutive_gateway_failure)
            ):
                self.eject(host, "consecutive gateway failures")
            return
        host.consecutive_5xx = 0
        host.consecutive_gateway = 0
        if od.split_local_origin:
            host.consecutive_local = 0  # an answer means the connection worked

    def connected(self, host: Host) -> None:
        """A connection to the host succeeded: consecutive local-origin failures start over."""
        host.consecutive_local = 0

    # -- ejection -----------------------------------------------------------------------------------

    def eject(self, host: Host, why: str) -> bool:
        od = self.config
        now = self.clock()
        if host.ejected_until:
            return False
        hosts = self.cluster.hosts
        ejected = sum(1 for h in hosts.values() if h.ejected_until)
        # Envoy always allows one ejection, then stops at max_ejection_percent of the hosts.
        if ejected and (ejected + 1) * 100 > len(hosts) * od.max_ejection_percent:
            self.cluster.bump("outlier_detection.ejections_overflow")
            return False
        host.ejections += 1
        duration = min(
            od.base_ejection_time * host.ejections, max(od.max_ejection_time, od.base_ejection_time)
        )
        host.ejected_until = now + duration
        host.consecutive_5xx = host.consecutive_gateway = host.consecutive_local = 0
        self.unejected_at.pop(host, None)
        self.ejections_total += 1
        self.cluster.bump("outlier_detection.ejections_enforced_total")
        self.cluster.bump("outlier_detection.ejections_active")
        log.info("host ejected", cluster=self.cluster.name, host=host.label, reason=why, seconds=duration)
        self.cluster.refresh()
        self.start()
        return True

    def tick(self) -> None:
        """One interval: credit healthy hosts, bring back those whose ejection time is over."""
        now = self.clock()
        back = False
        for host in list(self.cluster.hosts.values()):
            if host.ejected_until:
                if now >= host.ejected_until:
                    host.ejected_until = 0.0
                    self.unejected_at[host] = now
                    self.cluster.bump("outlier_detection.ejections_active", -1)
                    log.info("host back in service", cluster=self.cluster.name, host=host.label)
                    back = True
            elif host.ejections:
                # A full interval in service since it came back: one ejection forgiven.
                if host in self.unejected_at:
                    del self.unejected_at[host]
                else:
                    host.ejections -= 1
        if back:
            self.cluster.refresh()

    # -- the interval timer -------------------------------------------------------------------------

    def start(self) -> None:
        """Run the interval timer (while some host is ejected or still carries an ejection count)."""
        if self.timer is not None or self.closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # compiled outside the proxy (tests drive tick() themselves)
        self.timer = loop.call_later(self.config.interval, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.closed:
            return
        self.tick()
        if any(h.ejected_until or h.ejections for h in self.cluster.hosts.values()):
            self.start()

    def close(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _enforce(percent: int) -> bool:
    return percent >= 100 or (percent > 0 and random.randrange(100) < percent)
