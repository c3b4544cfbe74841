"""Where the mesh config comes from: a file (``--mesh-config FILE``, local mode) or the ``istio`` ConfigMap's
``mesh`` key in the controller's namespace (Kubernetes; ``mizzen install`` renders it), watched, so that
a change reaches the proxies without a restart. Either way it enters the controller as one object of kind
``MeshConfig`` (validated, versioned and diffed like every other), through the same debounced change path.

A file holds either the mesh config itself (the ``mesh`` YAML) or a whole ``istio`` ConfigMap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

from controller.model.telemetry import MESH_CONFIG_KEY, mesh_config_object
from controller.sources.base import Change
from mizzen import logs

log = logs.get("meshconfig")

ChangeSink = Callable[[list[Change]], None]
CONFIG_MAP = "istio"


class MeshConfigError(ValueError):
    pass


def parse(text: str, where: str) -> dict[str, Any]:
    """The mesh config object from a file's text: the mesh YAML, or an ``istio`` ConfigMap holding it."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise MeshConfigError(f"{where}: not YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise MeshConfigError(f"{where}: the mesh config must be a mapping")
    if doc.get("kind") == "ConfigMap":
        return from_config_map(doc, where)
    return mesh_config_object(doc)


def from_config_map(cm: dict[str, Any], where: str) -> dict[str, Any]:
    text = (cm.get("data") or {}).get("mesh")
    if text is None:
        return mesh_config_object({})
    try:
        spec = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise MeshConfigError(f"{where}: data.mesh is not YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise MeshConfigError(f"{where}: data.mesh must be a mapping")
    return mesh_config_object(spec)


def _change(obj: dict[str, Any]) -> Change:
    return Change("MeshConfig", f"{MESH_CONFIG_KEY.namespace}/{MESH_CONFIG_KEY.name}", "MODIFIED", obj)


class FileMeshConfig:
    """A mesh config file, re-read when it changes (polled: it may be a ConfigMap mounted as a volume)."""

    def __init__(self, path: Path, poll_interval: float = 1.0) -> None:
        self.path = path
        self.poll_interval = poll_interval
        self._stamp: tuple[float, int] | None = None
        self._current = self._read()
        self._task: asyncio.Task[None] | None = None

    def _read(self) -> dict[str, Any]:
        try:
            stat = self.path.stat()
            self._stamp = (stat.st_mtime, stat.st_size)
            return parse(self.path.read_text(), str(self.path))
        except OSError as exc:
            raise MeshConfigError(f"{self.path}: {exc.strerror}") from None

    def current(self) -> dict[str, Any]:
        return self._current

    async def start(self, sink: ChangeSink) -> None:
        self._task = asyncio.create_task(self._watch(sink))

    async def _watch(self, sink: ChangeSink) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                stat = self.path.stat()
                if (stat.st_mtime, stat.st_size) == self._stamp:
                    continue
                fresh = self._read()
            except MeshConfigError as exc:
                log.warning("mesh config unreadable; the last one stays in force", error=str(exc))
                continue
            if fresh != self._current:
                self._current = fresh
                log.info("mesh config changed", path=str(self.path))
                sink([_change(fresh)])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class KubeMeshConfig:
    """The ``istio`` ConfigMap of ``namespace`` (its ``mesh`` key), listed then watched."""

    def __init__(self, client: Any, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._current = mesh_config_object({})
        self._version = ""
        self._task: asyncio.Task[None] | None = None

    def current(self) -> dict[str, Any]:
        return self._current

    @property
    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/configmaps"

    async def load(self) -> None:
        """The ConfigMap as it is now (absent: Istio's defaults)."""
        listing = await self.client.request(
            "GET", self._path, query=(("fieldSelector", f"metadata.name={CONFIG_MAP}"),)
        )
        self._version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
        items = listing.get("items") or []
        self._current = self._object(items[0] if items else None)

    def _object(self, cm: dict[str, Any] | None) -> dict[str, Any]:
        if cm is None:
            return mesh_config_object({})
        try:
            return from_config_map(cm, f"ConfigMap {self.namespace}/{CONFIG_MAP}")
        except MeshConfigError as exc:
            log.warning("mesh config unreadable; the last one stays in force", error=str(exc))
            return self._current

    async def start(self, sink: ChangeSink) -> None:
        self._task = asyncio.create_task(self._watch(sink))

    async def _watch(self, sink: ChangeSink) -> None:
        backoff = 1.0
        while True:
            try:
                query = [
                    ("watch", "1"),
                    ("fieldSelector", f"metadata.name={CONFIG_MAP}"),
                    ("allowWatchBookmarks", "true"),
                ]
                if self._version:
                    query.append(("resourceVersion", self._version))
                async for line in self.client.stream_lines(self._path, tuple(query), read_timeout=330):
                    event = orjson.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    version = (obj.get("metadata") or {}).get("resourceVersion")
                    if version:
                        self._version = str(version)
                    if kind == "ERROR":
                        self._version = ""  # 410 Gone and the like: list again
                        break
                    if kind not in ("ADDED", "MODIFIED", "DELETED"):
                        continue
                    fresh = self._object(None if kind == "DELETED" else obj)
                    if fresh != self._current:
                        self._current = fresh
                        log.info("mesh config changed", configmap=f"{self.namespace}/{CONFIG_MAP}")
                        sink([_change(fresh)])
                backoff = 1.0
                if not self._version:
                    before = self._current
                    await self.load()
                    if self._current != before:
                        sink([_change(self._current)])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API away: keep the config in force, try again
                log.warning("mesh config watch failed; retrying", error=str(exc), retry_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
