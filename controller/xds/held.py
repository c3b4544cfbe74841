"""What a proxy holds, stored as a difference from a map shared by many proxies.

After the initial sync every proxy of a scope holds the same names at the same versions; a thousand
proxies would otherwise keep a thousand copies of a thousand-entry dict per type. A :class:`HeldVersions`
points at one shared, never-mutated base and keeps only its own differences.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

_MISSING: Any = object()
_EMPTY: Mapping[str, str] = {}
# Past this many private differences, a proxy re-bases on the current shared map.
REBASE_AFTER = 64


class HeldVersions:
    __slots__ = ("base", "over")

    def __init__(self, base: Mapping[str, str] = _EMPTY) -> None:
        self.base = base
        self.over: dict[str, str | None] = {}  # name -> version, or None: removed from the base

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.over.get(name, _MISSING)
        if value is _MISSING:
            return self.base.get(name, default)
        return default if value is None else value  # type: ignore[no-any-return]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __setitem__(self, name: str, version: str) -> None:
        if self.base.get(name) == version:
            self.over.pop(name, None)
        else:
            self.over[name] = version

    def pop(self, name: str, default: str | None = None) -> str | None:
        old = self.get(name)
        if name in self.base:
            self.over[name] = None
        else:
            self.over.pop(name, None)
        return default if old is None else old

    def __iter__(self) -> Iterator[str]:
        over = self.over
        for name in self.base:
            if over.get(name, "") is not None:
                yield name
        for name, version in over.items():
            if version is not None and name not in self.base:
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def keys(self) -> Iterator[str]:
        return iter(self)

    def items(self) -> Iterator[tuple[str, str]]:
        for name in self:
            yield name, self.get(name)  # type: ignore[misc]

    def rebase(self, base: Mapping[str, str]) -> None:
        """Point at a newer shared map, keeping what this proxy holds unchanged."""
        if base is self.base:
            return
        current = dict(self.items())
        self.base = base
        self.over = {name: version for name, version in current.items() if base.get(name) != version}
        for name in base:
            if name not in current:
                self.over[name] = None

    def clear(self) -> None:
        self.base = _EMPTY
        self.over = {}
