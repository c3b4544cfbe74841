"""The controller's metrics as istiod shows them: counters under their own names, valid Prometheus text."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from controller.ca.service import CaMetrics
from controller.metrics import Metrics


def test_counters_carry_istiods_names_and_the_text_parses() -> None:
    m = Metrics()
    ca = CaMetrics(m.registry)
    m.pushes.labels("cds").inc(3)
    ca.requests.inc()
    ca.refused.labels('bad "identity"\nhere').inc()
    m.convergence.observe(0.03)
    text = m.render().decode()
    lines = text.splitlines()
    assert 'pilot_xds_pushes{type="cds"} 3.0' in lines
    assert "citadel_server_csr_count 1.0" in lines
    assert "# TYPE pilot_xds_pushes counter" in lines
    assert not [x for x in lines if x.split("{")[0].split(" ")[0].endswith(("_total", "_created"))]
    assert 'pilot_proxy_convergence_time_bucket{le="0.05"} 1.0' in lines
    # Prometheus' own parser reads it back, label escapes included.
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["pilot_xds_pushes"].type == "counter"
    [refused] = families["mizzen_ca_refused"].samples
    assert refused.labels == {"reason": 'bad "identity"\nhere'} and refused.value == 1.0
