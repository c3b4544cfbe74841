"""The chained plugin's commands: ADD, DEL, CHECK, VERSION, STATUS, GC.

Each handler takes an :class:`~cni.spec.Invocation` and returns the result
object to print (or None), raising :class:`~cni.spec.CniError` for the runtime.
"""

from __future__ import annotations

import os

from cni import capture, netns, pod, rules, spec
from cni.spec import CniError, Invocation

TYPE_CHECKING = False  # see cni/spec.py: no typing at run time on the plugin's path
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from cni.rules import Family


class _Log:
    """Logging is optional for the plugin's hot path: structlog is only imported when asked for."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._log: Any = None
        self._level = str(config.get("log_level") or os.environ.get("MIZZEN_LOG_LEVEL") or "warning")
        self._file = config.get("log_file")

    def _get(self) -> Any:
        if self._log is None:
            from mizzen import logs

            stream = open(self._file, "a") if self._file else None
            logs.setup(self._level, stream=stream, json=True)
            self._log = logs.get("cni.plugin")
        return self._log

    def info(self, event: str, **kw: Any) -> None:
        if self._level.lower() in ("debug", "info"):
            self._get().info(event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._get().warning(event, **kw)


def families_of(result: Mapping[str, Any] | None) -> tuple[Family, ...]:
    """IPv4 always (the default when a result names no address), IPv6 too for dual-stack pods."""
    ips = (result or {}).get("ips") or []
    addresses = [str(ip.get("address", "")) for ip in ips if isinstance(ip, dict)]
    has6 = any(":" in a for a in addresses)
    has4 = any(a and ":" not in a for a in addresses)
    if has6 and not has4:
        return (6,)
    return (4, 6) if has6 else (4,)


def _pod_metadata(inv: Invocation, log: _Log) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The pod and namespace objects: from ``args.mizzen`` when the runtime passed them, else the API."""
    args = inv.config.get("args")
    supplied = args.get("mizzen") if isinstance(args, dict) else None
    if supplied is not None:
        if not isinstance(supplied, dict) or not isinstance(supplied.get("pod"), dict):
            raise CniError(
                spec.INVALID_CONFIG, "invalid args.mizzen", 'expected {"pod": {...}, "namespace": {...}}'
            )
        ns = supplied.get("namespace") or {}
        if not isinstance(ns, dict):
            raise CniError(spec.INVALID_CONFIG, "invalid args.mizzen.namespace", "expected an object")
        return supplied["pod"], ns

    kube_cfg = inv.config.get("kubernetes") or {}
    kubeconfig = kube_cfg.get("kubeconfig") if isinstance(kube_cfg, dict) else None
    if not kubeconfig:
        raise CniError(
            spec.INVALID_CONFIG,
            "no source of pod metadata",
            "set kubernetes.kubeconfig in the plugin config or pass args.mizzen",
        )
    from cni import kube  # urllib and ssl cost ~35 ms to import; only pods read from the API pay it

    try:
        client = kube.client_from_kubeconfig(kubeconfig, timeout=float(kube_cfg.get("api_timeout", 5)))
        return kube.fetch_pod_and_namespace(
            client,
            inv.pod_namespace,
            inv.pod_name,
            attempts=int(kube_cfg.get("api_attempts", 5)),
            delay=float(kube_cfg.get("api_retry_delay", 1.0)),
        )
    except kube.KubeError as exc:
        log.warning("pod metadata unavailable", pod=inv.pod_name, namespace=inv.pod_namespace, error=str(exc))
        code = spec.TRY_AGAIN_LATER if exc.retriable else spec.POD_METADATA_UNAVAILABLE
        raise CniError(
            code,
            f"cannot read pod {inv.pod_namespace}/{inv.pod_name} from the Kubernetes API",
            f"{exc}; refusing to start a pod that may need capture without it",
        ) from None


def _decide(inv: Invocation, log: _Log) -> tuple[bool, Mapping[str, Any]]:
    """Whether this pod gets capture, and its annotations when it does."""
    if not inv.pod_namespace or not inv.pod_name:
        log.info("not a Kubernetes pod, skipping", container=inv.container_id)
        return False, {}
    excluded = inv.config.get("exclude_namespaces", pod.DEFAULT_EXCLUDED_NAMESPACES)
    if inv.pod_namespace in excluded:
        log.info("namespace excluded", namespace=inv.pod_namespace)
        return False, {}
    pod_obj, ns_obj = _pod_metadata(inv, log)
    meta = {"namespace": inv.pod_namespace, **pod.metadata(pod_obj)}
    # The spec (containers) is only there when the pod came from the API; the decision checks it then.
    subject = {"metadata": meta, "spec": pod_obj["spec"]} if "spec" in pod_obj else meta
    decided, reason = pod.capture_decision(subject, ns_obj, excluded)
    log.info(
        "capture decision", pod=inv.pod_name, namespace=inv.pod_namespace, capture=decided, reason=reason
    )
    return decided, pod.metadata(pod_obj).get("annotations") or {}


def _config(annotations: Mapping[str, str], inv: Invocation) -> rules.CaptureConfig:
    try:
        return rules.config_from_annotations(annotations)
    except rules.AnnotationError as exc:
        raise CniError(
            spec.INVALID_POD_ANNOTATION,
            f"pod {inv.pod_namespace}/{inv.pod_name} has an invalid annotation {exc.annotation}",
            exc.reason,
        ) from None


def _require_prev(inv: Invocation) -> Mapping[str, Any]:
    prev = inv.prev_result
    if prev is None:
        raise CniError(
            spec.INVALID_CONFIG,
            "mizzen-cni is a chained plugin",
            "no prevResult: list it after the interface plugin in a .conflist",
        )
    return prev


def add(inv: Invocation) -> Mapping[str, Any]:
    log = _Log(inv.config)
    prev = _require_prev(inv)
    capture_it, annotations = _decide(inv, log)
    if not capture_it:
        return prev
    cfg = _config(annotations, inv)
    try:
        netns.enter(inv.netns)  # from here on the process lives in the pod's netns (API calls are done)
        changed = capture.install(inv.netns, cfg, families_of(prev))
    except netns.NetnsError as exc:
        raise CniError(spec.UNKNOWN_CONTAINER, "cannot enter the pod's network namespace", str(exc)) from None
    except capture.CaptureError as exc:
        raise CniError(spec.CAPTURE_FAILED, f"capture rules not applied: {exc.msg}", exc.details) from None
    log.info("capture installed", pod=inv.pod_name, namespace=inv.pod_namespace, changed=changed)
    return prev


def delete(inv: Invocation) -> None:
    """Remove our rules. DEL must succeed when there is nothing left to clean (spec: idempotent)."""
    log = _Log(inv.config)
    if not inv.netns:
        return
    try:
        netns.enter(inv.netns)
    except (netns.NetnsError, OSError):
        return
    for family in families_of(inv.prev_result):
        try:
            capture.remove(inv.netns, (family,))
        except capture.CaptureError as exc:
            if family == 4:
                raise CniError(
                    spec.CAPTURE_FAILED, f"capture rules not removed: {exc.msg}", exc.details
                ) from None
            log.warning("IPv6 capture rules not removed", error=str(exc))


def check(inv: Invocation) -> None:
    log = _Log(inv.config)
    prev = _require_prev(inv)
    capture_it, annotations = _decide(inv, log)
    if not capture_it:
        return
    try:
        netns.enter(inv.netns)
        problems = capture.check(inv.netns, _config(annotations, inv), families_of(prev))
    except netns.NetnsError as exc:
        raise CniError(spec.UNKNOWN_CONTAINER, "cannot enter the pod's network namespace", str(exc)) from None
    except capture.CaptureError as exc:
        raise CniError(spec.CAPTURE_FAILED, f"cannot read capture rules: {exc.msg}", exc.details) from None
    if problems:
        raise CniError(spec.CAPTURE_MISSING, "capture rules are missing or altered", "; ".join(problems))


def status(inv: Invocation) -> None:
    """Ready when the iptables tools run and the kubeconfig (if any) is readable."""
    for name in ("iptables-save", "iptables-restore"):
        tool = capture._binary(name)
        if not os.access(tool, os.X_OK):
            raise CniError(spec.PLUGIN_NOT_AVAILABLE, "capture unavailable", f"{name} not found")
    kube_cfg = inv.config.get("kubernetes") or {}
    kubeconfig = kube_cfg.get("kubeconfig") if isinstance(kube_cfg, dict) else None
    if kubeconfig and not os.access(kubeconfig, os.R_OK):
        raise CniError(
            spec.PLUGIN_NOT_AVAILABLE, "capture unavailable", f"kubeconfig {kubeconfig} is not readable"
        )


def gc(inv: Invocation) -> None:
    """Our only state lives in each pod's netns and dies with it: nothing to collect."""


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check, "STATUS": status, "GC": gc}


def run(inv: Invocation) -> Mapping[str, Any] | None:
    if inv.command == "VERSION":
        return spec.version_result()
    return HANDLERS[inv.command](inv)
