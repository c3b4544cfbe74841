"""The controller's Prometheus metrics, with istiod's names where istiod has one."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.utils import floatToGoString

# Change seen -> proxy ACK: from milliseconds (one proxy, small change) to tens of seconds (debounce max).
CONVERGENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30)


class Metrics:
    """One registry per controller instance, so several can live in one process (tests, benchmarks)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connected = Gauge("pilot_xds", "Connected xDS clients", ["protocol"], registry=r)
        self.pushes = Counter("pilot_xds_pushes", "xDS responses sent, by type", ["type"], registry=r)
        self.sent_bytes = Counter(
            "mizzen_xds_sent_bytes", "Bytes of resources sent in xDS responses, by type", ["type"], registry=r
        )
        self.nacks = Counter(
            "pilot_total_xds_rejects", "xDS responses rejected (NACK), by type", ["type"], registry=r
        )
        self.convergence = Histogram(
            "pilot_proxy_convergence_time",
            "Seconds from a config change being seen to the proxy acknowledging it",
            buckets=CONVERGENCE_BUCKETS,
            registry=r,
        )
        self.invalid = Gauge(
            "mizzen_invalid_configs", "Objects currently skipped as invalid, by kind", ["kind"], registry=r
        )
        self.rejected = Counter(
            "mizzen_config_rejected", "Objects rejected by validation, by kind", ["kind"], registry=r
        )
        self.config_changes = Counter(
            "mizzen_config_changes", "Object changes applied to the model, by kind", ["kind"], registry=r
        )
        self.analysis = Gauge(
            "mizzen_config_analysis_warnings",
            "Routes that lead nowhere (subset or host not defined), as istioctl analyze reports them",
            registry=r,
        )
        self.snapshot_version = Gauge(
            "mizzen_snapshot_version", "Version of the current mesh snapshot", registry=r
        )
        self.debounce_batches = Counter(
            "pilot_debounce_batches",
            "Debounced batches of config changes that reached translation",
            registry=r,
        )

    def render(self) -> bytes:
        return render(self.registry)


def render(registry: CollectorRegistry) -> bytes:
    """Prometheus text format with istiod's names: istiod's exporter shows a counter under its own name
    (``pilot_xds_pushes``, ``citadel_server_csr_count``), where prometheus_client's would add ``_total``
    and ``_created`` samples; dashboards and alerts written for istiod then read ours unchanged."""
    out: list[str] = []
    for family in registry.collect():
        name, kind = family.name, family.type
        help_text = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {'untyped' if kind == 'unknown' else kind}\n")
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            sample_name = name if kind == "counter" else sample.name
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
            out.append(f"{sample_name}{{{labels}}}" if labels else sample_name)
            out.append(f" {floatToGoString(sample.value)}\n")
    return "".join(out).encode()


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace('"', r'\"').replace("\n", r"\n")
