"""Repair of pods that missed capture, with a fake pod source and fake netns operations.

The decision is the plugin's real one (cni.pod.capture_decision), so these tests
also pin that the agent and the plugin agree on who is captured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import pytest

from cni.agent.repair import UNINITIALIZED_LABEL, Mode, PodRecord, Repairer
from mizzen import logs

STATUS = {"sidecar.istio.io/status": '{"containers":["istio-proxy"]}'}
MESHED_NS = {"istio-injection": "enabled"}


class FakeSource:
    def __init__(self, pods: list[PodRecord]) -> None:
        self.pods = pods

    async def list_pods(self) -> list[PodRecord]:
        return list(self.pods)


@dataclass
class FakeNetns:
    """Stands for cni.capture: which netns paths have our chains, and what install was asked."""

    captured: set[str] = field(default_factory=set)
    broken: set[str] = field(default_factory=set)
    installs: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    def is_installed(self, netns: str) -> bool:
        self.checks.append(netns)
        if netns in self.broken:
            raise RuntimeError("netns vanished")
        return netns in self.captured

    def install(self, netns: str, annotations: Mapping[str, str]) -> list[int]:
        if netns in self.broken:
            raise RuntimeError("iptables-restore failed")
        self.installs.append((netns, dict(annotations)))
        self.captured.add(netns)
        return [4]


@dataclass
class Labels:
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def hook(self, pod: str):
        async def set_label(key: str, value: str) -> None:
            self.calls.append((pod, key, value))

        return set_label


def record(name: str, *, ns: str = "shop", netns: str | None = None, **kw: object) -> PodRecord:
    base: dict = {
        "namespace": ns,
        "name": name,
        "uid": f"uid-{name}",
        "labels": {},
        "annotations": dict(STATUS),
        "netns": netns if netns is not None else f"/run/netns/{ns}-{name}",
        "namespace_labels": dict(MESHED_NS),
    }
    base.update(kw)
    return PodRecord(**base)


def repairer(pods: list[PodRecord], netns: FakeNetns, mode: Mode = Mode.APPLY) -> Repairer:
    return Repairer(
        FakeSource(pods),
        mode,
        ["kube-system"],
        logs.get("test"),
        is_installed=netns.is_installed,
        install=netns.install,
    )


async def test_apply_only_to_pods_that_should_be_captured_and_are_not() -> None:
    annotated = {**STATUS, "traffic.sidecar.istio.io/excludeOutboundPorts": "5432"}
    missing = record("missing", annotations=annotated)
    done = record("done")
    pods = [
        missing,
        done,
        record("no-sidecar", annotations={}),
        record("opted-out", labels={"sidecar.istio.io/inject": "false"}),
        record("system", ns="kube-system"),
        record("unlabelled-ns", namespace_labels={}),
        record("pod-opt-in", namespace_labels={}, labels={"sidecar.istio.io/inject": "true"}),
        replace(record("no-netns"), netns=None),
    ]
    netns = FakeNetns(captured={done.netns or ""})
    outcomes = await repairer(pods, netns).run_once()

    assert [(o.pod, o.action) for o in outcomes] == [
        ("shop/missing", "applied"),
        ("shop/pod-opt-in", "applied"),
    ]
    assert netns.installs[0] == (missing.netns, annotated)  # annotations reach the rule builder
    # Only candidates are inspected: excluded and unselected pods never have their netns entered.
    assert set(netns.checks) == {missing.netns, done.netns, pods[6].netns}
    assert len(netns.checks) == 3


async def test_repaired_pods_are_not_rechecked_but_new_netns_is() -> None:
    pod = record("web")
    netns = FakeNetns()
    r = repairer([pod], netns)
    assert len(await r.run_once()) == 1
    assert await r.run_once() == []
    assert netns.checks == [pod.netns]
    # Same pod, new sandbox (new netns path): checked again.
    moved = replace(pod, netns="/proc/4242/ns/net")
    r.source = FakeSource([moved])
    assert [o.action for o in await r.run_once()] == ["applied"]


async def test_label_mode_labels_once_and_never_touches_the_netns() -> None:
    labels = Labels()
    pod = record("web", set_label=labels.hook("web"))
    already = record("old", labels={UNINITIALIZED_LABEL: "true"}, set_label=labels.hook("old"))
    netns = FakeNetns()
    outcomes = await repairer([pod, already], netns, Mode.LABEL).run_once()
    assert [(o.pod, o.action) for o in outcomes] == [("shop/web", "labelled")]
    assert labels.calls == [("web", UNINITIALIZED_LABEL, "true")]
    assert netns.installs == []


async def test_label_mode_without_a_hook_fails_visibly() -> None:
    outcomes = await repairer([record("web")], FakeNetns(), Mode.LABEL).run_once()
    assert [o.action for o in outcomes] == ["failed"]
    assert "cannot label" in outcomes[0].reason


async def test_failures_are_reported_and_do_not_stop_the_pass() -> None:
    bad, good = record("bad"), record("good")
    netns = FakeNetns(broken={bad.netns or ""})
    outcomes = await repairer([bad, good], netns).run_once()
    assert [(o.pod, o.action) for o in outcomes] == [("shop/bad", "failed"), ("shop/good", "applied")]


async def test_off_does_nothing() -> None:
    netns = FakeNetns()
    assert await repairer([record("web")], netns, Mode.OFF).run_once() == []
    assert netns.checks == []


@pytest.mark.parametrize("spec_containers", [["app"], ["app", "istio-proxy"]])
async def test_spec_reaches_the_decision(spec_containers: list[str]) -> None:
    spec = {"containers": [{"name": n} for n in spec_containers]}
    netns = FakeNetns()
    outcomes = await repairer([record("web", spec=spec)], netns).run_once()
    # The plugin skips pods without an istio-proxy container; so does the repair.
    assert len(outcomes) == (1 if "istio-proxy" in spec_containers else 0)
