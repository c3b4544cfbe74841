"""Letting pods onto a node only once capture is installed there.

Nodes can be created with the taint ``cni.mizzen.io/not-ready:NoSchedule`` (kubelet
``--register-with-taints``, or kind's ``kubeadmConfigPatches``). Ordinary pods then
wait until the agent, which tolerates it, has chained the plugin in and removes the
taint, so no meshed pod starts on a node without capture (Istio's untaint controller
solves the same race). Without the taint this is a no-op, and repair covers the race.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any, Protocol

from cni.agent.health import Health
from cni.agent.kube import ApiError

NOT_READY_TAINT = "cni.mizzen.io/not-ready"
_ATTEMPTS = 5


class NodeClient(Protocol):
    def get(self, path: str) -> Any: ...

    def merge_patch(self, path: str, body: Any) -> Any: ...


def remove_taint(client: NodeClient, node: str, key: str = NOT_READY_TAINT) -> bool:
    """Remove taint ``key`` from ``node``; True when it was there.

    The patch carries the resourceVersion it was computed from, so a concurrent change to
    the node's taints makes the API answer 409 instead of being overwritten; then it reads again.
    """
    path = f"/api/v1/nodes/{urllib.parse.quote(node, safe='')}"
    for _ in range(_ATTEMPTS):
        obj = client.get(path)
        taints = (obj.get("spec") or {}).get("taints") or []
        keep = [t for t in taints if t.get("key") != key]
        if len(keep) == len(taints):
            return False
        version = (obj.get("metadata") or {}).get("resourceVersion")
        try:
            client.merge_patch(path, {"metadata": {"resourceVersion": version}, "spec": {"taints": keep}})
            return True
        except ApiError as exc:
            if exc.status != 409:
                raise
    raise ApiError(f"PATCH {path}: taints kept changing ({_ATTEMPTS} conflicts)", 409)


async def untaint_when_ready(
    client: NodeClient, node: str, health: Health, log: Any, interval: float = 2.0, recheck: float = 60.0
) -> None:
    """Remove the taint whenever the plugin is ready and the taint is on the node; runs forever."""
    while True:
        delay = interval
        if health.status.ready:
            try:
                if await asyncio.to_thread(remove_taint, client, node):
                    log.info("node untainted: capture is installed", node=node, taint=NOT_READY_TAINT)
                delay = recheck
            except ApiError as exc:  # the API may be briefly unreachable; the node stays tainted meanwhile
                log.warning("cannot untaint node", node=node, error=str(exc))
        await asyncio.sleep(delay)
