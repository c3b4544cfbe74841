"""Writes (create, update, merge patch, delete) with the API server's checks, and the shape objects are
served in. Deletion is immediate: finalizers, grace periods and the namespace cascade are not modelled."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import status as st
from .resources import ResourceDef
from .storage import Storage

Obj = dict[str, Any]

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_NAME_RULE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)


@dataclass(frozen=True)
class Target:
    """What a request path names: a resource at a version, maybe a namespace, maybe one object."""

    resource: ResourceDef
    version: str
    namespace: str | None
    name: str | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace or "", self.name or "")

    def view(self, obj: Obj) -> Obj:
        """``obj`` as served at the requested version (CRD versions differ only in apiVersion here)."""
        return {**obj, "kind": self.resource.kind, "apiVersion": self.resource.api_version(self.version)}

    def list_item(self, obj: Obj) -> Obj:
        """Lists of built-in kinds leave kind and apiVersion off their items; CRD lists keep them."""
        if self.resource.builtin:
            return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
        return self.view(obj)


class Objects:
    """The write path over a ``Storage``."""

    def __init__(self, storage: Storage, resources: Mapping[tuple[str, str], ResourceDef]) -> None:
        self._storage = storage
        self._resources = resources

    def existing(self, target: Target) -> Obj:
        obj = self._storage.get(target.resource.group_resource, target.key)
        if obj is None:
            raise st.not_found(target.resource.plural, target.name or "", target.resource.group)
        return obj

    def create(self, target: Target, body: Obj) -> Obj:
        return self.store(target, self.prepare_create(target, body))

    def store(self, target: Target, obj: Obj) -> Obj:
        """Writes an object ``prepare_create``/``prepare_update`` made (after admission, in the server)."""
        meta = obj["metadata"]
        return self._storage.put(
            target.resource.group_resource, (meta.get("namespace", ""), meta["name"]), obj
        ).obj

    def prepare_create(self, target: Target, body: Obj) -> Obj:
        """The object a create would store: checked, named (generateName), stamped; not yet stored."""
        resource = target.resource
        obj = self._checked(target, body)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        name = meta.get("name")
        if not name:
            cause = (
                "FieldValueRequired",
                "metadata.name",
                "Required value: name or generateName is required",
            )
            raise st.invalid(resource.kind, resource.group, "", [cause])
        if not isinstance(name, str) or len(name) > 253 or not _NAME.match(name):
            cause = ("FieldValueInvalid", "metadata.name", f"Invalid value: {name!r}: {_NAME_RULE}")
            raise st.invalid(resource.kind, resource.group, str(name), [cause])
        namespace = ""
        if resource.namespaced:
            namespace = target.namespace or meta.get("namespace") or "default"
            meta["namespace"] = namespace
            # The NamespaceLifecycle admission plugin: objects only go into namespaces that exist.
            namespaces_served = ("", "namespaces") in self._resources
            if namespaces_served and self._storage.get("namespaces", ("", namespace)) is None:
                raise st.not_found("namespaces", namespace)
        else:
            meta.pop("namespace", None)
        if self._storage.get(resource.group_resource, (namespace, name)) is not None:
            raise st.already_exists(resource.plural, name, resource.group)
        meta.pop("resourceVersion", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        meta["generation"] = 1
        _namespace_label(resource, meta)
        return obj

    def update(self, target: Target, body: Obj, *, patch: bool = False) -> Obj:
        obj = self.prepare_update(target, body, patch=patch)
        existing = self.existing(target)
        return existing if obj == existing else self.store(target, obj)

    def prepare_update(self, target: Target, body: Obj, *, patch: bool = False) -> Obj:
        """The object an update would store (equal to the stored one for a no-op write); not yet stored."""
        resource = target.resource
        existing = self.existing(target)
        obj = self._checked(target, body)
        meta = obj["metadata"]
        if meta.get("name") not in (None, target.name):
            raise st.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                f"({target.name})"
            )
        rv = meta.get("resourceVersion")
        current_rv = existing["metadata"]["resourceVersion"]
        if rv and rv != current_rv:
            raise st.conflict(resource.plural, target.name or "", resource.group)
        if not rv and not patch and not resource.builtin:
            # Custom resources do not allow unconditional updates.
            cause = (
                "FieldValueInvalid",
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            )
            raise st.invalid(resource.kind, resource.group, target.name or "", [cause])
        old_meta = existing["metadata"]
        meta.update(
            name=target.name,
            uid=old_meta["uid"],
            creationTimestamp=old_meta["creationTimestamp"],
            resourceVersion=current_rv,
            generation=old_meta.get("generation", 1),
        )
        if resource.namespaced:
            meta["namespace"] = target.namespace
        _namespace_label(resource, meta)
        if obj == existing:
            return existing  # a no-op write: no new revision, no event
        if _spec(obj) != _spec(existing):
            meta["generation"] = old_meta.get("generation", 1) + 1
        return obj

    def merge_patch(self, target: Target, patch: Obj) -> Obj:
        return self.update(target, merge_patch(self.existing(target), patch), patch=True)

    def delete(self, target: Target) -> Obj:
        self.existing(target)
        return self._storage.delete(target.resource.group_resource, target.key).obj

    def _checked(self, target: Target, obj: Obj) -> Obj:
        """A copy of the body with kind/apiVersion checked and set to the storage version."""
        resource = target.resource
        expected = resource.api_version(target.version)
        if obj.get("apiVersion") not in (None, expected):
            raise st.bad_request(
                f"the API version in the data ({obj.get('apiVersion')}) does not match the expected "
                f"API version ({expected})"
            )
        if obj.get("kind") not in (None, resource.kind):
            raise st.bad_request(
                f"the kind in the data ({obj.get('kind')}) does not match the expected kind ({resource.kind})"
            )
        meta = obj.get("metadata")
        meta = dict(meta) if isinstance(meta, dict) else {}
        body_namespace = meta.get("namespace")
        if resource.namespaced and body_namespace and target.namespace and body_namespace != target.namespace:
            raise st.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        storage_version = resource.api_version(resource.versions[0])
        return {**obj, "kind": resource.kind, "apiVersion": storage_version, "metadata": meta}


def _namespace_label(resource: ResourceDef, meta: Obj) -> None:
    """The API server labels every Namespace with its own name (``kubernetes.io/metadata.name``), which
    selectors such as the injection webhook's namespaceSelector rely on."""
    if resource.group_resource == "namespaces":
        meta["labels"] = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": meta["name"]}


def _spec(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
