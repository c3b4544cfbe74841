"""The seam between a Reflector and wherever objects come from.

A ``ListerWatcher`` lists one page at a time and watches from a resourceVersion, speaking in raw dicts (the
Kubernetes JSON shapes). The kube source implements it over HTTP; a files source can implement it over a
directory and reuse the same Reflector, queue, store and informer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

Obj = dict[str, Any]
"""A Kubernetes object as decoded JSON. Objects handed out by the informer are shared: never mutate them."""

# Watch event types, as the API server spells them.
ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
BOOKMARK = "BOOKMARK"
ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class ListOptions:
    """One LIST request. ``resource_version`` "" asks for a consistent (quorum) read, "0" for any state."""

    resource_version: str = ""
    resource_version_match: str = ""
    limit: int = 0
    continue_token: str = ""


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a LIST: its items, the list's resourceVersion and the next page's token ("" = last)."""

    items: list[Obj]
    resource_version: str
    continue_token: str = ""


@dataclass(frozen=True, slots=True)
class WatchOptions:
    """One WATCH request: events after ``resource_version``, ended by the server after ``timeout_seconds``."""

    resource_version: str
    timeout_seconds: int
    allow_bookmarks: bool = True


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One line of a watch stream: ``type`` is ADDED, MODIFIED, DELETED, BOOKMARK or ERROR."""

    type: str
    object: Obj


class ListerWatcher(Protocol):
    """Lists pages and watches one kind of object."""

    async def list(self, options: ListOptions) -> ListPage:
        """One page; raises ``ApiError`` when the server answers with a failure Status, ``TransportError``
        when it cannot be reached or does not answer in time."""
        ...

    def watch(self, options: WatchOptions) -> AsyncIterator[WatchEvent]:
        """Events until the server ends the stream. ERROR events are yielded, not raised: the Reflector
        decides what they mean. A refused request raises ``ApiError``; a broken connection, or one silent for
        longer than the read timeout, raises ``StreamInterrupted``."""
        ...


@dataclass(eq=False)
class ApiError(Exception):
    """A failure the API server described with a ``Status`` object (or one we made up in the same shape)."""

    status: Obj
    retry_after: float | None = None

    def __post_init__(self) -> None:
        super().__init__(f"{self.code} {self.reason}: {self.message}")

    @classmethod
    def from_status(cls, status: Obj, retry_after: float | None = None) -> ApiError:
        """From a ``Status`` body; ``retry_after`` (the header) wins over ``details.retryAfterSeconds``."""
        if retry_after is None:
            seconds = (status.get("details") or {}).get("retryAfterSeconds")
            retry_after = float(seconds) if seconds else None
        return cls(status, retry_after)

    @classmethod
    def synthetic(cls, code: int, reason: str, message: str) -> ApiError:
        """For answers that carried no Status body (a proxy's HTML error page, an empty 503)."""
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
        return cls({**status, "message": message, "reason": reason, "code": code})

    @property
    def code(self) -> int:
        return int(self.status.get("code") or 0)

    @property
    def reason(self) -> str:
        return str(self.status.get("reason") or "")

    @property
    def message(self) -> str:
        return str(self.status.get("message") or "")

    @property
    def causes(self) -> list[Obj]:
        return list((self.status.get("details") or {}).get("causes") or [])


class StreamInterrupted(Exception):
    """The watch connection ended without the server closing the stream cleanly (reset, truncated chunk,
    undecodable line, or silence past the read timeout: a half-open connection). Nothing the server
    sent before it is lost, so the Reflector re-watches from the last resourceVersion it saw."""


class TransportError(Exception):
    """The request did not get an answer: connection refused or reset, TLS failure, or a timeout."""
