"""LIST: the resourceVersion rules of the API concepts page, continue tokens, selectors.

- resourceVersion unset: the most recent state (a consistent read), paged with ``limit``/``continue``;
- "0": any state (the watch cache): ``limit`` is ignored, everything comes in one page;
- "N" with ``resourceVersionMatch=Exact`` (or, the legacy rule, no match but a ``limit``): the state at N,
  410 if N was compacted, 504 "Too large resource version" if N is in the future;
- "N" with ``NotOlderThan`` (or no match and no limit): the current state, after waiting up to
  ``block_timeout`` for the server to reach N, else 504;
- ``continue``: the next page of the first page's snapshot; 410 Expired once it is compacted, with an
  inconsistent continuation token in the Status's metadata.
A list with selectors and a ``limit`` filters before paging (simplified: the real one can return short
pages) and then leaves out ``remainingItemCount``, as the real one does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Callable
from typing import Any

import orjson

from . import status as st
from .objects import Target
from .resources import ResourceDef
from .selectors import parse_field_selector, parse_label_selector
from .storage import CompactedError, Key, Storage

Obj = dict[str, Any]

_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results. Continuing with the provided token results in an inconsistent list - objects "
    "that were created, modified, or deleted between the time the first chunk was returned and now may show "
    "up in the list."
)
_LIST_TOO_OLD = "The resourceVersion for the provided list is too old."


class Lister:
    def __init__(self, storage: Storage, block_timeout: float) -> None:
        self._storage = storage
        self.block_timeout = block_timeout
        self._revision_moved = asyncio.Event()

    def revision_moved(self) -> None:
        self._revision_moved.set()

    async def list(self, target: Target, query: dict[str, str]) -> Obj:
        resource = target.resource
        storage = self._storage
        rv = query.get("resourceVersion", "")
        match = query.get("resourceVersionMatch", "")
        token = query.get("continue", "")
        limit = int_param(query, "limit")
        validate_list_options(rv, match, token)
        matches = predicate(resource, query)

        start = ""
        if token:
            if rv not in ("", "0"):
                raise st.bad_request("specifying resource version is not allowed when using continue")
            snapshot, start = _decode_continue(token)
            if snapshot == -1:
                snapshot = storage.revision  # the inconsistent continuation a 410 hands out
            try:
                state = storage.at(resource.group_resource, snapshot)
            except CompactedError:
                raise st.expired(_CONTINUE_EXPIRED, _encode_continue(-1, start)) from None
            list_rv = snapshot
        elif rv in ("", "0"):
            state = storage.current(resource.group_resource)
            list_rv = storage.revision
            if rv == "0":
                limit = 0  # served from the watch cache, which does not page
        else:
            requested = parse_rv(rv)
            if match == "Exact" or (match == "" and limit > 0):
                if requested > storage.revision:
                    raise st.too_large_resource_version(requested, storage.revision)
                try:
                    state = storage.at(resource.group_resource, requested)
                except CompactedError:
                    raise st.expired(_LIST_TOO_OLD) from None
                list_rv = requested
            else:
                await self._wait_for_revision(requested)
                state = storage.current(resource.group_resource)
                list_rv = storage.revision

        keys = sorted(k for k in state if target.namespace is None or k[0] == target.namespace)
        if start:
            keys = [k for k in keys if _key_text(k) >= start]
        selected = [k for k in keys if matches(state[k])]
        meta: Obj = {"resourceVersion": str(list_rv)}
        page = selected
        if limit and len(selected) > limit:
            page, rest = selected[:limit], selected[limit:]
            meta["continue"] = _encode_continue(list_rv, _key_text(rest[0]))
            if not query.get("labelSelector") and not query.get("fieldSelector"):
                meta["remainingItemCount"] = len(rest)
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version(target.version),
            "metadata": meta,
            "items": [target.list_item(state[k]) for k in page],
        }

    async def _wait_for_revision(self, requested: int) -> None:
        deadline = time.monotonic() + self.block_timeout
        while self._storage.revision < requested:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise st.too_large_resource_version(requested, self._storage.revision)
            self._revision_moved.clear()
            try:
                await asyncio.wait_for(self._revision_moved.wait(), remaining)
            except TimeoutError:
                pass


def predicate(resource: ResourceDef, query: dict[str, str]) -> Callable[[Obj], bool]:
    label = parse_label_selector(query.get("labelSelector", ""))
    fields = parse_field_selector(query.get("fieldSelector", ""), resource.fields)
    return lambda obj: label(obj) and fields(obj)


def int_param(query: dict[str, str], name: str) -> int:
    value = query.get(name, "")
    if not value:
        return 0
    try:
        return int(value)
    except ValueError:
        raise st.bad_request(f"{name}: invalid value {value!r}: must be an integer") from None


def parse_rv(rv: str) -> int:
    try:
        value = int(rv)
    except ValueError:
        value = -1
    if value < 0:
        raise st.bad_request(f"invalid resource version: {rv!r}")
    return value


def invalid_list_options(reason: str, field: str, message: str) -> st.StatusError:
    """422 for ListOptions, as apimachinery's validation renders a field error."""
    label = {"FieldValueForbidden": "Forbidden", "FieldValueNotSupported": "Unsupported value"}[reason]
    details = {
        "group": "meta.k8s.io",
        "kind": "ListOptions",
        "causes": [{"reason": reason, "message": f"{label}: {message}", "field": field}],
    }
    text = f'ListOptions.meta.k8s.io "" is invalid: {field}: {label}: {message}'
    return st.StatusError(st.status(422, "Invalid", text, details))


def validate_list_options(rv: str, match: str, token: str) -> None:
    """apimachinery's ValidateListOptions for a LIST."""
    if not match:
        return
    field = "resourceVersionMatch"
    if not rv:
        raise invalid_list_options(
            "FieldValueForbidden",
            field,
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        )
    if token:
        raise invalid_list_options(
            "FieldValueForbidden", field, "resourceVersionMatch is forbidden when continue is provided"
        )
    if match not in ("Exact", "NotOlderThan"):
        supported = 'supported values: "Exact", "NotOlderThan", ""'
        raise invalid_list_options("FieldValueNotSupported", field, f'"{match}": {supported}')
    if match == "Exact" and rv == "0":
        raise invalid_list_options(
            "FieldValueForbidden", field, 'resourceVersionMatch "exact" is forbidden for resourceVersion "0"'
        )


def _key_text(key: Key) -> str:
    return f"{key[0]}/{key[1]}" if key[0] else key[1]


def _encode_continue(revision: int, start: str) -> str:
    """The API server's token shape: base64url JSON of version, revision and the key to start from."""
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": start})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError("unknown version")
        return int(data["rv"]), str(data["start"])
    except (binascii.Error, orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise st.bad_request(f"continue key is not valid: {exc}") from None
