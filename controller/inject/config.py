"""What the injector puts into a pod: the sidecar's image, resources, controller address and switches.

The same settings drive the webhook (read from the ``mizzen-sidecar-injector`` ConfigMap the installer
renders) and ``mizzen kube-inject`` (rendered offline from the same profile), so both inject the same pod.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

# Namespaces whose pods are never injected, whatever their labels say (Istio's ignored namespaces).
ALWAYS_EXCLUDED = ("kube-system", "kube-public")


class ConfigError(ValueError):
    """The injection config cannot be used; the message names the file and the field."""


class Resources(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    requests: dict[str, str] = msgspec.field(default_factory=dict)
    limits: dict[str, str] = msgspec.field(default_factory=dict)


class InjectConfig(msgspec.Struct, forbid_unknown_fields=True, rename="camel", kw_only=True):
    """The injector's settings; YAML keys are the camelCase of these names."""

    image: str = "mizzen/proxy:0.1.0"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    # Where sidecars find the controller's plaintext xDS (the Service's 15010).
    xds_address: str = "mizzen-controller.mizzen-system.svc:15010"
    # Where sidecars ask for their workload certificate: the controller's CA over TLS (the Service's 15012),
    # verified with the root from the istio-ca-root-cert ConfigMap.
    ca_address: str = "mizzen-controller.mizzen-system.svc:15012"
    mesh_namespace: str = "mizzen-system"
    excluded_namespaces: list[str] = msgspec.field(default_factory=lambda: list(ALWAYS_EXCLUDED))
    # "auto": a native sidecar (restartable init container) where the cluster runs Kubernetes 1.29+.
    native_sidecar: bool | Literal["auto"] = "auto"
    # Without native sidecars: the proxy goes first and the app waits for it (postStart).
    hold_application_until_proxy_starts: bool = True
    rewrite_app_probers: bool = True
    resources: Resources = msgspec.field(
        default_factory=lambda: Resources(
            requests={"cpu": "10m", "memory": "40Mi"}, limits={"memory": "256Mi"}
        )
    )
    log_level: Literal["trace", "debug", "info", "warning", "error", "critical", "off"] = "warning"
    drain_duration_seconds: float = 5.0
    cluster_id: str = "Kubernetes"
    cluster_domain: str = "cluster.local"
    token_audience: str = "istio-ca"
    revision: str = "default"

    def excluded(self) -> frozenset[str]:
        return frozenset({*ALWAYS_EXCLUDED, *self.excluded_namespaces, self.mesh_namespace})

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


def from_dict(data: Any, origin: str = "injection config") -> InjectConfig:
    """Settings from plain data; unknown or mistyped fields are an error naming the field."""
    if data is None:
        data = {}
    try:
        return msgspec.convert(data, InjectConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def load(path: str | Path) -> InjectConfig:
    """Settings from a YAML file (the ConfigMap's ``config.yaml`` mounted into the controller)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML: {exc}") from None
    return from_dict(data, str(path))
