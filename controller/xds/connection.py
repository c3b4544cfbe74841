"""One proxy's ADS stream: what it subscribed to, what it was sent, what it acknowledged.

Protocol-neutral bookkeeping shared by the Delta and SotW streams: per type a :class:`Watch` (wildcard or
named subscription, the versions the proxy holds, nonces in flight, the last NACK). The stream classes in
``server.py`` turn requests into calls here and responses out of it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from controller.xds.generator import ResourceMap, Translator
from controller.xds.held import REBASE_AFTER, HeldVersions
from controller.xds.node import ProxyNode
from controller.xds.resources import PUSH_ORDER, WILDCARD_TYPES, Resource
from controller.xds.scope import ScopeKey, find_pod

SYNCED, STALE, NOT_SENT, NACKED = "SYNCED", "STALE", "NOT SENT", "NACKED"

_conn_ids = itertools.count(1)


@dataclass(slots=True)
class Pending:
    """A response in flight: how much it carried and when the change behind it was first seen."""

    nonce: str
    resources: int
    changed_at: float | None
    sent_at: float


@dataclass(slots=True)
class Watch:
    type_url: str
    wildcard: bool = False
    names: frozenset[str] = frozenset()  # interned: proxies with equal subscriptions share one set
    held: HeldVersions = field(default_factory=HeldVersions)  # name -> version the proxy was sent (and keeps)
    pending: dict[str, Pending] = field(default_factory=dict)  # nonce -> response awaiting ACK
    last_nonce: str = ""
    acked_nonce: str = ""
    nack: str | None = None
    sotw_version: str = ""

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names

    @property
    def status(self) -> str:
        if not self.last_nonce:
            return NOT_SENT
        if self.nack is not None:
            return NACKED
        return SYNCED if self.acked_nonce == self.last_nonce else STALE


class Connection:
    """A connected proxy, its scope, and the resources it should have now."""

    def __init__(self, node: ProxyNode, translator: Translator, protocol: str, peer: str = "") -> None:
        self.id = f"{node.id}-{next(_conn_ids)}"
        self.node = node
        self.protocol = protocol  # "delta" or "sotw"
        self.peer = peer
        self.connected_at = time.time()
        self.watches: dict[str, Watch] = {}
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.translator = translator
        self.scope_key: ScopeKey = translator.scope_key(node)
        self.inbound: ResourceMap = self._inbound()

    # -- the desired state --
    def _inbound(self) -> ResourceMap:
        """The proxy's own resources beyond its scope: a sidecar's inbound side, a gateway's Gateways."""
        if self.node.proxyless:
            return {t: {} for t in PUSH_ORDER}
        return self.translator.local_resources(self.node)

    def current(self, type_url: str, name: str) -> Resource | None:
        found = self.inbound[type_url].get(name)
        if found is None:
            found = self.translator.view(self.scope_key).resources[type_url].get(name)
        return found

    def all_names(self, type_url: str) -> Iterable[str]:
        view = self.translator.view(self.scope_key).resources[type_url]
        inbound = self.inbound[type_url]
        return itertools.chain(view, (n for n in inbound if n not in view))

    def watch(self, type_url: str) -> Watch:
        w = self.watches.get(type_url)
        if w is None:
            w = self.watches[type_url] = Watch(type_url)
        return w

    # -- diffs --
    def delta_for(self, w: Watch, names: Iterable[str] | None) -> tuple[list[Resource], list[str]]:
        """What changed for ``w`` among ``names`` (all subscribed when None): resources whose version differs
        from what the proxy holds, and names it holds that no longer exist."""
        if names is None:
            candidates: Iterable[str] = (
                itertools.chain(self.all_names(w.type_url), w.held)
                if w.wildcard
                else itertools.chain(w.names, w.held)
            )
        else:
            candidates = names
        send: list[Resource] = []
        removed: list[str] = []
        seen: set[str] = set()
        for name in candidates:
            if name in seen:
                continue
            seen.add(name)
            held = w.held.get(name)
            resource = self.current(w.type_url, name) if w.wants(name) else None
            if resource is None:
                if held is not None:
                    removed.append(name)
            elif resource.version != held:
                send.append(resource)
        return send, removed

    def sotw_state(self, w: Watch) -> list[Resource]:
        """SotW: every subscribed resource that exists (all of the type for a wildcard watch)."""
        if w.wildcard:
            names: Iterable[str] = self.all_names(w.type_url)
        else:
            names = sorted(w.names)
        out = []
        for name in names:
            resource = self.current(w.type_url, name)
            if resource is not None:
                out.append(resource)
        return out

    def record_sent(
        self, w: Watch, nonce: str, sent: Iterable[Resource], removed: Iterable[str], changed_at: float | None
    ) -> None:
        count = 0
        for r in sent:
            w.held[r.name] = r.version
            count += 1
        for name in removed:
            w.held.pop(name, None)
            count += 1
        if len(w.held.over) > REBASE_AFTER:
            w.held.rebase(self.translator.view(self.scope_key).version_map(w.type_url))
        w.pending[nonce] = Pending(nonce, count, changed_at, time.monotonic())
        w.last_nonce = nonce
        # Keep the bookkeeping bounded when a proxy never answers.
        while len(w.pending) > 16:
            w.pending.pop(next(iter(w.pending)))

    def on_ack(self, w: Watch, nonce: str) -> Pending | None:
        pending = w.pending.pop(nonce, None)
        if pending is None:
            return None
        w.acked_nonce = nonce
        if nonce == w.last_nonce:
            w.nack = None
        # Older responses were superseded by this one.
        for older in [n for n in w.pending if int(n) < int(nonce)]:
            del w.pending[older]
        return pending

    def on_nack(self, w: Watch, nonce: str, message: str) -> Pending | None:
        w.nack = message or "rejected without a message"
        return w.pending.pop(nonce, None)

    # -- pushes --
    def refresh_scope(self) -> bool:
        """Re-resolve the proxy's scope and inbound config; True when its scope changed."""
        key = self.translator.scope_key(self.node)
        changed = key != self.scope_key
        self.scope_key = key
        return changed

    def changed_names(self, summary: Any) -> Iterator[tuple[str, set[str] | None]]:
        """For one ChangeSummary: per watched type, the names to look at (None: everything)."""
        pod_touched = self._pod_touched(summary)
        # A Sidecar change, or new labels on the proxy's own pod, may put it under another Sidecar.
        rescope = (
            summary.namespaces_rescoped is None
            or self.node.namespace in summary.namespaces_rescoped
            or pod_touched
        )
        full = rescope and self.refresh_scope()
        inbound_changed: dict[str, set[str]] = {t: set() for t in PUSH_ORDER}
        # A gateway's listeners and routes follow Gateways, VirtualServices and Services: recomputed (and
        # diffed) on every change; there are few gateways.
        router = self.node.type == "router"
        if not self.node.proxyless and (full or pod_touched or router):
            old = self.inbound
            self.inbound = self._inbound()
            for t in PUSH_ORDER:
                a, b = old[t], self.inbound[t]
                inbound_changed[t] = {
                    n for n in a.keys() | b.keys() if (a.get(n) is None) != (b.get(n) is None) or a[n] != b[n]
                }
        scoped = summary.scopes.get(self.scope_key, {})
        for type_url in PUSH_ORDER:
            if type_url not in self.watches:
                continue
            if full:
                yield type_url, None
                continue
            names = scoped.get(type_url, set()) | inbound_changed[type_url]
            if names:
                yield type_url, names

    def _pod_touched(self, summary: Any) -> bool:
        if not summary.pods:
            return False
        pod = find_pod(self.translator.snapshot, self.node)
        if pod is not None and pod.key in summary.pods:
            return True
        # The pod may have just appeared or gone: compare against the inbound we computed.
        return any(k.namespace == self.node.namespace and k.name == self.node.pod for k in summary.pods)

    def status(self) -> dict[str, Any]:
        return {
            "proxy": self.node.id,
            "connection": self.id,
            "protocol": self.protocol,
            "peer": self.peer,
            "namespace": self.node.namespace,
            "pod": self.node.pod,
            "generator": self.node.generator or "sidecar",
            "scope": {"namespace": self.scope_key.namespace, "sidecar": str(self.scope_key.sidecar or "")},
            "types": {
                t: {
                    "status": w.status,
                    "nonce_sent": w.last_nonce,
                    "nonce_acked": w.acked_nonce,
                    "resources": len(w.held) if self.protocol == "delta" else None,
                    "error": w.nack,
                }
                for t, w in self.watches.items()
            },
        }


def is_wildcard_request(type_url: str, names: Iterable[str], first: bool) -> bool:
    """xDS: an empty first subscription is a wildcard for LDS/CDS; ``*`` is an explicit wildcard."""
    names = list(names)
    return "*" in names or (first and not names and type_url in WILDCARD_TYPES)
