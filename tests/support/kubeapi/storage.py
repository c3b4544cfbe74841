"""Versioned object storage in etcd's manner: one revision counter for every resource (so resourceVersions
increase across kinds), each key's history kept until compaction, reads at a past revision, and an event log
that watches replay from.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped


@dataclass(frozen=True, slots=True)
class Event:
    """One write: ``obj`` is the new state (for DELETED, the last state stamped with the delete's revision);
    ``prev`` the state before (None for ADDED)."""

    revision: int
    type: str
    resource: str
    key: Key
    obj: Obj
    prev: Obj | None


class CompactedError(Exception):
    """The revision asked for is older than the compaction point."""


class Storage:
    """All resources' objects, by resource name (``pods``, ``virtualservices.networking.istio.io``)."""

    def __init__(self, start_revision: int = 1000) -> None:
        # Starting well above 0 keeps "0" (any version) and small counts from looking like real revisions.
        self.revision = start_revision
        self.compacted = 0
        self._versions: dict[str, dict[Key, list[tuple[int, Obj | None]]]] = {}
        self._events: list[Event] = []
        self._listeners: list[Callable[[Event], None]] = []

    def on_event(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    # Reads.

    def get(self, resource: str, key: Key) -> Obj | None:
        versions = self._versions.get(resource, {}).get(key)
        return versions[-1][1] if versions else None

    def current(self, resource: str) -> dict[Key, Obj]:
        return {
            key: versions[-1][1]
            for key, versions in self._versions.get(resource, {}).items()
            if versions and versions[-1][1] is not None
        }

    def at(self, resource: str, revision: int) -> dict[Key, Obj]:
        """The objects as they were at ``revision``; ``CompactedError`` if that is before compaction."""
        if revision < self.compacted:
            raise CompactedError(revision)
        state: dict[Key, Obj] = {}
        for key, versions in self._versions.get(resource, {}).items():
            index = bisect.bisect_right([rev for rev, _ in versions], revision) - 1
            if index >= 0 and versions[index][1] is not None:
                state[key] = versions[index][1]  # type: ignore[assignment]
        return state

    def events_after(self, revision: int) -> list[Event]:
        """Every event with a revision above ``revision``; ``CompactedError`` if some were compacted away."""
        if revision < self.compacted:
            raise CompactedError(revision)
        index = bisect.bisect_right([event.revision for event in self._events], revision)
        return self._events[index:]

    # Writes: each takes the next revision and stamps it on the object as its resourceVersion.

    def put(self, resource: str, key: Key, obj: Obj) -> Event:
        prev = self.get(resource, key)
        revision = self._next()
        stored = _with_resource_version(obj, revision)
        self._versions.setdefault(resource, {}).setdefault(key, []).append((revision, stored))
        return self._emit(
            Event(revision, "ADDED" if prev is None else "MODIFIED", resource, key, stored, prev)
        )

    def delete(self, resource: str, key: Key) -> Event:
        prev = self.get(resource, key)
        assert prev is not None, "delete of a missing object"
        revision = self._next()
        self._versions[resource][key].append((revision, None))
        return self._emit(
            Event(revision, "DELETED", resource, key, _with_resource_version(prev, revision), prev)
        )

    def compact(self, revision: int | None = None) -> int:
        """Forgets history up to ``revision`` (default: now): older reads, continue tokens and watches from
        before it get 410. Returns the compaction point."""
        point = self.revision if revision is None else min(revision, self.revision)
        for versions_by_key in self._versions.values():
            for key in list(versions_by_key):
                versions = versions_by_key[key]
                keep_from = max(0, bisect.bisect_right([rev for rev, _ in versions], point) - 1)
                del versions[:keep_from]
                if len(versions) == 1 and versions[0][1] is None and versions[0][0] <= point:
                    del versions_by_key[key]
        self._events = [event for event in self._events if event.revision > point]
        self.compacted = max(self.compacted, point)
        return self.compacted

    def drop_resource(self, resource: str) -> None:
        """A CRD was deleted: its objects go with it (without events, as the real server's storage does)."""
        self._versions.pop(resource, None)
        self._events = [event for event in self._events if event.resource != resource]

    def _next(self) -> int:
        self.revision += 1
        return self.revision

    def _emit(self, event: Event) -> Event:
        self._events.append(event)
        for listener in list(self._listeners):
            listener(event)
        return event


def _with_resource_version(obj: Obj, revision: int) -> Obj:
    meta = dict(obj.get("metadata") or {})
    meta["resourceVersion"] = str(revision)
    return {**obj, "metadata": meta}
