"""What each traffic policy costs the sidecar's data path, as a ratio against the plain route, in one run on
the data-path rig of ``test_dataplane.py`` (same cores, same app, same load generator, same hop config).

Variants, each its own mizzen-proxy on the proxy core:

- ``plain``: the hop as test_dataplane configures it (router only).
- ``filters-idle``: the CORS and fault filters in the chain as the controller always puts them there, no
  route configuring them -- what every request pays for policies it does not use (the goal: nothing).
- ``fault-0``: a fault on the route with 0% delay and 0% abort (the filter runs and decides not to act).
- ``headers``: request set/add/remove and response set on the route (the head is rebuilt both ways).
- ``mirror``: every request also copied to a second app (the copy's connection and response included).
- ``outlier``: outlier detection on the cluster (every response reported to the detector).
- ``cors``: a CORS policy on the route, requests carrying an allowed Origin.
- ``hash``: consistent hashing (ring hash, a header as key).

Every variant runs once per round, in a rotating order, so that the machine's other load falls on all of
them alike; the figures are medians over the rounds. With ``MIZZEN_BENCH_BEFORE=<dir>`` (a built checkout of
an earlier commit), a ``before`` variant runs the plain hop on that code: what the policies' plumbing costs
requests that use none of them.

Run: ``pytest bench/test_policies.py``; the table is printed at the end and saved to
``bench/results/policies.json``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_dataplane", Path(__file__).with_name("test_dataplane.py")
)
assert _spec is not None and _spec.loader is not None
dp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dp)

REQUESTS = int(os.environ.get("MIZZEN_BENCH_REQUESTS", "40000"))
ROUNDS = int(os.environ.get("MIZZEN_BENCH_ROUNDS", "5"))
RESULTS: dict[str, dict[str, Any]] = {}
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
CORS = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
CORS_POLICY = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
POLICY_FILTERS = [
    {"name": "envoy.filters.http.cors", "typed_config": {"@type": CORS}},
    {"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT}},
]
VARIANTS = ["plain", "filters-idle", "fault-0", "headers", "mirror", "outlier", "cors", "hash"]
HEADERS = {"cors": ["-H", "origin: https://app.example"], "hash": ["-H", "x-user: alice"]}


def bootstrap(variant: str, port: int, upstream: int, shadow: int) -> dict[str, Any]:
    boot = dp.sidecar_bootstrap(port, upstream)
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    cluster = boot["static_resources"]["clusters"][0]
    if variant != "plain":
        hcm["http_filters"] = [*POLICY_FILTERS, *hcm["http_filters"]]
    if variant == "fault-0":
        route["typed_per_filter_config"] = {
            "envoy.filters.http.fault": {
                "@type": FAULT,
                "delay": {"fixed_delay": "1s", "percentage": {"numerator": 0, "denominator": "MILLION"}},
                "abort": {"http_status": 503, "percentage": {"numerator": 0, "denominator": "MILLION"}},
            }
        }
    elif variant == "headers":
        set_ = "OVERWRITE_IF_EXISTS_OR_ADD"
        route["request_headers_to_add"] = [
            {"header": {"key": "x-env", "value": "prod"}, "append_action": set_},
            {"header": {"key": "x-trace", "value": "a"}},
        ]
        route["request_headers_to_remove"] = ["x-secret"]
        route["response_headers_to_add"] = [
            {"header": {"key": "x-served", "value": "mesh"}, "append_action": set_}
        ]
    elif variant == "mirror":
        mirror = copy.deepcopy(cluster)
        mirror["name"] = "outbound|80||shadow.default.svc.cluster.local"
        mirror["load_assignment"]["cluster_name"] = "shadow"
        mirror["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
            "port_value"
        ] = shadow
        boot["static_resources"]["clusters"].append(mirror)
        route["route"]["request_mirror_policies"] = [{"cluster": mirror["name"]}]
    elif variant == "outlier":
        cluster["outlier_detection"] = {
            "consecutive_5xx": 5,
            "interval": "10s",
            "base_ejection_time": "30s",
            "enforcing_success_rate": 0,
        }
        cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": 0}}
    elif variant == "cors":
        route["typed_per_filter_config"] = {
            "envoy.filters.http.cors": {
                "@type": CORS_POLICY,
                "allow_origin_string_match": [{"exact": "https://app.example"}],
                "allow_methods": "GET,POST",
                "expose_headers": "x-total",
            }
        }
    elif variant == "hash":
        cluster["lb_policy"] = "RING_HASH"
        route["route"]["hash_policy"] = [{"header": {"header_name": "x-user"}}]
    return boot


BEFORE = os.environ.get("MIZZEN_BENCH_BEFORE")  # a built tree from before the policies, to compare with


@pytest.fixture(scope="module")
def rig() -> Iterator[Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mzb-pol-"))
    tmp.chmod(0o755)
    r = dp.Rig(tmp)
    try:
        app = r.nginx("app", dp.PROXY_CORE, dp.APP)
        shadow = r.nginx("shadow", dp.PROXY_CORE, dp.APP)
        for variant in (["before"] if BEFORE else []) + VARIANTS:
            port = dp.free_port()
            boot = tmp / f"{variant}.json"
            boot.write_text(
                json.dumps(bootstrap("plain" if variant == "before" else variant, port, app, shadow))
            )
            argv = ["taskset", "-c", dp.PROXY_CORE, dp.PROXY, "-c", str(boot), "-l", "warning"]
            for flag in ("--admin-port", "--health-port", "--metrics-port"):
                argv += [flag, str(dp.free_port())]
            env = dict(os.environ)
            if variant == "before":
                env["PYTHONPATH"] = str(BEFORE)
            log = open(tmp / f"{variant}.log", "wb")  # closed when the process ends
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
            r.procs.append(proc)
            dp.wait_port(port)
            r.pids[variant] = [proc.pid]
            r.ports[variant] = port
        yield r
    finally:
        r.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.benchmark(group="policies-c16")
def test_policy_costs(benchmark: Any, rig: Any) -> None:
    """Every variant once per round, in a rotating order, so that what the rest of the machine does
    falls on all of them alike; medians over the rounds."""
    variants = [v for v in rig.ports if v not in ("app", "shadow")]
    for v in variants:
        dp.h2load(rig.ports[v], "-n", "5000", "-c", "16", "-t", "1", *HEADERS.get(v, []))  # warm
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    wall: dict[str, list[float]] = {v: [] for v in variants}

    def run() -> None:
        for k in range(ROUNDS):
            for v in variants[k % len(variants) :] + variants[: k % len(variants)]:
                pid = rig.pids[v][0]
                before, start = dp.cpu_ns(pid), time.perf_counter()
                dp.h2load(rig.ports[v], "-n", str(REQUESTS), "-c", "16", "-t", "1", *HEADERS.get(v, []))
                wall[v].append(time.perf_counter() - start)
                cpu[v].append((dp.cpu_ns(pid) - before) / REQUESTS / 1000)

    benchmark.pedantic(run, rounds=1, iterations=1)
    for v in variants:
        RESULTS[v] = {
            "rps": round(REQUESTS / statistics.median(wall[v])),
            "cpu_us_per_request": round(statistics.median(cpu[v]), 2),
        }
    benchmark.extra_info.update(RESULTS)


def bench_summary() -> str:
    base = RESULTS.get("plain")
    if not base:
        return ""
    lines = [
        f"{v}: {r['rps']} rps ({r['rps'] / base['rps']:.3f}x plain), {r['cpu_us_per_request']} us/req "
        f"({r['cpu_us_per_request'] / base['cpu_us_per_request']:.3f}x plain)"
        for v, r in RESULTS.items()
    ]
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "policies.json").write_text(json.dumps(RESULTS, indent=1))
    return "\n".join(lines)
