"""Which version of each kind the cluster serves, from the API's discovery documents.

Istio's CRDs are served as v1, v1beta1 and v1alpha3 depending on the Istio release installed (1.22+
serves v1); we read the most preferred version the cluster has. A kind whose CRD is not installed is
simply absent from the answer.
"""

from __future__ import annotations

from typing import Any

from controller.informer.kubeclient import KubeClient
from controller.informer.listwatch import ApiError
from controller.informer.resource import ResourceType

from .kinds import KIND_INFO


async def discover(client: KubeClient) -> dict[str, ResourceType | None]:
    """For every kind the mesh reads, where to list and watch it, or None when the cluster lacks it."""
    core = await client.request("GET", "/api/v1")
    core_names = _names(core)
    groups = await client.request("GET", "/apis")
    served: dict[str, list[str]] = {
        group.get("name", ""): [v.get("version", "") for v in group.get("versions") or []]
        for group in (groups or {}).get("groups") or []
    }
    listings: dict[tuple[str, str], set[str]] = {}
    found: dict[str, ResourceType | None] = {}
    for kind, info in KIND_INFO.items():
        found[kind] = None
        if not info.group:
            if info.plural in core_names:
                found[kind] = ResourceType("", "v1", info.plural, kind, info.namespaced)
            continue
        for version in info.versions:
            if version not in served.get(info.group, ()):
                continue
            if (info.group, version) not in listings:
                listings[(info.group, version)] = await _group_version_names(client, info.group, version)
            if info.plural in listings[(info.group, version)]:
                found[kind] = ResourceType(info.group, version, info.plural, kind, info.namespaced)
                break
    return found


async def _group_version_names(client: KubeClient, group: str, version: str) -> set[str]:
    try:
        return _names(await client.request("GET", f"/apis/{group}/{version}"))
    except ApiError as exc:
        if exc.code == 404:  # listed a moment ago, gone now (a CRD being removed)
            return set()
        raise


def _names(resource_list: Any) -> set[str]:
    if not isinstance(resource_list, dict):
        return set()
    return {str(r.get("name")) for r in resource_list.get("resources") or [] if isinstance(r, dict)}
