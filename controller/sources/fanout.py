"""Handing batches of changes to a source's subscribers, one failing handler never starving the others."""

from __future__ import annotations

from collections.abc import Sequence

from mizzen import logs

from .base import Change, ChangeHandler

log = logs.get("sources")


class ChangeFanout:
    """The subscriber list of a source. Handlers run in subscription order, on the caller's thread."""

    def __init__(self) -> None:
        self._handlers: list[ChangeHandler] = []

    def subscribe(self, handler: ChangeHandler) -> None:
        self._handlers.append(handler)

    def publish(self, batch: Sequence[Change]) -> None:
        if not batch:
            return
        for handler in list(self._handlers):
            try:
                handler(batch)
            except Exception:
                # A handler's bug must not stop the source or the other subscribers; it is loud in the log.
                log.exception("change handler failed", handler=repr(handler), changes=len(batch))
