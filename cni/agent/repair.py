"""Repairing pods that started before capture was in place on their node.

A pod whose sandbox was created before the agent chained the plugin (a node
joining, the DaemonSet rolling) runs its sidecar with no redirect: traffic
bypasses the mesh silently. Each pass lists this node's pods from a
:class:`PodSource`, picks those the plugin would have captured (the plugin's own
decision, :func:`cni.pod.capture_decision`) and, when their netns has no capture
chains, either programs them in place (``apply``) or labels the pod
(``label``) so that an operator or controller can recreate it.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cni import capture, pod

# Set on pods found without capture in "label" mode.
UNINITIALIZED_LABEL = "cni.mizzen.io/uninitialized"

LabelHook = Callable[[str, str], Awaitable[None]]
Decide = Callable[[Mapping[str, Any], Mapping[str, Any], Iterable[str]], tuple[bool, str]]


class Mode(enum.StrEnum):
    """What to do with a pod that should be captured but is not."""

    APPLY = "apply"
    LABEL = "label"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class PodRecord:
    """A pod on this node as the repair sees it.

    ``netns`` is a path to its network namespace (``/proc/PID/ns/net``,
    ``/run/netns/NAME``), None when it could not be found. ``spec``, when the
    source has it, lets the decision see the containers as the plugin does.
    ``set_label`` is how the source labels the pod (a merge-patch on a cluster);
    None when it cannot.
    """

    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    netns: str | None
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    spec: Mapping[str, Any] | None = None
    set_label: LabelHook | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def pod_object(self) -> dict[str, Any]:
        """The pod in the shape of an API object, for the plugin's decision."""
        obj: dict[str, Any] = {
            "metadata": {
                "namespace": self.namespace,
                "name": self.name,
                "uid": self.uid,
                "labels": dict(self.labels),
                "annotations": dict(self.annotations),
            }
        }
        if self.spec is not None:
            obj["spec"] = self.spec
        return obj

    def namespace_object(self) -> dict[str, Any]:
        return {"metadata": {"name": self.namespace, "labels": dict(self.namespace_labels)}}


class PodSource(Protocol):
    """Lists the pods running on this node (the Kubernetes API, or local mode's files)."""

    async def list_pods(self) -> list[PodRecord]: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one pass did to one pod that needed attention."""

    pod: str
    action: str  # "applied", "labelled", "failed"
    reason: str


class Repairer:
    """Finds this node's uncaptured pods and fixes or labels them; see :meth:`run_once`.

    The decision and the netns operations default to the plugin's own
    (:mod:`cni.pod`, :mod:`cni.capture`); tests pass fakes.
    """

    def __init__(
        self,
        source: PodSource,
        mode: Mode,
        exclude_namespaces: Iterable[str],
        log: Any,
        *,
        decide: Decide = pod.capture_decision,
        is_installed: Callable[[str], bool] = capture.is_installed,
        install: Callable[[str, Mapping[str, str]], object] = capture.install,
    ) -> None:
        self.source = source
        self.mode = mode
        self.exclude_namespaces = tuple(exclude_namespaces)
        self.log = log
        self._decide = decide
        self._is_installed = is_installed
        self._install = install
        # Pods whose netns was seen with capture: rules do not vanish on their own, so
        # they are not re-checked each pass (each check is an iptables-save in the netns).
        self._captured: set[tuple[str, str]] = set()

    async def run_once(self) -> list[Outcome]:
        """One pass over the node's pods; returns what was done (pods already fine are left out)."""
        if self.mode is Mode.OFF:
            return []
        pods = await self.source.list_pods()
        self._captured &= {(p.uid, p.netns) for p in pods if p.netns}
        outcomes = []
        for record in pods:
            outcome = await self._one(record)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    async def _one(self, record: PodRecord) -> Outcome | None:
        wanted, _ = self._decide(record.pod_object(), record.namespace_object(), self.exclude_namespaces)
        if not wanted or record.netns is None:
            # No netns: not started yet, gone, or on the host network; nothing to repair.
            return None
        key = (record.uid, record.netns)
        if key in self._captured:
            return None
        try:
            installed = await asyncio.to_thread(self._is_installed, record.netns)
        except Exception as exc:  # the netns may vanish between listing and checking
            return self._failed(record, f"cannot inspect netns {record.netns}: {exc}")
        if installed:
            self._captured.add(key)
            return None
        if self.mode is Mode.APPLY:
            return await self._apply(record, key)
        return await self._label(record)

    async def _apply(self, record: PodRecord, key: tuple[str, str]) -> Outcome:
        try:
            await asyncio.to_thread(self._install, record.netns or "", dict(record.annotations))
        except Exception as exc:
            return self._failed(record, f"applying capture failed: {exc}")
        self._captured.add(key)
        self.log.info("repaired pod capture", pod=record.key, netns=record.netns)
        return Outcome(record.key, "applied", "capture rules were missing")

    async def _label(self, record: PodRecord) -> Outcome | None:
        if record.labels.get(UNINITIALIZED_LABEL) == "true":
            return None
        if record.set_label is None:
            return self._failed(record, "the pod source cannot label pods")
        try:
            await record.set_label(UNINITIALIZED_LABEL, "true")
        except Exception as exc:
            return self._failed(record, f"labelling failed: {exc}")
        self.log.info("labelled pod without capture", pod=record.key, label=UNINITIALIZED_LABEL)
        return Outcome(record.key, "labelled", "capture rules were missing")

    def _failed(self, record: PodRecord, reason: str) -> Outcome:
        self.log.warning("pod repair failed", pod=record.key, reason=reason)
        return Outcome(record.key, "failed", reason)
