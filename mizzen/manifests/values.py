"""Install values: the defaults, the profiles (istioctl's ``default``, ``demo``, ``minimal``), and overrides
from ``-f values.yaml`` files and ``--set key=value``; every key is checked against the defaults' shape so
a typo is an error naming the key, never a silently ignored setting."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from mizzen import __version__


class ValuesError(ValueError):
    """A value that cannot be used; names the key (``proxy.logLevel``) and where it came from."""


DEFAULTS: dict[str, Any] = {
    "namespace": "mizzen-system",
    "hub": "mizzen",
    "tag": __version__,
    "imagePullPolicy": "IfNotPresent",
    "clusterDomain": "cluster.local",
    "components": {"controller": {"enabled": True}, "cni": {"enabled": True}, "crds": {"enabled": True}},
    "controller": {
        "replicas": 2,
        "logLevel": "info",
        "outboundTrafficPolicy": "ALLOW_ANY",
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
    },
    "cni": {
        "excludeNamespaces": ["kube-system"],
        "repairMode": "apply",
        "logLevel": "info",
        "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}},
    },
    "proxy": {
        "logLevel": "warning",
        "nativeSidecar": "auto",
        "holdApplicationUntilProxyStarts": True,
        "rewriteAppProbers": True,
        "drainDurationSeconds": 5,
        "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}, "limits": {"memory": "256Mi"}},
    },
    # Istio's gateways: mizzen-proxy as a router, selected by Gateway resources (istio: ingressgateway...).
    "gateways": {
        "ingress": {
            "enabled": True,
            "replicas": 1,
            "concurrency": 2,
            "serviceType": "LoadBalancer",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        },
        "egress": {
            "enabled": False,
            "replicas": 1,
            "concurrency": 2,
            "serviceType": "ClusterIP",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        },
    },
    # Istio's MeshConfig (the istio ConfigMap's mesh key): tracing providers and sampling, access logs.
    "meshConfig": {"defaultConfig": {"tracing": {"sampling": 1.0}}},
    "webhooks": {
        # "self": the controller issues its serving certificate; "cert-manager": cert-manager does.
        "certificates": "self",
        # Istio's default: a pod in a labelled namespace is not created unproxied while the controller is
        # down. "Ignore" trades that for availability (such pods start outside the mesh).
        "injection": {"failurePolicy": "Fail", "timeoutSeconds": 10},
        # Never block writes of Istio resources on the controller: the controller validates again on read.
        "validation": {"failurePolicy": "Ignore", "timeoutSeconds": 5},
    },
}

PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    # A first look: one controller, chatty logs.
    "demo": {
        "controller": {"replicas": 1, "logLevel": "debug", "resources": {"requests": {"cpu": "50m"}}},
        "proxy": {"logLevel": "info"},
        # Istio's demo: every request traced, access logs on.
        "meshConfig": {"accessLogFile": "/dev/stdout", "defaultConfig": {"tracing": {"sampling": 100.0}}},
        # ... and an egress gateway besides the ingress one.
        "gateways": {"egress": {"enabled": True}},
    },
    # The control plane only: no CNI agent (capture installed some other way), one replica.
    "minimal": {
        "components": {"cni": {"enabled": False}},
        "controller": {"replicas": 1},
        "gateways": {"ingress": {"enabled": False}},
    },
}

# Keys whose value is free-form (a map of anything): not checked against the defaults below them.
_FREE = {
    ("controller", "resources"),
    ("cni", "resources"),
    ("proxy", "resources"),
    ("meshConfig",),
    ("gateways", "ingress", "resources"),
    ("gateways", "egress", "resources"),
}


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check(
    values: Mapping[str, Any], shape: Mapping[str, Any], origin: str, path: tuple[str, ...] = ()
) -> None:
    for key, value in values.items():
        here = (*path, str(key))
        dotted = ".".join(here)
        if key not in shape:
            raise ValuesError(f"{origin}: unknown key {dotted} (known: {', '.join(sorted(shape))})")
        expected = shape[key]
        if here in _FREE:
            if not isinstance(value, Mapping):
                raise ValuesError(f"{origin}: {dotted} must be a mapping")
            continue
        if isinstance(expected, Mapping):
            if not isinstance(value, Mapping):
                raise ValuesError(f"{origin}: {dotted} must be a mapping, not {type(value).__name__}")
            _check(value, expected, origin, here)
        elif isinstance(expected, bool) and not isinstance(value, bool):
            raise ValuesError(f"{origin}: {dotted} must be true or false (got {value!r})")
        elif (
            isinstance(expected, int)
            and not isinstance(expected, bool)
            and (isinstance(value, bool) or not isinstance(value, int | float))
        ):
            raise ValuesError(f"{origin}: {dotted} must be a number (got {value!r})")
        elif isinstance(expected, list) and not isinstance(value, list):
            raise ValuesError(f"{origin}: {dotted} must be a list (got {value!r})")


def _scalar(text: str) -> Any:
    """``--set`` values are YAML scalars (``true``, ``2``, ``[a,b]``), as Helm's and istioctl's are."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def parse_set(assignment: str) -> dict[str, Any]:
    """``proxy.logLevel=debug`` as ``{"proxy": {"logLevel": "debug"}}``."""
    key, sep, value = assignment.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ValuesError(
            f"--set {assignment!r}: expected KEY=VALUE with a dotted key, e.g. proxy.logLevel=debug"
        )
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = _scalar(value)
    return out


def resolve(profile: str = "default", files: Iterable[Path] = (), sets: Iterable[str] = ()) -> dict[str, Any]:
    """The values for an install: defaults, then the profile, then each file, then each ``--set``."""
    if profile not in PROFILES:
        raise ValuesError(f"unknown profile {profile!r} (profiles: {', '.join(PROFILES)})")
    values = merge(DEFAULTS, PROFILES[profile])
    for path in files:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ValuesError(f"{path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ValuesError(f"{path}: not YAML: {exc}") from None
        if data is None:
            continue
        if not isinstance(data, Mapping):
            raise ValuesError(f"{path}: must be a mapping of values")
        _check(data, DEFAULTS, str(path))
        values = merge(values, data)
    for assignment in sets:
        override = parse_set(assignment)
        _check(override, DEFAULTS, f"--set {assignment}")
        values = merge(values, override)
    return values
