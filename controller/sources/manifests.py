"""Reading Kubernetes manifests (YAML or JSON files, as users keep them) into the objects the mesh reads.

Pure functions, no I/O: bytes in, objects and problems out. Every problem names where it is (file,
document number counted from 1, list item) and what is wrong, so one bad object never hides the others.
Objects come out as Kubernetes would store them: plain JSON types (no YAML timestamps or non-string keys),
the namespace defaulted to ``default`` for namespaced kinds, and no namespace on cluster-scoped kinds.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import yaml

from .base import Obj
from .kinds import KIND_INFO, KindInfo, object_key, split_api_version

DEFAULT_NAMESPACE = "default"

# RFC 1123 subdomain (object names) and label (namespace names), as the API server checks them.
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")


class _Loader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):  # type: ignore[misc]
    """Safe YAML without the timestamp type: Kubernetes keeps ``2024-01-01T00:00:00Z`` as a string."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong with a manifest: where (``origin`` file, ``document`` from 1, 0 = the whole file)."""

    origin: str
    document: int
    message: str

    def __str__(self) -> str:
        where = f"{self.origin}: document {self.document}" if self.document else self.origin
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Manifest:
    """One object of a kind the mesh reads, normalised, with where it came from."""

    kind: str
    key: str
    obj: Obj
    origin: str
    document: int


@dataclass(slots=True)
class ParsedFile:
    """What one file holds. ``complete`` is False when a syntax error stopped reading part-way."""

    objects: list[Manifest] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # "apps/v1 Deployment default/web", for debug logs
    complete: bool = True


class ObjectError(ValueError):
    """One object is unusable; the message names the object (when it has a name) and the field."""


def parse_file(origin: str, data: bytes, *, json: bool = False) -> ParsedFile:
    """Every object in one manifest file: multi-document YAML, a JSON object, or ``kind: List``."""
    result = ParsedFile()
    try:
        for number, doc in _documents(data, json):
            if doc is None:
                continue  # an empty document (a trailing "---")
            for where, item in _expand_list(doc):
                _take(result, origin, number, where, item)
    except _SyntaxError as exc:
        result.complete = False
        result.problems.append(Problem(origin, exc.document, exc.message))
    return result


def normalize(obj: Any, where: str = "") -> tuple[KindInfo, Obj] | None:
    """A copy of ``obj`` as the API server would hold it, or None for a kind the mesh does not read.

    Raises ``ObjectError`` for an object the mesh reads that no API server would accept.
    """
    if not isinstance(obj, dict):
        raise ObjectError(f"{where}expected an object (a mapping), got {_type_name(obj)}")
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        raise ObjectError(f"{where}kind: required, a non-empty string")
    if not isinstance(api_version, str) or not api_version:
        raise ObjectError(f"{where}apiVersion: required for kind {kind}, a string such as 'v1'")
    info = KIND_INFO.get(kind)
    group, version = split_api_version(api_version)
    if info is None or info.group != group:
        return None  # not ours: a Deployment, or someone else's kind that shares a name
    if version not in info.versions:
        served = ", ".join(info.api_version(v) for v in info.versions)
        raise ObjectError(f"{where}apiVersion: {api_version} is not supported for {kind}; use {served}")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise ObjectError(f"{where}{kind}: metadata: required, a mapping with at least a name")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ObjectError(f"{where}{kind}: metadata.name: required, a non-empty string")
    pattern = _SUBDOMAIN if info.namespaced else _LABEL
    if len(name) > 253 or not pattern.match(name):
        raise ObjectError(
            f"{where}{kind} {name!r}: metadata.name: must be lower-case letters, digits, '-'"
            + (" and '.'" if info.namespaced else "")
            + ", starting and ending with a letter or digit"
        )
    meta = dict(meta)
    if info.namespaced:
        namespace = meta.get("namespace")
        if namespace is None or namespace == "":
            meta["namespace"] = DEFAULT_NAMESPACE
        elif not isinstance(namespace, str) or not _LABEL.match(namespace):
            raise ObjectError(
                f"{where}{kind} {name}: metadata.namespace: {namespace!r} is not a valid namespace name"
            )
    else:
        meta.pop("namespace", None)  # the API server ignores it on cluster-scoped kinds
    label = f"{kind} {meta.get('namespace', '')}/{name}" if info.namespaced else f"{kind} {name}"
    for field_name in ("labels", "annotations"):
        _check_string_map(meta.get(field_name), f"{where}{label}: metadata.{field_name}")
    normalized = _jsonable(obj)
    normalized["metadata"] = _jsonable(meta)
    return info, normalized


def _take(result: ParsedFile, origin: str, number: int, where: str, doc: Any) -> None:
    try:
        normalized = normalize(doc, where)
    except ObjectError as exc:
        result.problems.append(Problem(origin, number, str(exc)))
        return
    if normalized is None:
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        result.ignored.append(f"{doc.get('apiVersion')} {doc.get('kind')} {object_key({'metadata': meta})}")
        return
    info, obj = normalized
    result.objects.append(Manifest(info.kind, object_key(obj), obj, origin, number))


def _expand_list(doc: Any) -> Iterator[tuple[str, Any]]:
    """A ``List`` (or ``ServiceList`` as ``kubectl get -o yaml`` writes) is its items; else the doc itself."""
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        items = doc["items"]
        if not isinstance(items, list):
            yield f"{kind}.items: ", items  # normalize() reports it as not an object
            return
        for index, item in enumerate(items):
            yield f"items[{index}]: ", item
    else:
        yield "", doc


class _SyntaxError(Exception):
    def __init__(self, document: int, message: str) -> None:
        super().__init__(message)
        self.document = document
        self.message = message


def _documents(data: bytes, json: bool) -> Iterator[tuple[int, Any]]:
    if json:
        try:
            yield 1, orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise _SyntaxError(1, f"JSON syntax error: {exc}") from None
        return
    number = 0
    try:
        for number, doc in enumerate(yaml.load_all(data, Loader=_Loader), start=1):
            yield number, doc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        # The failing document is the one after the last that loaded.
        raise _SyntaxError(number + 1, f"YAML syntax error{at}: {problem}") from None


def _check_string_map(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise ObjectError(f"{where}: must be a mapping of strings, got {_type_name(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise ObjectError(
                f"{where}.{key}: must be a string, got {_type_name(item)} {item!r} (quote it in YAML)"
            )


def _jsonable(value: Any) -> Any:
    """What Kubernetes' YAML-to-JSON conversion makes of a YAML value: JSON types, string keys."""
    if isinstance(value, dict):
        return {_json_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):  # !!binary
        return base64.b64encode(value).decode()
    if isinstance(value, datetime.date):  # an explicit !!timestamp tag
        return value.isoformat()
    return value


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
