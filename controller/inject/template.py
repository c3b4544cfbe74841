"""The injected pod: a pure function from a pod (and the injector's settings) to the pod with the sidecar.

What it adds, as Istio's injector does in CNI mode (no init container: capture is the CNI plugin's job):
the ``istio-proxy`` container running ``mizzen-proxy`` (a native sidecar, or the first container with the
app held until it is ready), its volumes (a projected service-account token for the CA, the pod's labels
through the downward API, a scratch dir), the ``sidecar.istio.io/status`` annotation the CNI plugin looks
for, the canonical-service and tlsMode labels, Prometheus annotations for 15020, and app probes rewritten
through 15020.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from controller.inject import probes
from controller.inject.config import InjectConfig
from controller.inject.policy import PROXY_NAME, STATUS

HEALTH_PORT = 15021
METRICS_PORT = probes.METRICS_PORT
PROXY_UID = 1337
PODINFO_DIR = "/etc/istio/pod"
TOKEN_DIR = "/var/run/secrets/tokens"
SCRATCH_DIR = "/etc/istio/proxy"
# The mesh's root certificate, from the ConfigMap the controller keeps in every namespace: the sidecar
# verifies the CA (on 15012, over TLS) with it before it sends its certificate request and token.
CA_ROOT_DIR = "/var/run/secrets/istio"
CA_ROOT_CONFIGMAP = "istio-ca-root-cert"
VOLUMES = ("istio-envoy", "istio-podinfo", "istio-token", "istiod-ca-cert")

CANONICAL_NAME = "service.istio.io/canonical-name"
CANONICAL_REVISION = "service.istio.io/canonical-revision"
TLS_MODE = "security.istio.io/tlsMode"

# Per-pod overrides Istio users already write.
A_CPU = "sidecar.istio.io/proxyCPU"
A_MEMORY = "sidecar.istio.io/proxyMemory"
A_CPU_LIMIT = "sidecar.istio.io/proxyCPULimit"
A_MEMORY_LIMIT = "sidecar.istio.io/proxyMemoryLimit"
A_LOG_LEVEL = "sidecar.istio.io/logLevel"
A_PROXY_CONFIG = "proxy.istio.io/config"
_QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?)(ms|s|m|h)$")
_PROXY_CONFIG_KEYS = ("holdApplicationUntilProxyStarts", "terminationDrainDuration")


class InjectError(ValueError):
    """The pod asks for something the injector cannot do; the message names the annotation or field."""


def workload_name(pod: Mapping[str, Any]) -> str:
    """The workload a pod belongs to (its Deployment, StatefulSet...), as Istio names it in telemetry."""
    meta = pod.get("metadata") or {}
    owners = [o for o in meta.get("ownerReferences") or () if isinstance(o, Mapping)]
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if owner is not None:
        name, kind = str(owner.get("name", "")), owner.get("kind")
        if kind == "ReplicaSet":
            suffix = (meta.get("labels") or {}).get("pod-template-hash")
            if suffix and name.endswith(f"-{suffix}"):
                return name[: -len(suffix) - 1]
            return name.rsplit("-", 1)[0] if "-" in name else name
        if kind == "Job" and re.search(r"-[0-9]{8,}$", name):
            return name.rsplit("-", 1)[0]  # a CronJob's Job: <cronjob>-<scheduled time>
        return name
    generate = meta.get("generateName")
    if generate:
        return str(generate).rstrip("-")
    return str(meta.get("name", ""))


def canonical(pod: Mapping[str, Any]) -> tuple[str, str]:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    name = (
        labels.get(CANONICAL_NAME)
        or labels.get("app.kubernetes.io/name")
        or labels.get("app")
        or workload_name(pod)
    )
    revision = (
        labels.get(CANONICAL_REVISION) or labels.get("app.kubernetes.io/version") or labels.get("version")
    )
    return str(name), str(revision or "latest")


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InjectError(f"{where}: must be true or false (got {value!r})")


def _seconds(value: Any, where: str) -> float:
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise InjectError(f"{where}: must be a duration such as 5s or 500ms (got {value!r})")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(3)]
    return float(match.group(1)) * scale


class _Settings:
    """The injector's settings with the pod's own annotations applied."""

    def __init__(self, config: InjectConfig, annotations: Mapping[str, Any]) -> None:
        self.warnings: list[str] = []
        self.requests = dict(config.resources.requests)
        self.limits = dict(config.resources.limits)
        for annotation, target, key in (
            (A_CPU, self.requests, "cpu"),
            (A_MEMORY, self.requests, "memory"),
            (A_CPU_LIMIT, self.limits, "cpu"),
            (A_MEMORY_LIMIT, self.limits, "memory"),
        ):
            if annotation in annotations:
                value = annotations[annotation]
                if not isinstance(value, str) or not _QUANTITY.match(value):
                    raise InjectError(
                        f"annotation {annotation}: must be a Kubernetes quantity such as 100m or 128Mi "
                        f"(got {value!r})"
                    )
                target[key] = value
        self.log_level = str(annotations.get(A_LOG_LEVEL, config.log_level))
        if self.log_level not in _LEVELS:
            raise InjectError(
                f"annotation {A_LOG_LEVEL}: must be one of {', '.join(_LEVELS)} (got {self.log_level!r})"
            )
        self.rewrite_probes = config.rewrite_app_probers
        if probes.REWRITE_ANNOTATION in annotations:
            where = f"annotation {probes.REWRITE_ANNOTATION}"
            self.rewrite_probes = _bool(annotations[probes.REWRITE_ANNOTATION], where)
        self.hold = config.hold_application_until_proxy_starts
        self.drain = config.drain_duration_seconds
        if A_PROXY_CONFIG in annotations:
            self._proxy_config(annotations[A_PROXY_CONFIG])

    def _proxy_config(self, text: Any) -> None:
        where = f"annotation {A_PROXY_CONFIG}"
        try:
            data = yaml.safe_load(text) if isinstance(text, str) else None
        except yaml.YAMLError as exc:
            raise InjectError(f"{where}: not YAML: {exc}") from None
        if not isinstance(data, Mapping):
            raise InjectError(f"{where}: must be a YAML mapping of ProxyConfig fields")
        if "holdApplicationUntilProxyStarts" in data:
            self.hold = _bool(
                data["holdApplicationUntilProxyStarts"], f"{where}: holdApplicationUntilProxyStarts"
            )
        if "terminationDrainDuration" in data:
            self.drain = _seconds(data["terminationDrainDuration"], f"{where}: terminationDrainDuration")
        ignored = sorted(str(k) for k in data if k not in _PROXY_CONFIG_KEYS)
        if ignored:
            self.warnings.append(
                f"{where}: Mizzen does not implement {', '.join(ignored)}; only "
                f"{', '.join(_PROXY_CONFIG_KEYS)} take effect"
            )


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def proxy_container(
    pod: Mapping[str, Any],
    config: InjectConfig,
    settings: _Settings,
    *,
    native: bool,
    probers: Mapping[str, Any],
    app_containers: list[str],
) -> dict[str, Any]:
    """The ``istio-proxy`` container for this pod."""
    env: list[dict[str, Any]] = [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("INSTANCE_IP", "status.podIP"),
        _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        _field_env("HOST_IP", "status.hostIP"),
        _field_env("NODE_NAME", "spec.nodeName"),
        {"name": "ISTIO_META_WORKLOAD_NAME", "value": workload_name(pod)},
        {"name": "ISTIO_META_CLUSTER_ID", "value": config.cluster_id},
        {"name": "ISTIO_META_APP_CONTAINERS", "value": ",".join(app_containers)},
        {"name": "MIZZEN_CLUSTER_DOMAIN", "value": config.cluster_domain},
        {"name": "MIZZEN_LOG_FORMAT", "value": "json"},
    ]
    if probers:
        env.append({"name": probes.PROBERS_ENV, "value": json.dumps(probers, sort_keys=True)})
    resources: dict[str, Any] = {}
    if settings.requests:
        resources["requests"] = dict(settings.requests)
    if settings.limits:
        resources["limits"] = dict(settings.limits)
    ready = {"path": "/healthz/ready", "port": HEALTH_PORT, "scheme": "HTTP"}
    container: dict[str, Any] = {
        "name": PROXY_NAME,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": [
            "--xds-address",
            config.xds_address,
            "--ca-address",
            config.ca_address,
            "--ca-root-cert",
            f"{CA_ROOT_DIR}/root-cert.pem",
            "--bootstrap-out",
            f"{SCRATCH_DIR}/bootstrap.json",
            "--drain-time-s",
            f"{settings.drain:g}",
            "--log-level",
            settings.log_level,
        ],
        "env": env,
        "ports": [{"containerPort": METRICS_PORT, "name": "mizzen-metrics", "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": ready,
            "periodSeconds": 15,
            "timeoutSeconds": 3,
            "failureThreshold": 4,
        },
        "resources": resources,
        "securityContext": proxy_security_context(),
        "volumeMounts": proxy_volume_mounts(),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if native:
        # Kubelet starts the next container only once this probe passes: the app never starts unproxied.
        container["restartPolicy"] = "Always"
        container["startupProbe"] = {
            "httpGet": dict(ready),
            "periodSeconds": 1,
            "timeoutSeconds": 3,
            "failureThreshold": 600,
        }
    elif settings.hold:
        # postStart blocks the start of the following containers until the proxy reports ready.
        container["lifecycle"] = {
            "postStart": {
                "exec": {"command": ["mizzen-proxy", "--wait-ready", "--health-port", str(HEALTH_PORT)]}
            }
        }
    return container


def proxy_security_context() -> dict[str, Any]:
    """The proxy container's: UID 1337 (what the capture rules exempt), nothing more than it needs."""
    return {
        "runAsUser": PROXY_UID,
        "runAsGroup": PROXY_UID,
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }


def proxy_volume_mounts() -> list[dict[str, Any]]:
    """Where the proxy container finds its scratch space, pod info, token and root certificate
    (the ``volumes`` below)."""
    return [
        {"name": "istio-envoy", "mountPath": SCRATCH_DIR},
        {"name": "istio-podinfo", "mountPath": PODINFO_DIR},
        {"name": "istio-token", "mountPath": TOKEN_DIR},
        {"name": "istiod-ca-cert", "mountPath": CA_ROOT_DIR, "readOnly": True},
    ]


def volumes(config: InjectConfig) -> list[dict[str, Any]]:
    return [
        {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
        {
            "name": "istio-podinfo",
            "downwardAPI": {
                "items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                ]
            },
        },
        {
            "name": "istio-token",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": config.token_audience,
                            "expirationSeconds": 43200,
                            "path": "istio-token",
                        }
                    }
                ]
            },
        },
        {"name": "istiod-ca-cert", "configMap": {"name": CA_ROOT_CONFIGMAP}},
    ]


def inject(pod: Mapping[str, Any], config: InjectConfig, *, native: bool) -> tuple[dict[str, Any], list[str]]:
    """The pod with the sidecar, and warnings for the user (ignored settings). Raises InjectError."""
    out = copy.deepcopy(dict(pod))
    meta = out.setdefault("metadata", {})
    spec = out.setdefault("spec", {})
    annotations = meta.setdefault("annotations", {})
    labels = meta.setdefault("labels", {})
    settings = _Settings(config, annotations)
    containers = [dict(c) for c in spec.get("containers") or ()]
    app_names = [str(c.get("name", "")) for c in containers]
    for name in VOLUMES:
        if any(v.get("name") == name for v in spec.get("volumes") or ()):
            raise InjectError(f"spec.volumes: the name {name!r} is reserved for the sidecar")
    probers: dict[str, Any] = {}
    if settings.rewrite_probes:
        containers, probers = probes.rewrite(containers)
    proxy = proxy_container(out, config, settings, native=native, probers=probers, app_containers=app_names)
    init = list(spec.get("initContainers") or ())
    if native:
        # First, so that init containers that need the network are proxied too (capture is already on).
        spec["initContainers"] = [proxy, *init]
        spec["containers"] = containers
    else:
        spec["containers"] = [proxy, *containers] if settings.hold else [*containers, proxy]
    spec["volumes"] = [*(spec.get("volumes") or ()), *volumes(config)]
    name, revision = canonical(out)
    labels.setdefault(TLS_MODE, "istio")
    labels.setdefault(CANONICAL_NAME, name)
    labels.setdefault(CANONICAL_REVISION, revision)
    if app_names:
        annotations.setdefault("kubectl.kubernetes.io/default-container", app_names[0])
        annotations.setdefault("kubectl.kubernetes.io/default-logs-container", app_names[0])
    if not any(k.startswith("prometheus.io/") for k in annotations):
        # The app's own scrape annotations win: 15020 serves the sidecar's metrics only.
        annotations.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(METRICS_PORT),
                "prometheus.io/path": "/stats/prometheus",
            }
        )
    annotations[STATUS] = json.dumps(
        {
            "initContainers": [PROXY_NAME] if native else None,
            "containers": None if native else [PROXY_NAME],
            "volumes": list(VOLUMES),
            "imagePullSecrets": None,
            "revision": config.revision,
        },
        separators=(",", ":"),
    )
    return out, settings.warnings
