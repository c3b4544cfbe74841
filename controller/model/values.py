"""Small immutable value types shared by every resource: maps, durations, string matches, keys."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal, NamedTuple, TypeVar

import msgspec

V = TypeVar("V")


class FrozenMap(Mapping[str, V]):
    """An immutable, hashable str-keyed mapping (labels, selectors, header maps).

    Equality is dict equality; the hash is computed once, because maps are compared and hashed
    whenever a resource that holds them is.
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, V] | None = None) -> None:
        self._data: dict[str, V] = dict(data) if data else {}
        self._hash: int | None = None

    def __getitem__(self, key: str) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if isinstance(other, FrozenMap):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def matches(self, selector: Mapping[str, str]) -> bool:
        """True when every key/value of ``selector`` is present here (Kubernetes label selection)."""
        data = self._data
        return all(data.get(k) == v for k, v in selector.items())


EMPTY_MAP: FrozenMap[Any] = FrozenMap()


def frozen_map(data: Mapping[str, Any] | None) -> FrozenMap[Any]:
    """A FrozenMap of ``data``, sharing one empty instance (most objects have no such map)."""
    return FrozenMap(data) if data else EMPTY_MAP


def str_map(data: Mapping[str, Any] | None) -> FrozenMap[str]:
    """Labels and annotations: values coerced to str, as the API server stores them."""
    if not data:
        return EMPTY_MAP
    return FrozenMap({str(k): str(v) for k, v in data.items()})


# Go's time.ParseDuration grammar, which Istio's CRD validation (CEL duration()) accepts: "1.5s", "100ms",
# "1m", "1h30m". A sign is not allowed: every Istio duration is non-negative.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NANOS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


class Duration(msgspec.Struct, frozen=True, order=True, gc=False):
    """A non-negative duration held exactly in nanoseconds (Envoy's protobuf Duration is seconds + nanos)."""

    nanos: int

    @property
    def seconds(self) -> float:
        return self.nanos / 1e9

    @property
    def millis(self) -> float:
        return self.nanos / 1e6

    def proto_parts(self) -> tuple[int, int]:
        """(seconds, nanos) as google.protobuf.Duration wants them."""
        return divmod(self.nanos, 1_000_000_000)

    def __str__(self) -> str:
        seconds, nanos = self.proto_parts()
        if nanos == 0:
            return f"{seconds}s"
        return f"{seconds}.{nanos:09d}".rstrip("0") + "s"


def parse_duration(text: str) -> Duration:
    """Parse Istio's string form of a duration ("1.5s", "100ms", "1m", "1h30m").

    Raises ValueError with a short reason when the text is not a duration.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("must be a duration string such as 1.5s or 100ms")
    if text == "0":
        return Duration(0)
    pos = 0
    total = 0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        number, unit = m.group(1), m.group(2)
        whole, _, frac = number.partition(".")
        scale = _UNIT_NANOS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid duration {text!r} (expected e.g. 1.5s, 100ms, 1m)")
    return Duration(total)


class ResourceKey(NamedTuple):
    """Identity of one Kubernetes object: kind, namespace (empty for cluster-scoped) and name.

    A NamedTuple: keys are hashed and compared on every index lookup, where tuples are the cheapest.
    """

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


MatchKind = Literal["exact", "prefix", "regex"]


class StringMatch(msgspec.Struct, frozen=True, gc=False):
    """Istio's StringMatch oneof: exactly one of exact, prefix or regex (RE2 syntax)."""

    kind: MatchKind
    value: str

    def matches(self, text: str) -> bool:
        """Reference semantics for tests and local tools; the proxy compiles its own matchers."""
        if self.kind == "exact":
            return text == self.value
        if self.kind == "prefix":
            return text.startswith(self.value)
        return re.fullmatch(self.value, text) is not None


def string_match(raw: Mapping[str, Any] | None) -> StringMatch | None:
    """Build a StringMatch from its raw form; validation has already checked that one key is set."""
    if not raw:
        return None
    for kind in ("exact", "prefix", "regex"):
        if kind in raw:
            return StringMatch(kind, str(raw[kind]))  # type: ignore[arg-type]
    return None


def string_match_map(raw: Mapping[str, Any] | None) -> FrozenMap[StringMatch]:
    """Header / query-parameter maps: name -> StringMatch (entries that are empty mean "present")."""
    if not raw:
        return EMPTY_MAP
    out: dict[str, StringMatch] = {}
    for name, value in raw.items():
        # An empty StringMatch ({}) in Istio means "the header is present with any value".
        out[str(name)] = string_match(value) or StringMatch("regex", ".*")
    return FrozenMap(out)


def percentage(raw: Any) -> float | None:
    """Istio's Percent {value: 0.0-100.0} as a float, or None when unset."""
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        value = raw.get("value")
        return float(value) if value is not None else 0.0
    return float(raw)


def duration_or_none(raw: Any) -> Duration | None:
    return parse_duration(raw) if raw is not None else None


def str_tuple(raw: Any) -> tuple[str, ...]:
    return tuple(str(x) for x in raw) if raw else ()


def int_or_none(raw: Any) -> int | None:
    return int(raw) if raw is not None else None
