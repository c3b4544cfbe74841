"""The bootstrap an injected sidecar builds for itself at start (``mizzen-proxy --xds-address HOST:PORT``).

Who the pod is comes from what the injector wired into the container: env vars from the downward API
(POD_NAME, POD_NAMESPACE, INSTANCE_IP, SERVICE_ACCOUNT, NODE_NAME), ``ISTIO_META_*`` vars copied into the
node metadata as Istio's agent does, and the pod's labels from the downward API file. The node id and
metadata are Istio's: ``sidecar~<ip>~<pod>.<ns>~<ns>.svc.<domain>`` (``router~...`` for a gateway).
"""

from __future__ import annotations

import ast
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LABELS_FILE = Path("/etc/istio/pod/labels")
_META_PREFIX = "ISTIO_META_"


class BootstrapGenError(ValueError):
    """What the pod gave the proxy is not enough to build its bootstrap; names the env var or file."""


def parse_downward_file(text: str) -> dict[str, str]:
    """The downward API's ``key="value"`` lines (values quoted as Go's %q, which Python literals read)."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not value.startswith('"'):
            raise BootstrapGenError(f'line {number}: expected key="value", got {line!r}')
        try:
            out[key] = str(ast.literal_eval(value))
        except (ValueError, SyntaxError):
            raise BootstrapGenError(f"line {number}: value is not a quoted string: {value!r}") from None
    return out


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BootstrapGenError(f"--xds-address: expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def generate(
    xds_address: str,
    env: Mapping[str, str] | None = None,
    labels_file: Path | None = LABELS_FILE,
    *,
    admin_port: int = 15000,
    proxy_type: str = "sidecar",
) -> dict[str, Any]:
    """An Envoy-shaped bootstrap following the controller at ``xds_address`` over Delta ADS; ``proxy_type``
    ``router`` makes a gateway (it gets the Gateways selecting its labels instead of sidecar config)."""
    if proxy_type not in ("sidecar", "router"):
        raise BootstrapGenError(f"--proxy-type: sidecar or router, not {proxy_type!r}")
    env = os.environ if env is None else env
    host, port = split_address(xds_address)
    missing = [name for name in ("POD_NAME", "POD_NAMESPACE", "INSTANCE_IP") if not env.get(name)]
    if missing:
        raise BootstrapGenError(f"environment: {', '.join(missing)} must be set (the injector sets them)")
    name, namespace, ip = env["POD_NAME"], env["POD_NAMESPACE"], env["INSTANCE_IP"]
    domain = env.get("MIZZEN_CLUSTER_DOMAIN") or "cluster.local"
    labels: dict[str, str] = {}
    if labels_file is not None and labels_file.exists():
        try:
            labels = parse_downward_file(labels_file.read_text())
        except BootstrapGenError as exc:
            raise BootstrapGenError(f"{labels_file}: {exc}") from None
    metadata: dict[str, Any] = {
        key[len(_META_PREFIX) :]: value for key, value in env.items() if key.startswith(_META_PREFIX)
    }
    metadata.update(
        {
            "NAMESPACE": namespace,
            "NAME": name,
            "LABELS": labels,
            "INSTANCE_IPS": ip,
            "SERVICE_ACCOUNT": env.get("SERVICE_ACCOUNT", "default"),
            "CLUSTER_ID": metadata.get("CLUSTER_ID", "Kubernetes"),
        }
    )
    metadata.setdefault("WORKLOAD_NAME", name)
    if env.get("NODE_NAME"):
        metadata["NODE_NAME"] = env["NODE_NAME"]
    app = labels.get("service.istio.io/canonical-name") or labels.get("app") or metadata["WORKLOAD_NAME"]
    endpoint = {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
    return {
        "node": {
            "id": f"{proxy_type}~{ip}~{name}.{namespace}~{namespace}.svc.{domain}",
            "cluster": f"{app}.{namespace}",
            "metadata": metadata,
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds-grpc",
                    # A Service name in a cluster; an IP in local mode and tests.
                    "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "xds-grpc",
                        "endpoints": [{"lb_endpoints": [endpoint]}],
                    },
                }
            ]
        },
    }


def build(xds_address: str, out: str | None = None, proxy_type: str = "sidecar") -> Any:
    """The parsed bootstrap for this pod (``fastpath.bootstrap.Bootstrap``), written to ``out`` if given."""
    import json

    from fastpath import bootstrap

    # Where the downward API mounts the labels; overridable to run the sidecar outside a pod.
    labels = Path(os.environ.get("MIZZEN_LABELS_FILE") or LABELS_FILE)
    data = generate(xds_address, labels_file=labels, proxy_type=proxy_type)
    if out:
        # Only for people looking (kubectl exec ... cat); the proxy runs from memory.
        Path(out).write_text(json.dumps(data, indent=2))
    return bootstrap.parse(data, "generated bootstrap")


def wait_ready(health_port: int, timeout: float, *, interval: float = 0.2) -> int:
    """Block until ``127.0.0.1:<health_port>/healthz/ready`` answers 200; 0 then, 1 on timeout."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{health_port}/healthz/ready"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return 0
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(interval)
    return 1
