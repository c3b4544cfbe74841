"""The policies a VirtualService route or a DestinationRule carries besides where traffic goes: faults,
mirrors, header changes, redirects, direct responses, CORS; consistent hashing and locality balancing.

Built from raw objects validation has accepted (so shapes are known good); percentages are floats in
0-100, durations exact, and Istio's defaults are applied here once (a mirror without a percentage mirrors
everything; a fault without one injects nothing).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import msgspec

from controller.model.values import (
    Duration,
    FrozenMap,
    StringMatch,
    duration_or_none,
    int_or_none,
    percentage,
    str_tuple,
    string_match,
)

# gRPC status names (Istio's abort.grpcStatus spells them) -> codes.
GRPC_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}


# --- VirtualService route policies ------------------------------------------------------------------------


class HeaderOperations(msgspec.Struct, frozen=True, gc=False):
    set: FrozenMap[str]
    add: FrozenMap[str]
    remove: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.set and not self.add and not self.remove


class Headers(msgspec.Struct, frozen=True, gc=False):
    request: HeaderOperations | None
    response: HeaderOperations | None


class Fault(msgspec.Struct, frozen=True, gc=False):
    delay: Duration | None
    delay_percent: float  # 0-100
    abort_http: int | None
    abort_grpc: int | None  # a gRPC status code
    abort_percent: float


class Mirror(msgspec.Struct, frozen=True, gc=False):
    host: str
    subset: str | None
    port: int | None
    percent: float  # 0-100; Istio mirrors everything when unset


class Redirect(msgspec.Struct, frozen=True, gc=False):
    uri: str | None
    authority: str | None
    port: int | None
    derive_port: str | None  # FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT
    scheme: str | None
    code: int


class DirectResponse(msgspec.Struct, frozen=True, gc=False):
    status: int
    body: bytes | None


class CorsPolicy(msgspec.Struct, frozen=True, gc=False):
    allow_origins: tuple[StringMatch, ...]
    allow_methods: tuple[str, ...]
    allow_headers: tuple[str, ...]
    expose_headers: tuple[str, ...]
    max_age: Duration | None
    allow_credentials: bool | None
    unmatched_preflights: str  # FORWARD or IGNORE


class Delegate(msgspec.Struct, frozen=True, gc=False):
    name: str
    namespace: str


def _operations(raw: Mapping[str, Any] | None) -> HeaderOperations | None:
    if not raw:
        return None
    ops = HeaderOperations(
        set=FrozenMap({str(k).lower(): str(v) for k, v in (raw.get("set") or {}).items()}),
        add=FrozenMap({str(k).lower(): str(v) for k, v in (raw.get("add") or {}).items()}),
        remove=tuple(str(x).lower() for x in raw.get("remove") or ()),
    )
    return None if ops.empty else ops


def build_headers(raw: Mapping[str, Any] | None) -> Headers | None:
    if not raw:
        return None
    out = Headers(request=_operations(raw.get("request")), response=_operations(raw.get("response")))
    return None if out.request is None and out.response is None else out


def _percent(raw: Mapping[str, Any], default: float) -> float:
    """``percentage: {value}``, else the deprecated integer ``percent``, else ``default``."""
    value = percentage(raw.get("percentage"))
    if value is None and raw.get("percent") is not None:
        value = float(raw["percent"])
    return default if value is None else value


def build_fault(raw: Mapping[str, Any] | None) -> Fault | None:
    if not raw:
        return None
    delay = raw.get("delay") or {}
    abort = raw.get("abort") or {}
    grpc = abort.get("grpcStatus")
    return Fault(
        delay=duration_or_none(delay.get("fixedDelay")),
        delay_percent=_percent(delay, 0.0) if delay else 0.0,
        abort_http=int_or_none(abort.get("httpStatus")),
        abort_grpc=grpc_code(grpc) if grpc is not None else None,
        abort_percent=_percent(abort, 0.0) if abort else 0.0,
    )


def grpc_code(value: Any) -> int:
    """A gRPC status by name (``UNAVAILABLE``) or number; validation has checked it is one."""
    text = str(value).strip()
    return int(text) if text.isdigit() else GRPC_CODES[text.upper()]


def build_mirrors(raw: Mapping[str, Any], resolve: Any) -> tuple[Mirror, ...]:
    """``mirrors`` (each with its own percentage), or the single ``mirror`` with ``mirrorPercentage``
    (or the deprecated integer ``mirrorPercent``); 100% when no percentage is given."""
    out: list[Mirror] = []
    for item in raw.get("mirrors") or ():
        out.append(_mirror(item.get("destination") or {}, percentage(item.get("percentage")), resolve))
    single = raw.get("mirror")
    if single:
        pct = percentage(raw.get("mirrorPercentage"))
        if pct is None:
            legacy = raw.get("mirrorPercent", raw.get("mirror_percent"))
            pct = float(legacy) if legacy is not None else None
        out.append(_mirror(single, pct, resolve))
    return tuple(out)


def _mirror(dest: Mapping[str, Any], pct: float | None, resolve: Any) -> Mirror:
    port = (dest.get("port") or {}).get("number")
    return Mirror(
        host=resolve(str(dest.get("host") or "")),
        subset=str(dest["subset"]) if dest.get("subset") else None,
        port=int(port) if port is not None else None,
        percent=100.0 if pct is None else pct,
    )


def build_redirect(raw: Mapping[str, Any] | None) -> Redirect | None:
    if raw is None:
        return None
    return Redirect(
        uri=raw.get("uri"),
        authority=raw.get("authority"),
        port=int_or_none(raw.get("port")),
        derive_port=raw.get("derivePort"),
        scheme=raw.get("scheme"),
        code=int(raw.get("redirectCode") or 301),
    )


def build_direct_response(raw: Mapping[str, Any] | None) -> DirectResponse | None:
    if raw is None:
        return None
    body = raw.get("body") or {}
    data: bytes | None = None
    if body.get("string") is not None:
        data = str(body["string"]).encode()
    elif body.get("bytes") is not None:
        data = base64.b64decode(body["bytes"])
    return DirectResponse(status=int(raw["status"]), body=data)


def build_cors(raw: Mapping[str, Any] | None) -> CorsPolicy | None:
    if raw is None:
        return None
    origins = [m for m in (string_match(o) for o in raw.get("allowOrigins") or ()) if m is not None]
    # The deprecated allowOrigin: exact origins.
    origins += [StringMatch("exact", str(o)) for o in raw.get("allowOrigin") or ()]
    creds = raw.get("allowCredentials")
    return CorsPolicy(
        allow_origins=tuple(origins),
        allow_methods=str_tuple(raw.get("allowMethods")),
        allow_headers=str_tuple(raw.get("allowHeaders")),
        expose_headers=str_tuple(raw.get("exposeHeaders")),
        max_age=duration_or_none(raw.get("maxAge")),
        allow_credentials=bool(creds) if creds is not None else None,
        unmatched_preflights=str(raw.get("unmatchedPreflights") or "FORWARD"),
    )


def build_delegate(raw: Mapping[str, Any] | None, namespace: str) -> Delegate | None:
    if not raw:
        return None
    return Delegate(name=str(raw.get("name") or ""), namespace=str(raw.get("namespace") or namespace))


# --- DestinationRule load balancing ------------------------------------------------------------------------


class ConsistentHash(msgspec.Struct, frozen=True, gc=False):
    header: str | None
    cookie: str | None
    cookie_path: str | None
    cookie_ttl: Duration | None
    source_ip: bool
    query_parameter: str | None
    maglev: bool  # else ring hash
    table_size: int | None  # ring: minimum ring size; Maglev: table size


# failoverPriority keys whose values come from the localities (client's and endpoint's), not labels.
TOPOLOGY_KEYS = {
    "topology.kubernetes.io/region": 0,
    "topology.kubernetes.io/zone": 1,
    "topology.istio.io/subzone": 2,
}


class LocalityLb(msgspec.Struct, frozen=True, gc=False):
    enabled: bool
    distribute: tuple[tuple[str, FrozenMap[int]], ...]  # (from, {to: weight})
    failover: tuple[tuple[str, str], ...]  # (from region, to region)
    failover_priority: tuple[str, ...] = ()  # label keys ("key") or label matches ("key=value"), in order


def build_consistent_hash(raw: Mapping[str, Any] | None) -> ConsistentHash | None:
    if not raw:
        return None
    cookie = raw.get("httpCookie") or {}
    maglev = raw.get("maglev")
    ring = raw.get("ringHash")
    size: int | None = None
    if maglev is not None:
        size = int_or_none(maglev.get("tableSize"))
    elif ring is not None:
        size = int_or_none(ring.get("minimumRingSize"))
    elif raw.get("minimumRingSize") is not None:
        size = int(raw["minimumRingSize"])  # the deprecated spelling of ringHash.minimumRingSize
    return ConsistentHash(
        header=str(raw["httpHeaderName"]).lower() if raw.get("httpHeaderName") else None,
        cookie=str(cookie["name"]) if cookie.get("name") else None,
        cookie_path=str(cookie["path"]) if cookie.get("path") else None,
        cookie_ttl=duration_or_none(cookie.get("ttl")),
        source_ip=bool(raw.get("useSourceIp", False)),
        query_parameter=str(raw["httpQueryParameterName"]) if raw.get("httpQueryParameterName") else None,
        maglev=maglev is not None,
        table_size=size,
    )


def build_locality_lb(raw: Mapping[str, Any] | None) -> LocalityLb | None:
    if raw is None:
        return None
    enabled = raw.get("enabled")
    return LocalityLb(
        enabled=True if enabled is None else bool(enabled),
        distribute=tuple(
            (str(d.get("from") or ""), FrozenMap({str(k): int(v) for k, v in (d.get("to") or {}).items()}))
            for d in raw.get("distribute") or ()
        ),
        failover=tuple((str(f.get("from") or ""), str(f.get("to") or "")) for f in raw.get("failover") or ()),
        failover_priority=tuple(str(x) for x in raw.get("failoverPriority") or ()),
    )
