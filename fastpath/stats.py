"""Istio's standard metrics, counted cheaply and written out in Prometheus' text format on scrape.

Per request the proxy does one dict lookup on a small key (reporter, destination, code, flags) and a few
integer additions; the label sets are only spelled out when Prometheus scrapes. Hand-written rather than
prometheus_client for that reason: a sidecar updates these on every request.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastpath.exchange import Exchange

# Istio's buckets: milliseconds for durations, bytes for sizes.
DURATION_BUCKETS = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)
SIZE_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000)

UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Identity:
    """This proxy's workload, from the node metadata (Istio's agent fills the same fields)."""

    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = "latest"
    cluster: str = "Kubernetes"
    principal: str = UNKNOWN

    @classmethod
    def from_node(cls, meta: dict[str, Any]) -> Identity:
        labels = meta.get("LABELS") or {}
        app = labels.get("app") or labels.get("app.kubernetes.io/name") or UNKNOWN
        version = labels.get("version") or labels.get("app.kubernetes.io/version") or UNKNOWN
        namespace = meta.get("NAMESPACE") or UNKNOWN
        sa = meta.get("SERVICE_ACCOUNT")
        return cls(
            workload=meta.get("WORKLOAD_NAME") or UNKNOWN,
            namespace=namespace,
            app=app,
            version=version,
            canonical_service=labels.get("service.istio.io/canonical-name")
            or (app if app != UNKNOWN else UNKNOWN),
            canonical_revision=labels.get("service.istio.io/canonical-revision")
            or (version if version != UNKNOWN else "latest"),
            cluster=meta.get("CLUSTER_ID") or "Kubernetes",
            principal=f"spiffe://cluster.local/ns/{namespace}/sa/{sa}" if sa else UNKNOWN,
        )


def _number(value: float) -> str:
    """Integral values exactly (byte counts pass 1e6 quickly), others as Prometheus floats."""
    return str(int(value)) if value == int(value) else repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Histogram:
    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def lines(self, name: str, labels: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append(f'{name}_bucket{{{labels},le="{bound:g}"}} {running}')
        out.append(f'{name}_bucket{{{labels},le="+Inf"}} {self.count}')
        out.append(f"{name}_sum{{{labels}}} {_number(self.total)}")
        out.append(f"{name}_count{{{labels}}} {self.count}")
        return out


class HttpSeries:
    __slots__ = ("count", "duration", "request_bytes", "response_bytes")

    def __init__(self) -> None:
        self.count = 0
        self.duration = Histogram(DURATION_BUCKETS)
        self.request_bytes = Histogram(SIZE_BUCKETS)
        self.response_bytes = Histogram(SIZE_BUCKETS)


def service_of(key: str, namespace: str) -> tuple[str, str, str]:
    """(destination_service, _name, _namespace) from an outbound cluster name or an inbound Host."""
    host = key.rsplit("|", 1)[-1] if "|" in key else key
    if not host:
        return (UNKNOWN, UNKNOWN, UNKNOWN)
    if host.startswith("["):
        return (host, host, UNKNOWN)
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    parts = host.split(".")
    if len(parts) == 1 and namespace != UNKNOWN and not parts[0][:1].isdigit():
        return (f"{host}.{namespace}.svc.cluster.local", host, namespace)
    if len(parts) >= 3 and parts[2] == "svc":
        return (host, parts[0], parts[1])
    return (host, host, UNKNOWN)


class Stats:
    """Counters by metric and label key, plus Envoy-style named counters for /stats."""

    def __init__(self, identity: Identity | None = None) -> None:
        self.identity = identity or Identity()
        self.http: dict[tuple[str, str, int, str, str, str], HttpSeries] = {}
        # The last key part is the peer's SPIFFE ID (server side, mutual TLS), else "".
        self.tcp: dict[str, dict[tuple[str, str, str, str], float]] = defaultdict(lambda: defaultdict(float))
        self.named: dict[str, int] = defaultdict(int)
        self.started = time.time()

    # -- HTTP -----------------------------------------------------------------------------------

    def http_done(self, reporter: str, ex: Exchange) -> None:
        if reporter == "source":
            dest = ex.cluster.name if ex.cluster is not None else UNKNOWN
        else:
            host = ex.head.host
            dest = host.decode("latin-1") if host else UNKNOWN
        grpc = ex.grpc_status
        principal = getattr(ex.conn, "peer_principal", "") if reporter == "destination" else ""
        key = (reporter, dest, ex.status, ex.flags, "" if grpc is None else str(grpc), principal)
        series = self.http.get(key)
        if series is None:
            series = self.http[key] = HttpSeries()
        series.count += 1
        series.duration.observe((time.monotonic() - ex.start) * 1000.0)
        series.request_bytes.observe(ex.bytes_received)
        series.response_bytes.observe(ex.bytes_sent)

    def downstream_protocol_error(self, reporter: str) -> None:
        self.named[f"http.{reporter}.downstream_rq_protocol_error"] += 1

    # -- TCP ------------------------------------------------------------------------------------

    def tcp_add(
        self, metric: str, reporter: str, cluster: str, flags: str, value: float = 1.0, principal: str = ""
    ) -> None:
        self.tcp[metric][(reporter, cluster, flags, principal)] += value

    # -- exposition -----------------------------------------------------------------------------

    def _labels(
        self,
        reporter: str,
        dest: str,
        code: str | None,
        flags: str,
        protocol: str,
        grpc: str = "",
        principal: str = "",
    ) -> str:
        me = self.identity
        service, name, namespace = service_of(dest, me.namespace)
        if reporter == "source":
            src = (
                me.workload,
                me.namespace,
                me.principal,
                me.app,
                me.version,
                me.canonical_service,
                me.canonical_revision,
                me.cluster,
            )
            dst = (
                UNKNOWN,
                namespace,
                UNKNOWN,
                UNKNOWN,
                UNKNOWN,
                name if name != UNKNOWN else UNKNOWN,
                "latest",
                UNKNOWN,
            )
        else:
            # The peer's namespace is in its SPIFFE ID (spiffe://<domain>/ns/<ns>/sa/<sa>).
            parts = principal.split("/")
            peer_ns = parts[4] if len(parts) >= 7 and parts[3] == "ns" else UNKNOWN
            src = (UNKNOWN, peer_ns, principal or UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, "latest", UNKNOWN)
            dst = (
                me.workload,
                me.namespace,
                me.principal,
                me.app,
                me.version,
                me.canonical_service,
                me.canonical_revision,
                me.cluster,
            )
        pairs = [("reporter", reporter)]
        keys = (
            "workload",
            "workload_namespace",
            "principal",
            "app",
            "version",
            "canonical_service",
            "canonical_revision",
            "cluster",
        )
        pairs += [(f"source_{k}", v) for k, v in zip(keys, src, strict=True)]
        pairs += [(f"destination_{k}", v) for k, v in zip(keys, dst, strict=True)]
        pairs += [
            ("destination_service", service),
            ("destination_service_name", name),
            ("destination_service_namespace", namespace),
            ("request_protocol", protocol),
        ]
        if code is not None:
            pairs += [("response_code", code), ("grpc_response_status", grpc)]
        pairs += [
            ("response_flags", flags),
            # Istio's: the server side says whether the connection was mutual TLS; the client cannot know.
            (
                "connection_security_policy",
                "unknown" if reporter == "source" else ("mutual_tls" if principal else "none"),
            ),
        ]
        return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)

    def prometheus(self) -> str:
        out: list[str] = []
        if self.http:
            total = ["# TYPE istio_requests_total counter"]
            dur = ["# TYPE istio_request_duration_milliseconds histogram"]
            req = ["# TYPE istio_request_bytes histogram"]
            resp = ["# TYPE istio_response_bytes histogram"]
            for (reporter, dest, code, flags, grpc, principal), s in sorted(self.http.items()):
                labels = self._labels(
                    reporter, dest, str(code), flags, "grpc" if grpc else "http", grpc, principal
                )
                total.append(f"istio_requests_total{{{labels}}} {s.count}")
                dur += s.duration.lines("istio_request_duration_milliseconds", labels)
                req += s.request_bytes.lines("istio_request_bytes", labels)
                resp += s.response_bytes.lines("istio_response_bytes", labels)
            out += total + dur + req + resp
        for metric in sorted(self.tcp):
            out.append(f"# TYPE {metric} counter")
            for (reporter, cluster, flags, principal), value in sorted(self.tcp[metric].items()):
                labels = self._labels(reporter, cluster, None, flags, "tcp", principal=principal)
                out.append(f"{metric}{{{labels}}} {_number(value)}")
        return "\n".join(out) + "\n"


def merge_expositions(texts: list[str]) -> str:
    """Several processes' expositions as one: samples with the same name and labels summed, in the order
    they first appear (each worker of a gateway counts its own share of the traffic)."""
    order: list[str] = []
    families: dict[str, list[str]] = {}
    sums: dict[str, float] = {}
    family = ""
    for text in texts:
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split()
                family = parts[2] if len(parts) > 2 else ""
                if family not in families:
                    families[family] = [line]
                    order.append(family)
                continue
            key, _, value = line.rpartition(" ")
            if key not in sums:
                families.setdefault(family, []).append(key)
                if family not in order:
                    order.append(family)
                sums[key] = 0.0
            sums[key] += float(value)
    out = []
    for fam in order:
        for entry in families[fam]:
            out.append(entry if entry.startswith("#") else f"{entry} {_number(sums[entry])}")
    return "\n".join(out) + "\n"
