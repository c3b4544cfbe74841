"""The files source: a directory of Kubernetes-style manifests, re-read when it changes (local mode, tests).

Every ``*.yaml``, ``*.yml`` and ``*.json`` under the directory is read (hidden files and directories are
skipped, which also skips the ``..data`` copies in a mounted ConfigMap). Change detection is a ``stat`` per
file each poll: only files whose size, mtime or inode changed are read and parsed again, and subscribers
hear only real net changes per object.

Rules for imperfect input, chosen so that a mistake never takes working config away:
- an object no API server would accept is skipped and reported (file, document number, field);
- a file with a syntax error keeps the objects it held when it last parsed (none if it never did);
- an object defined twice: the first in path order is used, the other is reported;
- if the directory disappears, the last state is kept until it comes back.

Objects get what the API server would have given them: ``metadata.resourceVersion`` (always ours; one
copied from ``kubectl get`` into a file means nothing here), and ``uid`` and ``creationTimestamp`` when the
file has none. Objects applied in-process with ``apply`` take precedence over files until deleted.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controller.informer.store import Store
from mizzen import logs

from .base import KINDS, Change, ChangeHandler, ChangeType, Obj
from .fanout import ChangeFanout
from .kinds import indexers_for, info_for, object_key
from .manifests import Manifest, ObjectError, ParsedFile, Problem, normalize, parse_file

log = logs.get("files-source")

SUFFIXES = (".yaml", ".yml", ".json")
APPLIED = "<applied>"  # the origin of objects given to apply()

ObjectId = tuple[str, str]  # (kind, key)
# Spelled out here because FilesSource.list (the Source contract) shadows the builtin in its class body.
Changes = list[Change]
Objs = list[Obj]
Problems = list[Problem]
Signature = tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns)

# File times tick coarsely (the kernel's jiffy clock), so a rewrite of the same size right after a read can
# keep the old mtime. Like git's "racily clean" check: a file modified this recently is read again next poll.
RACY_NS = 2_000_000_000


@dataclass(slots=True)
class _File:
    signature: Signature
    objects: list[Manifest] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Scan:
    """One look at the directory: every file's signature and the parse of those that changed."""

    present: bool
    signatures: dict[str, Signature]
    parsed: dict[str, ParsedFile]


class FilesSource:
    """A ``Source`` (and ``IndexedSource``) over a directory of manifests."""

    def __init__(self, directory: Path | str, *, poll_interval: float = 1.0) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise NotADirectoryError(f"files source: {self.directory} is not a directory")
        if poll_interval <= 0:
            raise ValueError(f"files source: poll_interval must be positive, got {poll_interval}")
        self.poll_interval = poll_interval
        self._files: dict[str, _File] = {}
        self._applied: dict[ObjectId, Manifest] = {}
        self._content: dict[ObjectId, Obj] = {}  # what each published object was made from
        self._origin: dict[ObjectId, str] = {}
        self._stores: dict[str, Store] = {kind: Store(indexers_for(kind)) for kind in KINDS}
        self._merge_problems: Problems = []
        self._fanout = ChangeFanout()
        self._resource_version = 0
        self._synced = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._directory_missing = False

    # The Source contract.

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"files-source {self.directory}")

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def has_synced(self) -> bool:
        return self._synced.is_set()

    def list(self, kind: str) -> Objs:
        return self._store(kind).list()

    def get(self, kind: str, key: str) -> Obj | None:
        return self._store(kind).get(key)

    def subscribe(self, handler: ChangeHandler) -> None:
        """``handler`` gets every later batch; subscribe before ``start`` to see the initial state too."""
        self._fanout.subscribe(handler)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # IndexedSource.

    def by_index(self, kind: str, index: str, value: str) -> Objs:
        return self._store(kind).by_index(index, value)

    def select(self, kind: str, selector: Mapping[str, str], namespace: str | None = None) -> Objs:
        return self._store(kind).select(selector, namespace)

    # Beyond the contract.

    def problems(self) -> Problems:
        """What is wrong with the files right now (syntax errors, unusable objects, duplicates)."""
        found = [problem for path in sorted(self._files) for problem in self._files[path].problems]
        return found + self._merge_problems

    async def refresh(self) -> Changes:
        """Looks at the directory now (instead of at the next poll); returns the changes it published."""
        async with self._lock:
            known = {path: state.signature for path, state in self._files.items()}
            scan = await asyncio.to_thread(_scan, self.directory, known)
            return self._absorb(scan)

    async def apply(self, objs: Iterable[Obj]) -> Changes:
        """Sets objects in memory (they win over files), all or none; returns the changes published.

        Raises ``ValueError`` naming every unusable object, or any object of a kind the mesh does not read.
        """
        accepted: builtins.list[Manifest] = []
        errors: builtins.list[str] = []
        for index, raw in enumerate(objs):
            try:
                normalized = normalize(raw, f"object {index}: ")
            except ObjectError as exc:
                errors.append(str(exc))
                continue
            if normalized is None:
                errors.append(
                    f"object {index}: {raw.get('apiVersion')} {raw.get('kind')} is not a kind the mesh reads"
                )
                continue
            info, obj = normalized
            accepted.append(Manifest(info.kind, object_key(obj), obj, APPLIED, index + 1))
        if errors:
            raise ValueError("apply: nothing applied: " + "; ".join(errors))
        async with self._lock:
            for manifest in accepted:
                self._applied[(manifest.kind, manifest.key)] = manifest
            return self._publish_merge()

    async def delete(self, kind: str, key: str) -> bool:
        """Removes an object set by ``apply``; False if there is none. An object that a file defines is
        not deleted (``ValueError`` names the file): it would come back at the next read."""
        info_for(kind)
        async with self._lock:
            if self._applied.pop((kind, key), None) is None:
                origin = self._origin.get((kind, key))
                if origin is not None:
                    raise ValueError(f"delete: {kind} {key} is defined in {origin}; remove it from that file")
                return False
            self._publish_merge()
            return True

    # Internals.

    def _store(self, kind: str) -> Store:
        store = self._stores.get(kind)
        if store is None:
            info_for(kind)  # raises the clear error for an unknown kind
            raise AssertionError(kind)
        return store

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("reading the directory failed; trying again", directory=str(self.directory))
            self._synced.set()  # even a failed first read counts: the controller runs on what there is
            await asyncio.sleep(self.poll_interval)

    def _absorb(self, scan: _Scan) -> Changes:
        if not scan.present:
            if not self._directory_missing:
                log.warning("directory is gone; keeping the last config read", directory=str(self.directory))
            self._directory_missing = True
            return []
        if self._directory_missing:
            log.info("directory is back", directory=str(self.directory))
            self._directory_missing = False
        changed = False
        for path in [p for p in self._files if p not in scan.signatures]:
            log.info("file removed", file=path)
            del self._files[path]
            changed = True
        for path, parsed in scan.parsed.items():
            changed = True
            previous = self._files.get(path)
            repeat = previous is not None and previous.problems == parsed.problems  # a re-read, same state
            for problem in [] if repeat else parsed.problems:
                log.error(
                    "bad manifest", file=problem.origin, document=problem.document, error=problem.message
                )
            for ignored in [] if repeat else parsed.ignored:
                log.debug("not a kind the mesh reads; ignored", file=path, object=ignored)
            if parsed.complete or previous is None:
                objects = parsed.objects if parsed.complete else []
            else:
                objects = previous.objects
                if not repeat:
                    log.warning("keeping the objects this file held when it last parsed", file=path)
            self._files[path] = _File(scan.signatures[path], objects, parsed.problems)
        return self._publish_merge() if changed else []

    def _publish_merge(self) -> Changes:
        wanted, problems = self._merge()
        for problem in problems:
            if problem not in self._merge_problems:
                log.error(
                    "duplicate object", file=problem.origin, document=problem.document, error=problem.message
                )
        self._merge_problems = problems
        batch = self._diff(wanted)
        self._fanout.publish(batch)
        return batch

    def _merge(self) -> tuple[dict[ObjectId, Manifest], Problems]:
        wanted: dict[ObjectId, Manifest] = {}
        problems: Problems = []
        for path in sorted(self._files):
            for manifest in self._files[path].objects:
                oid = (manifest.kind, manifest.key)
                first = wanted.get(oid)
                if first is None:
                    wanted[oid] = manifest
                else:
                    problems.append(
                        Problem(
                            path,
                            manifest.document,
                            f"{manifest.kind} {manifest.key} is also defined in {first.origin} document "
                            f"{first.document}; that one is used, this one ignored",
                        )
                    )
        wanted.update(self._applied)
        return wanted, problems

    def _diff(self, wanted: dict[ObjectId, Manifest]) -> Changes:
        batch: Changes = []
        for oid, manifest in wanted.items():
            self._origin[oid] = manifest.origin
            previous = self._content.get(oid)
            if previous is manifest.obj or previous == manifest.obj:
                continue
            kind, key = oid
            store = self._stores[kind]
            obj = self._stamp(manifest.obj, store.get(key))
            change_type: ChangeType = "ADDED" if previous is None else "MODIFIED"
            self._content[oid] = manifest.obj
            store.upsert(key, obj)
            batch.append(Change(kind, key, change_type, obj))
        for oid in [oid for oid in self._content if oid not in wanted]:
            kind, key = oid
            del self._content[oid]
            del self._origin[oid]
            last = self._stores[kind].delete(key)
            if last is not None:
                batch.append(Change(kind, key, "DELETED", last))
        order = {kind: index for index, kind in enumerate(KINDS)}
        batch.sort(key=lambda change: (order[change.kind], change.key))
        return batch

    def _stamp(self, content: Obj, previous: Obj | None) -> Obj:
        """``content`` with the metadata an API server would have added."""
        self._resource_version += 1
        meta = dict(content["metadata"])
        before = previous["metadata"] if previous is not None else {}
        meta["resourceVersion"] = str(self._resource_version)
        meta.setdefault("uid", before.get("uid") or str(uuid.uuid4()))
        meta.setdefault(
            "creationTimestamp",
            before.get("creationTimestamp") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        return {**content, "metadata": meta}


def _scan(directory: Path, known: Mapping[str, Signature]) -> _Scan:
    """Signatures of every manifest file, and the parse of each whose signature changed (runs in a thread)."""
    signatures: dict[str, Signature] = {}
    parsed: dict[str, ParsedFile] = {}
    if not directory.is_dir():
        return _Scan(False, {}, {})
    racy_after = time.time_ns() - RACY_NS
    seen: set[tuple[int, int]] = set()  # directories by inode: a symlink loop must not walk forever
    for root, dirs, files in os.walk(directory, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.endswith(SUFFIXES):
                continue
            path = os.path.join(root, name)
            try:
                st = os.stat(path)  # follows symlinks: a ConfigMap's files are links into ..data
                signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                if known.get(path) == signature:
                    signatures[path] = signature
                    continue
                with open(path, "rb") as handle:
                    data = handle.read()
            except FileNotFoundError:
                continue  # removed between listing and reading
            except OSError as exc:
                # Unreadable (permissions, I/O): keep what it held, as for a syntax error.
                log.error("cannot read manifest file", file=path, error=str(exc))
                if path in known:
                    signatures[path] = known[path]
                continue
            # A recent mtime is not trusted: recorded as -1, it will not match at the next look.
            signatures[path] = (
                signature if st.st_mtime_ns < racy_after else (st.st_dev, st.st_ino, st.st_size, -1)
            )
            parsed[path] = parse_file(path, data, json=name.endswith(".json"))
    return _Scan(True, signatures, parsed)
