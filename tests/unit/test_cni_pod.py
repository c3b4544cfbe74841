"""Which pods get capture: the same answer the injector gives."""

from __future__ import annotations

from typing import Any

import pytest

from cni.pod import capture_decision

STATUS = {"sidecar.istio.io/status": "{}"}
ENABLED = {"metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}}


def meta(
    ns: str = "shop", labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "name": "web",
        "namespace": ns,
        "labels": labels or {},
        "annotations": {**STATUS, **(annotations or {})},
    }


@pytest.mark.parametrize(
    ("pod", "namespace", "captured", "reason"),
    [
        (meta(), ENABLED, True, "sidecar injected"),
        (meta(ns="kube-system"), ENABLED, False, "excluded"),
        (meta(labels={"sidecar.istio.io/inject": "false"}), ENABLED, False, "opts out"),
        (meta(annotations={"sidecar.istio.io/inject": "false"}), ENABLED, False, "opts out"),
        (meta(labels={"sidecar.istio.io/inject": "true"}), {}, True, "sidecar injected"),
        (meta(), {"metadata": {"labels": {"istio-injection": "disabled"}}}, False, "neither"),
        ({"name": "web", "namespace": "shop"}, ENABLED, False, "sidecar.istio.io/status"),
        (meta(annotations={"sidecar.istio.io/interceptionMode": "NONE"}), ENABLED, False, "NONE"),
        ({"metadata": meta(), "spec": {"containers": [{"name": "web"}]}}, ENABLED, False, "no istio-proxy"),
        (
            {
                "metadata": meta(),
                "spec": {"containers": [{"name": "web"}], "initContainers": [{"name": "istio-proxy"}]},
            },
            ENABLED,
            True,
            "sidecar injected",
        ),
        (
            {
                "metadata": meta(),
                "spec": {"containers": [{"name": "istio-proxy"}], "initContainers": [{"name": "istio-init"}]},
            },
            ENABLED,
            False,
            "istio-init",
        ),
    ],
    ids=[
        "namespace-label",
        "kube-system",
        "label-opt-out",
        "annotation-opt-out",
        "pod-label",
        "namespace-disabled",
        "not-injected",
        "interception-none",
        "no-proxy-container",
        "native-sidecar",
        "istio-init-present",
    ],
)
def test_decision(pod: dict[str, Any], namespace: dict[str, Any], captured: bool, reason: str) -> None:
    got, why = capture_decision(pod, namespace)
    assert got is captured
    assert reason in why


def test_label_wins_over_annotation() -> None:
    pod = meta(labels={"sidecar.istio.io/inject": "true"}, annotations={"sidecar.istio.io/inject": "false"})
    assert capture_decision(pod, {})[0] is True


def test_custom_excluded_namespaces() -> None:
    assert capture_decision(meta(ns="infra"), ENABLED, ["infra"])[0] is False
    assert capture_decision(meta(ns="kube-system"), ENABLED, ["infra"])[0] is True
