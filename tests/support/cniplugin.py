"""Calling the mizzen-cni executable the way a runtime does, for the plugin's tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

PLUGIN = os.environ.get("MIZZEN_CNI_PLUGIN") or str(Path(sys.executable).parent / "mizzen-cni")
if not Path(PLUGIN).exists():
    PLUGIN = shutil.which("mizzen-cni") or PLUGIN

PREV_RESULT: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "mac": "0a:58:0a:f4:00:05", "sandbox": "/var/run/netns/x"}],
    "ips": [{"address": "10.244.0.5/24", "gateway": "10.244.0.1", "interface": 0}],
    "routes": [{"dst": "0.0.0.0/0"}],
}


def pod(
    name: str = "app",
    namespace: str = "default",
    *,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    injected: bool = True,
    ns_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``args.mizzen`` for a pod; ``injected`` adds what the injector writes."""
    ann = dict(annotations or {})
    if injected:
        ann.setdefault("sidecar.istio.io/status", '{"containers":["istio-proxy"]}')
    return {
        "pod": {
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}, "annotations": ann}
        },
        "namespace": {
            "metadata": {
                "name": namespace,
                "labels": {"istio-injection": "enabled"} if ns_labels is None else ns_labels,
            }
        },
    }


def netconf(
    args: dict[str, Any] | None = None, *, prev: dict[str, Any] | None = PREV_RESULT, **extra: Any
) -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "test-net", "type": "mizzen-cni", **extra}
    if prev is not None:
        conf["prevResult"] = prev
    if args is not None:
        conf["args"] = {"mizzen": args}
    return conf


def call(
    command: str,
    netns: str = "",
    conf: dict[str, Any] | bytes | None = None,
    *,
    pod_name: str = "app",
    namespace: str = "default",
    env: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Run the plugin; returns (exit code, parsed stdout or None)."""
    full_env = {
        **os.environ,
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "c0ffee",
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/usr/lib/cni",
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod_name}",
        **(env or {}),
    }
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf or {}).encode()
    proc = subprocess.run([PLUGIN], input=stdin, env=full_env, capture_output=True, timeout=60)
    out = proc.stdout.decode().strip()
    return proc.returncode, (json.loads(out) if out else None)


def nat(netns: str, family: int = 4) -> list[str]:
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    name = Path(netns).name
    out = subprocess.run(
        ["ip", "netns", "exec", name, tool, "-t", "nat"], capture_output=True, text=True, check=True
    )
    return [line for line in out.stdout.splitlines() if line.startswith(("-A", ":"))]


def ipt(netns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", Path(netns).name, "iptables", *args], check=True)
