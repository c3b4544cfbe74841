"""The push log: for each push, which resources changed for which proxy, and which config change caused it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from controller.xds.resources import SHORT_NAMES

MAX_NAMES = 50  # per entry; the count is always exact


class PushLog:
    def __init__(self, size: int = 2000) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)

    def record(
        self,
        proxy: str,
        type_url: str,
        nonce: str,
        changed: Iterable[str],
        removed: Iterable[str],
        causes: Iterable[object],
        version: int,
    ) -> None:
        changed, removed = sorted(changed), sorted(removed)
        self.entries.append(
            {
                "time": time.time(),
                "proxy": proxy,
                "type": SHORT_NAMES.get(type_url, type_url),
                "nonce": nonce,
                "snapshot": version,
                "changed": changed[:MAX_NAMES],
                "changed_count": len(changed),
                "removed": removed[:MAX_NAMES],
                "removed_count": len(removed),
                "causes": [str(c) for c in causes][:MAX_NAMES],
            }
        )

    def tail(self, limit: int = 200, proxy: str | None = None) -> list[dict[str, Any]]:
        items = [e for e in self.entries if proxy is None or e["proxy"] == proxy]
        return items[-limit:]
