"""Server-side apply and JSON patch for the API test server.

Server-side apply (PATCH ``application/apply-patch+yaml``, ``?fieldManager=`` required): creates the object
when it does not exist, else merges the applied configuration into it (maps merge, lists are replaced
whole) and removes the fields this manager applied before but no longer applies, so a re-apply converges
and other managers' fields (a controller's ``caBundle``) survive. The manager is recorded in
``metadata.managedFields`` (operation Apply). Simplified: ownership is tracked per manager as the set of
field paths it applied; lists whose items all have a ``name`` merge by it (the real server's associative
lists), other lists are atomic, and list items a manager stops applying are not removed; conflicts with
other managers are not raised (as with ``force=true``).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import jsonpatch
import yaml

from . import status as st

Obj = dict[str, Any]
Paths = set[tuple[str, ...]]


def parse_apply_body(data: bytes) -> Obj:
    try:
        obj = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise st.bad_request(f"error decoding YAML: {exc}") from None
    if not isinstance(obj, dict):
        raise st.bad_request("the applied configuration must be an object")
    return obj


def leaf_paths(obj: Any, prefix: tuple[str, ...] = ()) -> Paths:
    """The field paths an applied configuration sets (maps walked, lists and scalars as leaves)."""
    if isinstance(obj, dict) and obj:
        out: Paths = set()
        for key, value in obj.items():
            out |= leaf_paths(value, (*prefix, str(key)))
        return out
    return {prefix} if prefix else set()


def _merge(live: Any, applied: Any) -> Any:
    if isinstance(live, dict) and isinstance(applied, dict):
        out = dict(live)
        for key, value in applied.items():
            out[key] = _merge(live.get(key), value)
        return out
    if _named_list(live) and _named_list(applied):
        # Lists keyed by name (webhooks, containers, ports...) merge item by item, as the real server's
        # associative lists do; items only the live object has are kept.
        by_name = {item["name"]: item for item in live}
        merged = [_merge(by_name.get(item["name"]), item) for item in applied]
        applied_names = {item["name"] for item in applied}
        return merged + [item for item in live if item["name"] not in applied_names]
    return copy.deepcopy(applied)


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, dict) and "name" in i for i in value)


def _remove(obj: Obj, path: tuple[str, ...]) -> None:
    node: Any = obj
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(path[-1], None)


def apply(live: Obj, applied: Obj, previous: Paths) -> tuple[Obj, Paths]:
    """The object after ``applied`` replaces what this manager set before (``previous``)."""
    now = leaf_paths({k: v for k, v in applied.items() if k not in ("apiVersion", "kind")})
    merged = _merge(live, applied)
    for path in previous - now:
        if path[:1] != ("metadata",) or path[:2] in (("metadata", "labels"), ("metadata", "annotations")):
            _remove(merged, path)
    return merged, now


def managed_entry(manager: str, api_version: str, operation: str = "Apply") -> Obj:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fieldsType": "FieldsV1",
        "fieldsV1": {},
    }


def json_patch(live: Obj, ops: Any) -> Obj:
    """RFC 6902 (PATCH ``application/json-patch+json``); a failed ``test`` or bad path is a 422."""
    if not isinstance(ops, list):
        raise st.bad_request("a JSON patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(live, ops)  # type: ignore[no-any-return]
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise st.StatusError(st.status(422, "Invalid", f"the patch cannot be applied: {exc}")) from None
