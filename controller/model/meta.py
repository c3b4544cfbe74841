"""Reading the parts of a raw Kubernetes object that every model object shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from controller.model.values import FrozenMap, ResourceKey, str_map

# Objects from the files source may omit the namespace; kubectl would put them in "default".
DEFAULT_NAMESPACE = "default"

CLUSTER_SCOPED_KINDS = frozenset({"Namespace"})


class ObjectMeta(msgspec.Struct, frozen=True, gc=False):
    """The metadata the mesh uses. resourceVersion is left out on purpose: a status-only update must not
    change the model, so equal specs give equal objects."""

    name: str
    namespace: str
    labels: FrozenMap[str]
    annotations: FrozenMap[str]
    # RFC 3339 text sorts in time order; Istio breaks conflicts between resources by age.
    creation_timestamp: str


def metadata_of(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = raw.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def namespace_of(raw: Mapping[str, Any]) -> str:
    if raw.get("kind") in CLUSTER_SCOPED_KINDS:
        return ""
    return str(metadata_of(raw).get("namespace") or DEFAULT_NAMESPACE)


def key_of(raw: Mapping[str, Any]) -> ResourceKey:
    """The ResourceKey of a raw object (which may be invalid: missing parts become empty strings)."""
    return ResourceKey(str(raw.get("kind") or ""), namespace_of(raw), str(metadata_of(raw).get("name") or ""))


def object_meta(raw: Mapping[str, Any], *, keep_annotations: bool = False) -> ObjectMeta:
    """ObjectMeta of a raw object; annotations are kept only for kinds whose annotations carry meaning
    (Pods, Services), since most objects carry large kubectl annotations that would only cost memory."""
    meta = metadata_of(raw)
    return ObjectMeta(
        name=str(meta.get("name") or ""),
        namespace=namespace_of(raw),
        labels=str_map(meta.get("labels")),
        annotations=str_map(meta.get("annotations")) if keep_annotations else str_map(None),
        creation_timestamp=str(meta.get("creationTimestamp") or ""),
    )


def spec_of(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = raw.get("spec")
    return spec if isinstance(spec, Mapping) else {}
