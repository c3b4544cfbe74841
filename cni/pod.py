"""Whether a pod gets capture: Istio's injection decision, seen from the node.

The injector decides who gets a sidecar; the plugin must agree with it, and a
pod it skips must never be one that believes it is in the mesh. The rules,
in order: excluded namespaces are skipped; ``sidecar.istio.io/inject=false``
opts out; the pod must be selected (namespace ``istio-injection=enabled`` or
pod ``sidecar.istio.io/inject=true``) and carry the injector's status
annotation; a pod still carrying Istio's own ``istio-init`` is left to it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # see cni/spec.py: no typing at run time on the plugin's path
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

INJECT = "sidecar.istio.io/inject"
STATUS = "sidecar.istio.io/status"
NS_INJECTION = "istio-injection"
INTERCEPTION_MODE = "sidecar.istio.io/interceptionMode"
DEFAULT_EXCLUDED_NAMESPACES = ("kube-system",)


def _flag(meta: Mapping[str, Any], key: str) -> str | None:
    """A pod's inject flag: the label wins over the older annotation form."""
    for section in ("labels", "annotations"):
        value = (meta.get(section) or {}).get(key)
        if value is not None:
            return str(value).strip().lower()
    return None


def metadata(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """Accept a whole object (``{"metadata": {...}}``) or its metadata alone."""
    if not obj:
        return {}
    inner = obj.get("metadata")
    return inner if isinstance(inner, dict) else obj


def capture_decision(
    pod: Mapping[str, Any],
    namespace: Mapping[str, Any] | None,
    exclude_namespaces: Iterable[str] = DEFAULT_EXCLUDED_NAMESPACES,
) -> tuple[bool, str]:
    """``(capture?, reason)`` for a pod object or its metadata, with its namespace's."""
    meta = metadata(pod)
    ns_meta = metadata(namespace)
    ns_name = meta.get("namespace") or ns_meta.get("name") or ""
    if ns_name in set(exclude_namespaces):
        return False, f"namespace {ns_name} is excluded"
    flag = _flag(meta, INJECT)
    if flag == "false":
        return False, f"pod opts out with {INJECT}=false"
    annotations = meta.get("annotations") or {}
    if annotations.get(INTERCEPTION_MODE) == "NONE":
        return False, f"{INTERCEPTION_MODE}=NONE"
    ns_selected = (ns_meta.get("labels") or {}).get(NS_INJECTION) == "enabled"
    if not ns_selected and flag != "true":
        return False, f"neither namespace label {NS_INJECTION}=enabled nor pod {INJECT}=true"
    if STATUS not in annotations:
        return False, f"pod has no {STATUS} annotation (the injector did not add a sidecar)"
    spec = pod.get("spec") if "metadata" in pod else None
    if isinstance(spec, dict):
        if any(c.get("name") == "istio-init" for c in spec.get("initContainers") or ()):
            return False, "pod has an istio-init container that programs capture itself"
        names = {
            c.get("name") for c in [*(spec.get("containers") or ()), *(spec.get("initContainers") or ())]
        }
        if "istio-proxy" not in names:
            return False, "pod has no istio-proxy container"
    return True, "sidecar injected"
