"""``mizzen install`` and ``mizzen uninstall``: the rendered manifests applied server-side, then a wait for
the controller and the CNI agents to be ready, with what is not ready (and why) reported."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from mizzen import kube
from mizzen.kube import ApiError, KubeClient
from mizzen.manifests.render import MANAGED

Obj = dict[str, Any]
Say = Callable[[str], None]


def _name(obj: Obj) -> str:
    meta = obj["metadata"]
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj['kind']} {where}{meta['name']}"


async def apply_all(client: KubeClient, objects: list[Obj], say: Say) -> None:
    """Apply in order; CRDs must be Established before anything that could use them."""
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    for obj in objects:
        await kube.apply(client, obj)
        say(f"  applied {_name(obj)}")
        if obj is (crds[-1] if crds else None):
            await wait_established(client, crds, say)


async def wait_established(client: KubeClient, crds: list[Obj], say: Say, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    pending = {c["metadata"]["name"] for c in crds}
    while pending:
        for name in sorted(pending):
            crd = await client.request(
                "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            )
            conditions = (crd.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                pending.discard(name)
        if not pending:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"CRDs not established after {timeout:g}s: {', '.join(sorted(pending))}")
        await asyncio.sleep(0.5)
    say(f"  {len(crds)} CRDs established")


def _deployment_ready(obj: Obj) -> tuple[bool, str]:
    want = int((obj.get("spec") or {}).get("replicas", 1))
    status = obj.get("status") or {}
    fresh = status.get("observedGeneration", 0) >= obj["metadata"].get("generation", 1)
    updated, available = int(status.get("updatedReplicas") or 0), int(status.get("availableReplicas") or 0)
    ok = fresh and updated >= want and available >= want
    return ok, f"{available}/{want} available, {updated} updated"


def _daemonset_ready(obj: Obj) -> tuple[bool, str]:
    status = obj.get("status") or {}
    want = int(status.get("desiredNumberScheduled") or 0)
    fresh = status.get("observedGeneration", 0) >= obj["metadata"].get("generation", 1)
    ready, updated = int(status.get("numberReady") or 0), int(status.get("updatedNumberScheduled") or 0)
    ok = fresh and want > 0 and ready >= want and updated >= want
    return ok, f"{ready}/{want} nodes ready, {updated} updated"


async def _why_not(client: KubeClient, obj: Obj) -> list[str]:
    """What the workload's pods say: waiting reasons (ImagePullBackOff...), failing readiness."""
    meta = obj["metadata"]
    selector = ",".join(f"{k}={v}" for k, v in obj["spec"]["selector"]["matchLabels"].items())
    pods = await client.request(
        "GET", f"/api/v1/namespaces/{meta['namespace']}/pods", query=[("labelSelector", selector)]
    )
    reasons = []
    for pod in pods.get("items") or ():
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        for c in status.get("containerStatuses") or ():
            waiting = (c.get("state") or {}).get("waiting")
            if waiting:
                reasons.append(
                    f"pod {name}: {c['name']}: {waiting.get('reason')}: {waiting.get('message', '')}".rstrip(
                        ": "
                    )
                )
            elif not c.get("ready"):
                reasons.append(f"pod {name}: {c['name']} not ready")
        if not status.get("containerStatuses"):
            for cond in status.get("conditions") or ():
                if cond.get("status") == "False" and cond.get("message"):
                    reasons.append(f"pod {name}: {cond.get('reason')}: {cond['message']}")
    return reasons or ["no pods yet"]


async def wait_ready(client: KubeClient, objects: list[Obj], say: Say, timeout: float) -> list[str]:
    """Wait for every Deployment and DaemonSet; returns what is still not ready at the deadline."""
    workloads = [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    while True:
        pending = []
        for obj in workloads:
            live = await client.request(
                "GET", kube.resource_of(obj).path(obj["metadata"]["name"], obj["metadata"]["namespace"])
            )
            ok, detail = (_deployment_ready if obj["kind"] == "Deployment" else _daemonset_ready)(live)
            name = _name(obj)
            if last.get(name) != detail:
                say(f"  {name}: {detail}")
                last[name] = detail
            if not ok:
                pending.append(obj)
        if not pending:
            return []
        if time.monotonic() > deadline:
            problems = []
            for obj in pending:
                problems.append(f"{_name(obj)}: {last[_name(obj)]}")
                problems += [f"    {reason}" for reason in await _why_not(client, obj)]
            return problems
        await asyncio.sleep(1.0)


async def install(
    client: KubeClient, objects: list[Obj], say: Say, *, wait: bool = True, timeout: float = 300.0
) -> int:
    say(f"Applying {len(objects)} objects (server-side, field manager {kube.FIELD_MANAGER})")
    await apply_all(client, objects, say)
    if not wait:
        return 0
    say("Waiting for the control plane and the CNI agents")
    problems = await wait_ready(client, objects, say, timeout)
    if problems:
        say(f"Not ready after {timeout:g}s:")
        for line in problems:
            say(f"  {line}")
        return 1
    say("Mizzen is installed. Label a namespace: kubectl label namespace default istio-injection=enabled")
    return 0


async def uninstall(client: KubeClient, objects: list[Obj], say: Say, *, purge: bool = False) -> int:
    """Delete what the install made, newest first; CRDs (and so every Istio resource) only with purge."""
    removed = 0
    for obj in reversed(objects):
        if obj["kind"] == "CustomResourceDefinition" and not purge:
            continue
        resource = kube.resource_of(obj)
        meta = obj["metadata"]
        path = resource.path(meta["name"], meta.get("namespace"))
        try:
            live = await client.request("GET", path)
        except ApiError as exc:
            if exc.code == 404:
                continue
            raise
        labels = (live.get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in MANAGED.items()):
            say(f"  kept {_name(obj)}: not made by mizzen install")
            continue
        try:
            await client.request("DELETE", path, query=[("propagationPolicy", "Background")])
        except ApiError as exc:
            if exc.code != 404:
                raise
        removed += 1
        say(f"  deleted {_name(obj)}")
    if not purge:
        say("CRDs kept (your Istio resources live in them); `mizzen uninstall --purge` removes them too")
    say(f"Removed {removed} objects")
    return 0
