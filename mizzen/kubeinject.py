"""``mizzen kube-inject -f FILE``: the webhook's injection applied offline to manifests (istioctl's
kube-inject): pods and the pod templates of workloads, everything else passed through unchanged."""

from __future__ import annotations

from typing import Any

import yaml

from controller.inject.config import InjectConfig
from controller.inject.policy import decide
from controller.inject.template import inject

Obj = dict[str, Any]
_TEMPLATED = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController")


class KubeInjectError(ValueError):
    """A document that cannot be injected; names the document and the problem."""


def _inject_pod(
    pod: Obj, namespace: str, config: InjectConfig, native: bool, where: str, warnings: list[str]
) -> Obj:
    if not decide(pod, namespace, config).inject:
        return pod
    from controller.inject.template import InjectError

    try:
        out, notes = inject(pod, config, native=native)
    except InjectError as exc:
        raise KubeInjectError(f"{where}: {exc}") from None
    warnings += [f"{where}: {note}" for note in notes]
    return out


def inject_object(obj: Obj, config: InjectConfig, *, native: bool, where: str, warnings: list[str]) -> Obj:
    kind = obj.get("kind")
    namespace = str((obj.get("metadata") or {}).get("namespace") or "default")
    if kind == "List":
        obj = dict(obj)
        obj["items"] = [
            inject_object(item, config, native=native, where=f"{where} item {i + 1}", warnings=warnings)
            for i, item in enumerate(obj.get("items") or ())
        ]
        return obj
    if kind == "Pod":
        return _inject_pod(obj, namespace, config, native, where, warnings)
    if kind in _TEMPLATED or kind == "CronJob":
        obj = dict(obj)
        spec = dict(obj.get("spec") or {})
        holder = spec
        if kind == "CronJob":
            job = dict(spec.get("jobTemplate") or {})
            holder = dict(job.get("spec") or {})
        template = holder.get("template")
        if not isinstance(template, dict):
            raise KubeInjectError(f"{where}: {kind} has no pod template")
        injected = _inject_pod(template, namespace, config, native, f"{where} ({kind})", warnings)
        holder["template"] = injected
        if kind == "CronJob":
            job["spec"] = holder
            spec["jobTemplate"] = job
        obj["spec"] = spec
        return obj
    return obj


def kube_inject(text: str, config: InjectConfig, *, native: bool, origin: str = "-") -> tuple[str, list[str]]:
    """The manifests with the sidecar in every pod that would get it; warnings for ignored settings."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise KubeInjectError(f"{origin}: not YAML: {exc}") from None
    warnings: list[str] = []
    out = []
    for number, doc in enumerate(docs, 1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise KubeInjectError(f"{origin}: document {number}: not a Kubernetes object")
        out.append(
            inject_object(doc, config, native=native, where=f"{origin}: document {number}", warnings=warnings)
        )
    return yaml.safe_dump_all(out, sort_keys=False, width=120), warnings
