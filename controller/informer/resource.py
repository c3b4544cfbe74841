"""A ``ListerWatcher`` for one resource (group, version, plural) over a ``KubeClient``: the HTTP shapes of
LIST and WATCH, decoded with orjson into plain dicts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

from .kubeclient import KubeClient, Query
from .listwatch import (
    ADDED,
    BOOKMARK,
    DELETED,
    ERROR,
    MODIFIED,
    ListOptions,
    ListPage,
    StreamInterrupted,
    WatchEvent,
    WatchOptions,
)

_EVENT_TYPES = frozenset({ADDED, MODIFIED, DELETED, BOOKMARK, ERROR})

# Without events or bookmarks for this long, a watch connection is taken for dead (half-open) and renewed
# from the last resourceVersion. Servers send a bookmark about once a minute while anything changes.
DEFAULT_READ_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class ResourceType:
    """Where a kind is served: ``group`` "" is the core API (``/api/v1``)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace and self.namespaced:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"


class ResourceClient:
    """Lists and watches one resource, cluster-wide or in one namespace, optionally filtered by selectors."""

    def __init__(
        self,
        client: KubeClient,
        resource: ResourceType,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        strip_managed_fields: bool = True,
    ) -> None:
        self._client = client
        # Server-side apply bookkeeping: often the largest part of an object, and nothing here reads it.
        self._strip = strip_managed_fields
        self.resource = resource
        self.path = resource.collection_path(namespace)
        self._selectors: list[tuple[str, str]] = []
        if label_selector:
            self._selectors.append(("labelSelector", label_selector))
        if field_selector:
            self._selectors.append(("fieldSelector", field_selector))
        self.read_timeout = read_timeout

    async def list(self, options: ListOptions) -> ListPage:
        query: list[tuple[str, str]] = [*self._selectors]
        if options.resource_version:
            query.append(("resourceVersion", options.resource_version))
        if options.resource_version_match:
            query.append(("resourceVersionMatch", options.resource_version_match))
        if options.limit:
            query.append(("limit", str(options.limit)))
        if options.continue_token:
            query.append(("continue", options.continue_token))
        data = await self._client.request("GET", self.path, query=query)
        if not isinstance(data, dict):
            raise StreamInterrupted(f"GET {self.path}: expected a list object, got {type(data).__name__}")
        items = data.get("items") or []
        # Lists of built-in kinds leave kind and apiVersion off their items; every layer above relies on them.
        kind, api_version = self.resource.kind, self.resource.api_version
        for item in items:
            if "kind" not in item:
                item["kind"] = kind
                item["apiVersion"] = api_version
            if self._strip:
                _strip_managed_fields(item)
        meta = data.get("metadata") or {}
        return ListPage(items, str(meta.get("resourceVersion") or ""), str(meta.get("continue") or ""))

    async def watch(self, options: WatchOptions) -> AsyncIterator[WatchEvent]:
        query: Query = [
            *self._selectors,
            ("watch", "true"),
            ("resourceVersion", options.resource_version),
            ("timeoutSeconds", str(options.timeout_seconds)),
        ]
        if options.allow_bookmarks:
            query = [*query, ("allowWatchBookmarks", "true")]
        lines = self._client.stream_lines(self.path, query, read_timeout=self.read_timeout)
        try:
            async for line in lines:
                try:
                    event = orjson.loads(line)
                    event_type, obj = event["type"], event["object"]
                except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    raise StreamInterrupted(
                        f"GET {self.path}: undecodable watch event: {line[:200]!r}"
                    ) from exc
                if event_type not in _EVENT_TYPES or not isinstance(obj, dict):
                    raise StreamInterrupted(f"GET {self.path}: unexpected watch event: {line[:200]!r}")
                if self._strip:
                    _strip_managed_fields(obj)
                yield WatchEvent(event_type, obj)
        finally:
            await lines.aclose()


def _strip_managed_fields(obj: dict[str, object]) -> None:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
