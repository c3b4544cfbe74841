"""``mizzen proxy-status`` and ``mizzen proxy-config``: what the controller sent each proxy and whether the
proxy took it, read from the controller's debug endpoint (15014) directly or through the API server's pod
proxy (``pods/<controller>:15014/proxy``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp

from mizzen.kube import ApiError, KubeClient

Obj = dict[str, Any]
TYPES = {"clusters": "CDS", "listeners": "LDS", "routes": "RDS", "endpoints": "EDS"}
_SHORT = {
    "type.googleapis.com/envoy.config.cluster.v3.Cluster": "CDS",
    "type.googleapis.com/envoy.config.listener.v3.Listener": "LDS",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": "RDS",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": "EDS",
}


class DebugSource:
    """The controller's debug endpoint, at an address or through the API server."""

    def __init__(
        self,
        *,
        address: str | None = None,
        client: KubeClient | None = None,
        namespace: str = "mizzen-system",
    ) -> None:
        if (address is None) == (client is None):
            raise ValueError("give the controller's address or a cluster client")
        self.address = address
        self.client = client
        self.namespace = namespace

    async def get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> Any:
        if self.address is not None:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://{self.address}{path}", params=list(query)) as response:
                    data = await response.json(content_type=None)
                    if response.status >= 400:
                        raise LookupError((data or {}).get("error") or f"{path}: HTTP {response.status}")
                    return data
        assert self.client is not None
        pods = await self.client.request(
            "GET",
            f"/api/v1/namespaces/{self.namespace}/pods",
            query=[("labelSelector", "app=mizzen-controller")],
        )
        running = [p for p in pods.get("items") or () if (p.get("status") or {}).get("phase") == "Running"]
        if not running:
            raise LookupError(f"no running mizzen-controller pod in namespace {self.namespace}")
        errors = []
        results: list[tuple[str, Any]] = []
        # Each replica knows only the proxies connected to it: ask them all and merge.
        for pod in running:
            name = pod["metadata"]["name"]
            try:
                proxied = f"/api/v1/namespaces/{self.namespace}/pods/{name}:15014/proxy{path}"
                results.append((name, await self.client.request("GET", proxied, query=list(query))))
            except ApiError as exc:
                errors.append(f"{name}: {exc}")
        if not results:
            raise LookupError("; ".join(errors))
        if all(isinstance(r, list) for _, r in results):
            return [{**item, "controller": name} for name, r in results for item in r]
        return results[0][1]


def _state(types: Obj, short: str) -> str:
    t = types.get(short)
    if t is None:
        return "NOT SENT"
    return str(t.get("status")) + (f" ({t['error']})" if t.get("error") else "")


def status_rows(entries: list[Obj]) -> list[list[str]]:
    rows = []
    for entry in sorted(entries, key=lambda e: (e.get("namespace", ""), e.get("pod", ""))):
        types = {_SHORT.get(t, t): v for t, v in (entry.get("types") or {}).items()}
        rows.append(
            [
                f"{entry.get('pod')}.{entry.get('namespace')}",
                *(_state(types, s) for s in ("CDS", "LDS", "EDS", "RDS")),
                str(entry.get("controller", "-")),
                str(entry.get("protocol", "")),
            ]
        )
    return rows


STATUS_HEADERS = ["NAME", "CDS", "LDS", "EDS", "RDS", "CONTROLLER", "XDS"]


async def config_dump(source: DebugSource, pod: str, namespace: str) -> Obj:
    """The resources the controller holds for ``namespace/pod``'s proxy (what it sent and the proxy acked)."""
    entries = await source.get("/debug/syncz")
    match = [e for e in entries if e.get("pod") == pod and e.get("namespace") == namespace]
    if not match:
        known = ", ".join(sorted(f"{e.get('pod')}.{e.get('namespace')}" for e in entries)) or "none"
        raise LookupError(f"no proxy for pod {namespace}/{pod} is connected (connected: {known})")
    return await source.get("/debug/config_dump", [("proxy", match[0]["proxy"])])  # type: ignore[no-any-return]


def _cluster_row(name: str, cluster: Obj) -> list[str]:
    parts = name.split("|")
    if len(parts) == 4:
        direction, port, subset, host = parts
        return [host, port, subset or "-", direction.upper(), cluster.get("type", "EDS")]
    return [name, "-", "-", "-", cluster.get("type", "EDS")]


def config_rows(kind: str, dump: Obj) -> tuple[list[str], list[list[str]]]:
    resources = dump.get(TYPES[kind]) or {}
    if kind == "clusters":
        return ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"], [
            _cluster_row(n, c) for n, c in sorted(resources.items())
        ]
    if kind == "listeners":
        rows = []
        for name, listener in sorted(resources.items()):
            sock = (listener.get("address") or {}).get("socket_address") or {}
            chains = listener.get("filter_chains") or []
            rows.append(
                [name, str(sock.get("address", "")), str(sock.get("port_value", "")), str(len(chains))]
            )
        return ["NAME", "ADDRESS", "PORT", "FILTER CHAINS"], rows
    if kind == "routes":
        rows = []
        for name, route in sorted(resources.items()):
            for vhost in route.get("virtual_hosts") or ():
                domains = vhost.get("domains") or []
                shown = ", ".join(domains[:3]) + (f" +{len(domains) - 3} more" if len(domains) > 3 else "")
                rows.append([name, vhost.get("name", ""), shown, str(len(vhost.get("routes") or []))])
        return ["NAME", "VIRTUAL HOST", "DOMAINS", "ROUTES"], rows
    rows = []
    for name, cla in sorted(resources.items()):
        for locality in cla.get("endpoints") or ():
            for lb in locality.get("lb_endpoints") or ():
                sock = ((lb.get("endpoint") or {}).get("address") or {}).get("socket_address") or {}
                health = lb.get("health_status", "HEALTHY")
                rows.append([f"{sock.get('address')}:{sock.get('port_value')}", health, name])
    return ["ENDPOINT", "STATUS", "CLUSTER"], rows
