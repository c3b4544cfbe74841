"""CNI ADD latency: from the runtime starting the plugin to the plugin's exit, rules applied.

Measured side by side in one run, every round on a fresh netns state (the previous
round's rules removed in the untimed setup):

- ``floor``: the iptables work alone (iptables-save, then iptables-restore of the same
  rules, each entered with nsenter) -- what any implementation must pay;
- ``go-tuning``: Debian's ``tuning`` plugin (Go) chained the same way -- a compiled
  plugin that starts and hands prevResult back, our yardstick;
- ``python-entry``: ``mizzen-cni`` as pip installs it (console script in the venv);
- ``bundle``: the self-contained executable shipped to nodes (``python -m cni.bundle``).

Run: ``pytest bench/test_cni_add.py --benchmark-columns=median,iqr,min,max``.
p50/p99 land in each benchmark's extra_info (and in the JSON with --benchmark-json).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cni import rules

ROUNDS = int(os.environ.get("MIZZEN_BENCH_ROUNDS", "60"))
PYTHON_ENTRY = str(Path(sys.executable).parent / "mizzen-cni")

CONF: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "bench",
    "prevResult": {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
        "ips": [{"address": "10.244.0.5/24", "interface": 0}],
    },
    "args": {
        "mizzen": {
            "pod": {
                "metadata": {
                    "name": "p",
                    "namespace": "bench",
                    "annotations": {"sidecar.istio.io/status": "{}"},
                }
            },
            "namespace": {"metadata": {"name": "bench", "labels": {"istio-injection": "enabled"}}},
        }
    },
}


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    name = f"mzb-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield f"/var/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    from cni import bundle as bundler

    dest = tmp_path_factory.mktemp("bundle")
    return str(bundler.build(dest))


def _env(command: str, netns: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "bench",
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/usr/lib/cni",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p",
    }


def _plugin_call(executable: str, netns: str, conf: dict[str, Any]) -> Callable[[], None]:
    stdin = json.dumps(conf).encode()
    env = _env("ADD", netns)

    def add() -> None:
        proc = subprocess.run([executable], input=stdin, env=env, capture_output=True)
        assert proc.returncode == 0, proc.stdout

    return add


def _clear(netns: str) -> Callable[[], None]:
    payload = rules.removal_payload(["-A PREROUTING -p tcp -j ISTIO_INBOUND", "-A OUTPUT -j ISTIO_OUTPUT"])

    def clear() -> None:
        subprocess.run(
            ["nsenter", f"--net={netns}", "iptables-restore", "--noflush"],
            input=payload.encode(),
            capture_output=True,
        )

    return clear


def _measure(benchmark: Any, fn: Callable[[], None], setup: Callable[[], None]) -> None:
    def with_setup() -> tuple[tuple[()], dict[str, Any]]:
        setup()
        return (), {}

    benchmark.pedantic(fn, setup=with_setup, rounds=ROUNDS, warmup_rounds=3)
    data = sorted(benchmark.stats.stats.data)
    benchmark.extra_info["p50_ms"] = round(data[len(data) // 2] * 1000, 1)
    benchmark.extra_info["p99_ms"] = round(data[min(len(data) - 1, int(len(data) * 0.99))] * 1000, 1)


@pytest.mark.benchmark(group="cni-add")
def test_floor_iptables_only(benchmark: Any, netns: str) -> None:
    payload = rules.build(rules.CaptureConfig()).encode()

    def apply() -> None:
        subprocess.run(
            ["nsenter", f"--net={netns}", "iptables-save", "-t", "nat"], capture_output=True, check=True
        )
        subprocess.run(
            ["nsenter", f"--net={netns}", "iptables-restore", "--noflush"],
            input=payload,
            capture_output=True,
            check=True,
        )

    _measure(benchmark, apply, _clear(netns))


@pytest.mark.benchmark(group="cni-add")
def test_go_tuning_plugin(benchmark: Any, netns: str) -> None:
    conf = {**CONF, "type": "tuning"}
    conf.pop("args")
    _measure(benchmark, _plugin_call("/usr/lib/cni/tuning", netns, conf), lambda: None)


@pytest.mark.benchmark(group="cni-add")
def test_python_entry(benchmark: Any, netns: str) -> None:
    _measure(benchmark, _plugin_call(PYTHON_ENTRY, netns, {**CONF, "type": "mizzen-cni"}), _clear(netns))


@pytest.mark.benchmark(group="cni-add")
def test_bundle(benchmark: Any, netns: str, bundle: str) -> None:
    _measure(benchmark, _plugin_call(bundle, netns, {**CONF, "type": "mizzen-cni"}), _clear(netns))
