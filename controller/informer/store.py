"""A keyed object store with secondary indexes (client-go's thread-safe Indexer).

Keys are ``namespace/name`` (``name`` for cluster-scoped objects). Each index function maps an object to the
index values it files under; ``by_index`` answers "which objects have this value" without scanning. The store
is written only by its informer and read from anywhere, so a lock guards every access: readers on other
threads (debug endpoints, the translator's executor) see a consistent state.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Iterable, Mapping

from .listwatch import Obj

IndexFunc = Callable[[Obj], Iterable[str]]
# Spelled out because Store.list shadows the builtin inside the class body.
Objs = list[Obj]
Keys = list[str]

NAMESPACE_INDEX = "namespace"
LABEL_INDEX = "label"
SERVICE_NAME_INDEX = "service-name"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def object_key(obj: Obj) -> str:
    """``namespace/name``, or ``name`` for a cluster-scoped object (client-go's MetaNamespaceKeyFunc)."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name', '')}" if namespace else str(meta.get("name", ""))


def namespace_index(obj: Obj) -> list[str]:
    """Files an object under its namespace ("" for cluster-scoped objects)."""
    return [(obj.get("metadata") or {}).get("namespace") or ""]


def label_index(obj: Obj) -> list[str]:
    """Files an object under each of its labels as ``key=value``."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return [f"{key}={value}" for key, value in labels.items()]


def service_name_index(obj: Obj) -> list[str]:
    """Files an EndpointSlice under ``namespace/service`` from its ``kubernetes.io/service-name`` label."""
    meta = obj.get("metadata") or {}
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return [f"{meta.get('namespace') or ''}/{service}"] if service else []


DEFAULT_INDEXERS: Mapping[str, IndexFunc] = {NAMESPACE_INDEX: namespace_index, LABEL_INDEX: label_index}


class Store:
    """Objects by key, plus named indexes from index value to keys."""

    def __init__(self, indexers: Mapping[str, IndexFunc] | None = None) -> None:
        self._lock = threading.RLock()
        self._items: dict[str, Obj] = {}
        self._indexers: dict[str, IndexFunc] = dict(DEFAULT_INDEXERS if indexers is None else indexers)
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}

    def add_indexer(self, name: str, func: IndexFunc) -> None:
        """Adds an index and builds it over the objects already stored."""
        with self._lock:
            if name in self._indexers:
                raise ValueError(f"index {name!r} already exists")
            self._indexers[name] = func
            self._indices[name] = {}
            for key, obj in self._items.items():
                self._file(name, key, obj)

    # Reads.

    def get(self, key: str) -> Obj | None:
        with self._lock:
            return self._items.get(key)

    def keys(self) -> Keys:
        with self._lock:
            return list(self._items)

    def list(self) -> Objs:
        with self._lock:
            return list(self._items.values())

    def items(self) -> builtins.list[tuple[str, Obj]]:
        with self._lock:
            return builtins.list(self._items.items())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def by_index(self, index: str, value: str) -> Objs:
        """Objects whose index function returned ``value`` (e.g. ``by_index("label", "app=reviews")``)."""
        with self._lock:
            keys = self._index(index).get(value, ())
            return [self._items[key] for key in sorted(keys)]

    def index_keys(self, index: str, value: str) -> Keys:
        with self._lock:
            return sorted(self._index(index).get(value, ()))

    def select(self, selector: Mapping[str, str], namespace: str | None = None) -> Objs:
        """Objects whose labels include every ``key: value`` of ``selector`` (all objects for an empty
        one), optionally only in ``namespace``; answered from the label and namespace indexes."""
        with self._lock:
            candidates: builtins.list[set[str]] = [
                self._index(LABEL_INDEX).get(f"{key}={value}", set()) for key, value in selector.items()
            ]
            if namespace is not None:
                candidates.append(self._index(NAMESPACE_INDEX).get(namespace, set()))
            if not candidates:
                return [self._items[key] for key in sorted(self._items)]
            candidates.sort(key=len)
            keys = set(candidates[0]).intersection(*candidates[1:])
            return [self._items[key] for key in sorted(keys)]

    def index_values(self, index: str) -> Keys:
        """Every value present in an index (e.g. all namespaces that hold at least one object)."""
        with self._lock:
            return sorted(self._index(index))

    # Writes: only the owning informer calls these.

    def upsert(self, key: str, obj: Obj) -> Obj | None:
        """Stores ``obj`` under ``key``; returns what it replaced."""
        with self._lock:
            old = self._items.get(key)
            if old is not None:
                self._unfile_all(key, old)
            self._items[key] = obj
            for name in self._indexers:
                self._file(name, key, obj)
            return old

    def delete(self, key: str) -> Obj | None:
        """Removes ``key``; returns the object it held."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._unfile_all(key, old)
            return old

    def _index(self, name: str) -> dict[str, set[str]]:
        try:
            return self._indices[name]
        except KeyError:
            raise KeyError(f"no index named {name!r}") from None

    def _file(self, name: str, key: str, obj: Obj) -> None:
        index = self._indices[name]
        for value in self._indexers[name](obj):
            index.setdefault(value, set()).add(key)

    def _unfile_all(self, key: str, obj: Obj) -> None:
        for name, func in self._indexers.items():
            index = self._indices[name]
            for value in func(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
