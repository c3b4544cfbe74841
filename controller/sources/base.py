"""The contract between a config source and the rest of the controller.

A source keeps the current set of raw Kubernetes objects (decoded JSON dicts, shared: never mutate them)
for every kind the mesh reads, and tells subscribers what changed, in batches. The controller core
never knows whether the objects came from the API server or from files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

Obj = dict[str, Any]

# The kinds the mesh reads, by the names every layer uses.
KINDS: tuple[str, ...] = (
    "Namespace",
    "Pod",
    "Service",
    "EndpointSlice",
    "VirtualService",
    "DestinationRule",
    "Gateway",
    "ServiceEntry",
    "Sidecar",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "Telemetry",
    "Secret",  # TLS credentials of gateways (a Gateway server's credentialName)
)

ChangeType = Literal["ADDED", "MODIFIED", "DELETED"]


class Change(NamedTuple):
    """One object's net change. For DELETED, ``obj`` is the last state the source saw."""

    kind: str
    key: str  # "namespace/name", or "name" for cluster-scoped kinds
    type: ChangeType
    obj: Obj


ChangeHandler = Callable[[Sequence[Change]], None]


@runtime_checkable
class Source(Protocol):
    """What the controller core needs from a source."""

    async def start(self) -> None:
        """Begin listing and watching in background tasks; returns at once."""

    async def wait_synced(self) -> None:
        """Returns once every kind has delivered its initial state (the first push waits for this)."""

    def has_synced(self) -> bool: ...

    def list(self, kind: str) -> list[Obj]:
        """The current objects of ``kind``."""

    def get(self, kind: str, key: str) -> Obj | None: ...

    def subscribe(self, handler: ChangeHandler) -> None:
        """``handler`` is called on the event loop with each batch of changes (after the initial sync too)."""

    async def stop(self) -> None: ...


@runtime_checkable
class IndexedSource(Source, Protocol):
    """A source that also answers indexed queries (both ``FilesSource`` and ``KubeSource`` do)."""

    def by_index(self, kind: str, index: str, value: str) -> list[Obj]:
        """Objects of ``kind`` filed under ``value`` in ``index``: "namespace" (a namespace name, "" for
        cluster-scoped), "label" ("key=value"), and for EndpointSlices "service-name" ("ns/service")."""

    def select(self, kind: str, selector: Mapping[str, str], namespace: str | None = None) -> list[Obj]:
        """Objects of ``kind`` whose labels match every entry of ``selector``, optionally in one namespace."""
