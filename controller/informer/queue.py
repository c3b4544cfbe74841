"""The coalescing delta queue between a Reflector and its informer (client-go's DeltaFIFO, level-based).

The queue holds at most one pending change per key: the newest object, or a deletion. When the informer pops
a key, the pending change is compared with what the store (and so every handler) last saw, and turned into
the net effect: ADDED, UPDATED or DELETED, or nothing at all (created and deleted within one burst; a re-list
returning an object unchanged). A burst of a hundred updates to one Service is one UPDATED from the state the
handlers knew to the newest state.

``replace`` is what a (re-)LIST delivers: every listed object is queued, and every key the store knows but the
list lacks is queued as a deletion whose final state is unknown (the object went away while we were not
watching, so the last state we saw is all we can report: client-go's DeletedFinalStateUnknown).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from .listwatch import Obj
from .store import object_key


class DeltaType(enum.StrEnum):
    ADDED = "ADDED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class DeletedFinalStateUnknown:
    """A deletion noticed by a re-list rather than a watch event: ``obj`` is the last state we saw."""

    key: str
    obj: Obj


@dataclass(frozen=True, slots=True)
class Delta:
    """The net change of one key since the handlers last heard about it."""

    type: DeltaType
    key: str
    old: Obj | None
    new: Obj | None
    final_state_unknown: bool = False


@dataclass(frozen=True, slots=True)
class _Upsert:
    obj: Obj


@dataclass(frozen=True, slots=True)
class _Delete:
    obj: Obj
    final_state_unknown: bool


Pending = _Upsert | _Delete


class KnownObjects(Protocol):
    """What the handlers have seen so far: the informer's store."""

    def get(self, key: str) -> Obj | None: ...

    def keys(self) -> list[str]: ...


def _uid(obj: Obj) -> str | None:
    return (obj.get("metadata") or {}).get("uid")


def _rv(obj: Obj) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")


def resolve(key: str, known: Obj | None, pending: Pending) -> list[Delta]:
    """The deltas that take handlers from ``known`` to ``pending`` (pure; the heart of the coalescing)."""
    if isinstance(pending, _Delete):
        if known is None:
            return []  # created and deleted before anyone saw it
        last = known if pending.final_state_unknown else pending.obj
        return [Delta(DeltaType.DELETED, key, last, None, pending.final_state_unknown)]
    new = pending.obj
    if known is None:
        return [Delta(DeltaType.ADDED, key, None, new)]
    if _uid(known) and _uid(new) and _uid(known) != _uid(new):
        # Deleted and re-created under the same name: a different object, so handlers see both halves.
        return [Delta(DeltaType.DELETED, key, known, None), Delta(DeltaType.ADDED, key, None, new)]
    if _rv(known) is not None and _rv(known) == _rv(new):
        return []  # a re-list returned what we already have
    return [Delta(DeltaType.UPDATED, key, known, new)]


class DeltaQueue:
    """At most one pending change per key, handed out in batches in the order keys first became pending."""

    def __init__(self, known: KnownObjects, key_func: Callable[[Obj], str] = object_key) -> None:
        self._known = known
        self._key = key_func
        self._pending: dict[str, Pending] = {}
        self._ready = asyncio.Event()
        self.synced = asyncio.Event()  # set when has_synced() becomes true
        self._populated = False
        # Keys the first replace queued that have not been processed yet: has_synced waits for them.
        self._initial: set[str] = set()

    def __len__(self) -> int:
        return len(self._pending)

    def update(self, obj: Obj) -> None:
        """An object was added or modified (a watch event)."""
        self._put(self._key(obj), _Upsert(obj))

    def delete(self, obj: Obj) -> None:
        """An object was deleted; ``obj`` is its final state (a watch DELETED event)."""
        self._put(self._key(obj), _Delete(obj, final_state_unknown=False))

    def replace(self, objs: Iterable[Obj]) -> None:
        """A full LIST: queue every object, and a deletion for every known key the list lacks."""
        listed: set[str] = set()
        for obj in objs:
            key = self._key(obj)
            listed.add(key)
            self._put(key, _Upsert(obj))
        for key in self._known.keys():
            if key not in listed and not isinstance(self._pending.get(key), _Delete):
                last = self._known.get(key)
                if last is not None:
                    self._put(key, _Delete(last, final_state_unknown=True))
        # Pending keys that are neither listed nor known never reached a handler: drop them.
        for key in [k for k, p in self._pending.items() if k not in listed and isinstance(p, _Upsert)]:
            if self._known.get(key) is None:
                del self._pending[key]
                self._initial.discard(key)
        if not self._populated:
            self._populated = True
            self._initial = set(self._pending)
        self._check_synced()
        self._ready.set()

    def has_synced(self) -> bool:
        """True once the first ``replace`` happened and everything it queued has been processed."""
        return self._populated and not self._initial

    async def pop(self, process: Callable[[list[Delta]], None], limit: int = 1000) -> None:
        """Waits for pending keys, then resolves up to ``limit`` of them against the known objects and calls
        ``process`` once with all their deltas (possibly none). The keys count as processed for
        ``has_synced`` once ``process`` returns."""
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()
        deltas: list[Delta] = []
        keys: list[str] = []
        for key in self._pending:
            keys.append(key)
            if len(keys) >= limit:
                break
        for key in keys:
            deltas.extend(resolve(key, self._known.get(key), self._pending.pop(key)))
        try:
            process(deltas)
        finally:
            self._initial.difference_update(keys)
            self._check_synced()

    def _check_synced(self) -> None:
        if self._populated and not self._initial and not self.synced.is_set():
            self.synced.set()

    def _put(self, key: str, change: Pending) -> None:
        # Assigning to an existing key keeps its place in line: a busy key cannot starve the others.
        self._pending[key] = change
        self._ready.set()
