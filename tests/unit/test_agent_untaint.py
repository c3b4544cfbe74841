"""Removing the not-ready taint: only ours, without losing a concurrent change."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from cni.agent.health import Health
from cni.agent.kube import ApiError
from cni.agent.reconcile import Status
from cni.agent.untaint import NOT_READY_TAINT, remove_taint, untaint_when_ready

OURS = {"key": NOT_READY_TAINT, "effect": "NoSchedule"}
OTHER = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}


class FakeNodes:
    """An API with one node, enforcing resourceVersion on merge patches like the real one."""

    def __init__(self, taints: list[dict[str, str]], conflicts: int = 0) -> None:
        self.node: dict[str, Any] = {
            "metadata": {"name": "n1", "resourceVersion": "10"},
            "spec": {"taints": taints},
        }
        self.conflicts = conflicts
        self.patches: list[dict[str, Any]] = []

    def get(self, path: str) -> Any:
        assert path == "/api/v1/nodes/n1"
        return copy.deepcopy(self.node)

    def merge_patch(self, path: str, body: Any) -> Any:
        self.patches.append(body)
        if self.conflicts:  # somebody else wrote the node in between
            self.conflicts -= 1
            self.node["metadata"]["resourceVersion"] = str(int(self.node["metadata"]["resourceVersion"]) + 1)
        if body["metadata"]["resourceVersion"] != self.node["metadata"]["resourceVersion"]:
            raise ApiError("PATCH: HTTP 409 Conflict", 409)
        self.node["spec"]["taints"] = body["spec"]["taints"]
        self.node["metadata"]["resourceVersion"] = str(int(self.node["metadata"]["resourceVersion"]) + 1)
        return self.node


def test_removes_only_our_taint() -> None:
    api = FakeNodes([OTHER, OURS])
    assert remove_taint(api, "n1") is True
    assert api.node["spec"]["taints"] == [OTHER]
    assert remove_taint(api, "n1") is False and len(api.patches) == 1


def test_retries_on_conflict() -> None:
    api = FakeNodes([OURS], conflicts=2)
    assert remove_taint(api, "n1") is True
    assert api.node["spec"]["taints"] == [] and len(api.patches) == 3


def test_gives_up_when_the_node_keeps_changing() -> None:
    api = FakeNodes([OURS], conflicts=100)
    with pytest.raises(ApiError) as err:
        remove_taint(api, "n1")
    assert err.value.status == 409


async def test_waits_for_readiness_before_untainting() -> None:
    api = FakeNodes([OURS])
    health = Health(stale_after=30)

    class Log:
        def info(self, *a: Any, **k: Any) -> None: ...
        def warning(self, *a: Any, **k: Any) -> None: ...

    task = asyncio.create_task(untaint_when_ready(api, "n1", health, Log(), interval=0.01, recheck=0.01))
    try:
        await asyncio.sleep(0.1)
        assert api.node["spec"]["taints"] == [OURS]  # not ready: the node stays closed to pods
        health.record(Status(True, "ready"))
        for _ in range(200):
            if not api.node["spec"]["taints"]:
                break
            await asyncio.sleep(0.01)
        assert api.node["spec"]["taints"] == []
    finally:
        task.cancel()
