"""Whether a pod gets the sidecar, as Istio's injector decides once its webhook was called.

Namespace selection (``istio-injection=enabled``, ``sidecar.istio.io/inject=true`` on a pod in an
unlabelled namespace) happens in the MutatingWebhookConfiguration's selectors, before the webhook is
called; this is the pod-level half, also what ``mizzen kube-inject`` applies offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from controller.inject.config import InjectConfig

INJECT = "sidecar.istio.io/inject"
STATUS = "sidecar.istio.io/status"
PROXY_NAME = "istio-proxy"


class Decision(NamedTuple):
    inject: bool
    reason: str


def _flag(value: Any) -> bool | None:
    if not isinstance(value, str):
        return None
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "y", "enabled", "1"):
        return True
    if lowered in ("false", "no", "n", "disabled", "0"):
        return False
    return None


def already_injected(pod: Mapping[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    if STATUS in (meta.get("annotations") or {}):
        return True
    spec = pod.get("spec") or {}
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    return any(isinstance(c, Mapping) and c.get("name") == PROXY_NAME for c in containers)


def decide(pod: Mapping[str, Any], namespace: str, config: InjectConfig) -> Decision:
    """Inject unless the pod opts out, lives in an excluded namespace, uses the host network or is done."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if namespace in config.excluded():
        return Decision(False, f"namespace {namespace} is never injected")
    if spec.get("hostNetwork"):
        return Decision(False, "the pod uses the host network")
    if already_injected(pod):
        return Decision(False, "already injected")
    # The label is the supported switch; the annotation is Istio's older, still honoured spelling.
    for source in (meta.get("labels") or {}, meta.get("annotations") or {}):
        if _flag(source.get(INJECT)) is False:
            return Decision(False, f"{INJECT}=false")
    return Decision(True, "selected")
