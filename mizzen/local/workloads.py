"""What local mode runs, read from Kubernetes YAML: Namespaces, Services, Deployments, Pods, ServiceAccounts.

The same manifests a user applies to a cluster. A container's ``command`` runs on this machine (the image
is only for Kubernetes), so locally a container must say what to run. Istio's kinds are not read here:
they go to the controller unchanged. Everything else a pod spec may say is checked against what local mode
honours, and anything it cannot honour is an error naming the object and the field, never silently dropped.

Local mode's one addition is the pod annotation ``local.mizzen.io/workdir``: the directory a container
runs in on this machine (relative to the manifest's folder), standing in for the image's ``WORKDIR``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

WORKDIR_ANNOTATION = "local.mizzen.io/workdir"
ISTIO_GROUPS = ("networking.istio.io", "security.istio.io", "telemetry.istio.io")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")

# What local mode honours in a pod spec and a container; other fields are refused by name.
_POD_FIELDS = frozenset(
    {
        "containers",
        "initContainers",
        "serviceAccountName",
        "serviceAccount",
        "restartPolicy",
        "terminationGracePeriodSeconds",
        "securityContext",
        # Scheduling and image concerns that have no meaning on one machine.
        "nodeSelector",
        "affinity",
        "tolerations",
        "imagePullSecrets",
        "priorityClassName",
    }
)
_CONTAINER_FIELDS = frozenset(
    {
        "name",
        "image",
        "imagePullPolicy",
        "command",
        "args",
        "env",
        "ports",
        "workingDir",
        "readinessProbe",
        "livenessProbe",
        "startupProbe",
        "securityContext",
        "restartPolicy",
        # Not enforced locally (no cgroups of our own); accepted so the same manifest runs on a cluster.
        "resources",
        "terminationMessagePath",
        "terminationMessagePolicy",
    }
)
_PROBE_FIELDS = frozenset(
    {
        "httpGet",
        "tcpSocket",
        "exec",
        "initialDelaySeconds",
        "periodSeconds",
        "timeoutSeconds",
        "successThreshold",
        "failureThreshold",
        "terminationGracePeriodSeconds",
    }
)
FIELD_PATHS = frozenset(
    {
        "metadata.name",
        "metadata.namespace",
        "metadata.uid",
        "spec.serviceAccountName",
        "spec.nodeName",
        "status.podIP",
        "status.podIPs",
        "status.hostIP",
    }
)
_LABEL_REF = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


class ManifestError(ValueError):
    """An object local mode cannot run; the message names the object and the field."""


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    @property
    def injected(self) -> bool:
        """Istio's namespace switch for sidecar injection."""
        return self.labels.get("istio-injection") == "enabled"


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: int | str  # a number, or the name of a container port
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    selector: Mapping[str, str] | None
    ports: tuple[ServicePort, ...]
    headless: bool
    raw: Obj = field(compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Workload:
    """A Deployment, or a bare Pod (``replicas`` 1, its own name), with its pod template."""

    kind: str
    name: str
    namespace: str
    replicas: int
    template: Obj  # {"metadata": {labels, annotations}, "spec": {...}}
    template_hash: str

    @property
    def key(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def labels(self) -> Mapping[str, str]:
        return dict(self.template.get("metadata", {}).get("labels") or {})


@dataclass
class Workloads:
    """Everything local mode runs, keyed by ``namespace/name``; ``istio`` holds the Istio objects as given."""

    namespaces: dict[str, Namespace] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    workloads: dict[str, Workload] = field(default_factory=dict)
    service_accounts: set[str] = field(default_factory=set)
    istio: list[Obj] = field(default_factory=list)

    def namespace(self, name: str) -> Namespace:
        """The namespace as declared, or as Kubernetes would have it (``default``, made on first use)."""
        return self.namespaces.get(name) or Namespace(name, {}, {})


def object_label(obj: Mapping[str, Any]) -> str:
    """``Kind namespace/name`` (or ``Kind name``) for messages."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    kind = obj.get("kind") or "object"
    name = meta.get("name") or "?"
    if kind == "Namespace":
        return f"Namespace {name}"
    return f"{kind} {meta.get('namespace') or 'default'}/{name}"


def object_key(obj: Mapping[str, Any]) -> str:
    """A stable identity: ``kind.namespace.name`` (the file name an applied object is kept under)."""
    meta = obj.get("metadata") or {}
    namespace = "" if obj.get("kind") == "Namespace" else (meta.get("namespace") or "default")
    return f"{obj.get('kind')}.{namespace}.{meta.get('name')}".lower()


def is_istio(obj: Mapping[str, Any]) -> bool:
    group = str(obj.get("apiVersion") or "").rpartition("/")[0]
    return group in ISTIO_GROUPS


# Istio's mesh config, where the controller reads it on Kubernetes: ConfigMap ``istio`` in its namespace.
MESH_CONFIG = ("mizzen-system", "istio")


def is_mesh_config(obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    return (
        obj.get("kind") == "ConfigMap"
        and (meta.get("namespace") or "default", meta.get("name")) == MESH_CONFIG
    )


def _require(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise ManifestError(f"{where}: {message}")


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    _require(isinstance(value, Mapping), where, "must be a mapping of strings")
    out = {}
    for k, v in value.items():
        _require(isinstance(k, str) and isinstance(v, str), f"{where}.{k}", f"must be a string (got {v!r})")
        out[k] = v
    return out


def _port_number(value: Any, where: str) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536
    _require(ok, where, f"must be a port number (got {value!r})")
    return int(value)


def _int(value: Any, where: str, minimum: int = 0) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    _require(ok, where, f"must be an integer >= {minimum} (got {value!r})")
    return int(value)


def _strings(value: Any, where: str) -> list[str]:
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    _require(ok, where, "must be a list of strings")
    return list(value)


def _metadata(obj: Mapping[str, Any], label: str, *, namespaced: bool = True) -> tuple[str, str]:
    meta = obj.get("metadata")
    _require(isinstance(meta, Mapping), label, "metadata: required")
    assert isinstance(meta, Mapping)
    name = meta.get("name")
    _require(
        isinstance(name, str) and bool(_DNS_LABEL.match(name)), label, "metadata.name: not a DNS-1123 label"
    )
    namespace = str(meta.get("namespace") or "default") if namespaced else ""
    if namespaced:
        _require(bool(_DNS_LABEL.match(namespace)), label, "metadata.namespace: not a DNS-1123 label")
    _string_map(meta.get("labels"), f"{label}: metadata.labels")
    _string_map(meta.get("annotations"), f"{label}: metadata.annotations")
    return str(name), namespace


def check_probe(probe: Any, where: str) -> None:
    _require(isinstance(probe, Mapping), where, "must be a mapping")
    unknown = sorted(set(probe) - _PROBE_FIELDS)
    _require(
        not unknown,
        f"{where}.{unknown[0] if unknown else ''}",
        "not supported locally (use httpGet, tcpSocket or exec)",
    )
    handlers = [h for h in ("httpGet", "tcpSocket", "exec") if h in probe]
    _require(len(handlers) == 1, where, "needs exactly one of httpGet, tcpSocket, exec")
    handler = probe[handlers[0]]
    _require(isinstance(handler, Mapping), f"{where}.{handlers[0]}", "must be a mapping")
    if handlers[0] == "exec":
        _strings(handler.get("command"), f"{where}.exec.command")
    else:
        port = handler.get("port")
        ok = isinstance(port, str) or (isinstance(port, int) and not isinstance(port, bool))
        _require(ok, f"{where}.{handlers[0]}.port", f"must be a number or a port name (got {port!r})")
    for key in (
        "initialDelaySeconds",
        "periodSeconds",
        "timeoutSeconds",
        "successThreshold",
        "failureThreshold",
    ):
        if key in probe:
            _int(probe[key], f"{where}.{key}", 0 if key == "initialDelaySeconds" else 1)


def _check_env(env: Any, where: str) -> None:
    _require(isinstance(env, list), where, "must be a list")
    for i, item in enumerate(env):
        at = f"{where}[{i}]"
        _require(isinstance(item, Mapping), at, "must be a mapping")
        name = item.get("name")
        _require(
            isinstance(name, str) and bool(_ENV_NAME.match(name)), f"{at}.name", f"not a valid name: {name!r}"
        )
        if "valueFrom" in item:
            source = item["valueFrom"]
            ref = source.get("fieldRef") if isinstance(source, Mapping) else None
            _require(
                isinstance(ref, Mapping) and set(source) == {"fieldRef"},
                f"{at}.valueFrom",
                "only fieldRef is supported locally (no Secrets or ConfigMaps here)",
            )
            assert isinstance(ref, Mapping)
            path = ref.get("fieldPath")
            ok = path in FIELD_PATHS or (isinstance(path, str) and bool(_LABEL_REF.match(path)))
            _require(ok, f"{at}.valueFrom.fieldRef.fieldPath", f"{path!r} is not a field local mode knows")
        else:
            value = item.get("value", "")
            _require(isinstance(value, str), f"{at}.value", f"must be a string (got {value!r})")


def check_container(container: Any, where: str, *, local: bool = True) -> None:
    """A container spec local mode can run; ``local`` also demands a command (no image entrypoint here)."""
    _require(isinstance(container, Mapping), where, "must be a mapping")
    name = container.get("name")
    _require(
        isinstance(name, str) and bool(_DNS_LABEL.match(name)),
        f"{where}.name",
        f"not a DNS-1123 label: {name!r}",
    )
    where = f"{where} ({name})"
    unknown = sorted(set(container) - _CONTAINER_FIELDS)
    if unknown:
        hint = (
            "volumes are not supported locally"
            if unknown[0] in ("volumeMounts", "volumeDevices")
            else ("not supported locally")
        )
        raise ManifestError(f"{where}.{unknown[0]}: {hint}")
    if "command" in container:
        _strings(container["command"], f"{where}.command")
    if "args" in container:
        _strings(container["args"], f"{where}.args")
    if local:
        _require(
            bool(container.get("command")),
            f"{where}.command",
            "required locally: the command runs on this machine (the image's entrypoint is not known here)",
        )
    if "env" in container:
        _check_env(container["env"], f"{where}.env")
    for i, port in enumerate(container.get("ports") or ()):
        at = f"{where}.ports[{i}]"
        _require(isinstance(port, Mapping), at, "must be a mapping")
        _port_number(port.get("containerPort"), f"{at}.containerPort")
    if "workingDir" in container:
        _require(isinstance(container["workingDir"], str), f"{where}.workingDir", "must be a string")
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        if kind in container:
            check_probe(container[kind], f"{where}.{kind}")
    context = container.get("securityContext") or {}
    _require(isinstance(context, Mapping), f"{where}.securityContext", "must be a mapping")
    for key in ("runAsUser", "runAsGroup"):
        if key in context:
            _int(context[key], f"{where}.securityContext.{key}")


def check_pod_spec(spec: Any, where: str) -> None:
    _require(isinstance(spec, Mapping), where, "must be a mapping")
    unknown = sorted(set(spec) - _POD_FIELDS)
    if unknown:
        hint = "volumes are not supported locally" if unknown[0] == "volumes" else "not supported locally"
        raise ManifestError(f"{where}.{unknown[0]}: {hint}")
    containers = spec.get("containers")
    _require(
        isinstance(containers, list) and bool(containers), f"{where}.containers", "at least one is required"
    )
    names: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(group) or ()):
            check_container(container, f"{where}.{group}[{i}]")
            _require(container["name"] not in names, f"{where}.{group}[{i}].name", "used twice in the pod")
            names.add(container["name"])
    policy = spec.get("restartPolicy", "Always")
    _require(
        policy in ("Always", "OnFailure", "Never"), f"{where}.restartPolicy", f"unknown policy {policy!r}"
    )
    if "terminationGracePeriodSeconds" in spec:
        _int(spec["terminationGracePeriodSeconds"], f"{where}.terminationGracePeriodSeconds")


def template_hash(template: Mapping[str, Any]) -> str:
    """A short stable hash of a pod template (the ``pod-template-hash`` a ReplicaSet carries)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    # Kubernetes' alphabet for generated names: no vowels, so no words.
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    number = int(digest[:16], 16)
    out = ""
    for _ in range(10):
        number, rest = divmod(number, len(alphabet))
        out += alphabet[rest]
    return out


def _service(obj: Obj, label: str) -> Service:
    name, namespace = _metadata(obj, label)
    spec = obj.get("spec") or {}
    _require(isinstance(spec, Mapping), label, "spec: must be a mapping")
    kind = spec.get("type", "ClusterIP")
    _require(
        kind in ("ClusterIP", "NodePort", "LoadBalancer"),
        f"{label}: spec.type",
        f"{kind!r} is not supported locally (ClusterIP, NodePort, LoadBalancer)",
    )
    selector = spec.get("selector")
    ports = []
    seen: set[str] = set()
    raw_ports = spec.get("ports") or []
    _require(isinstance(raw_ports, list), f"{label}: spec.ports", "must be a list")
    for i, port in enumerate(raw_ports):
        at = f"{label}: spec.ports[{i}]"
        _require(isinstance(port, Mapping), at, "must be a mapping")
        number = _port_number(port.get("port"), f"{at}.port")
        pname = str(port.get("name") or "")
        _require(
            len(raw_ports) == 1 or bool(pname), f"{at}.name", "required when a Service has several ports"
        )
        _require(pname not in seen, f"{at}.name", f"{pname!r} used twice")
        seen.add(pname)
        target = port.get("targetPort", number)
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        if isinstance(target, int):
            _port_number(target, f"{at}.targetPort")
        else:
            _require(isinstance(target, str) and bool(target), f"{at}.targetPort", "a number or a port name")
        protocol = str(port.get("protocol") or "TCP")
        _require(protocol == "TCP", f"{at}.protocol", f"{protocol} is not supported locally (TCP only)")
        app_protocol = port.get("appProtocol")
        ports.append(
            ServicePort(pname, number, target, protocol, str(app_protocol) if app_protocol else None)
        )
    return Service(
        name,
        namespace,
        _string_map(selector, f"{label}: spec.selector") if selector is not None else None,
        tuple(ports),
        headless=spec.get("clusterIP") == "None",
        raw=obj,
    )


def _workload(obj: Obj, label: str, origin_dir: Path | None, *, check: bool = True) -> Workload:
    name, namespace = _metadata(obj, label)
    kind = str(obj["kind"])
    if kind == "Pod":
        template: Obj = {
            "metadata": {
                "labels": _string_map((obj.get("metadata") or {}).get("labels"), f"{label}: metadata.labels"),
                "annotations": _string_map(
                    (obj.get("metadata") or {}).get("annotations"), f"{label}: metadata.annotations"
                ),
            },
            "spec": obj.get("spec"),
        }
        replicas = 1
    else:
        spec = obj.get("spec")
        _require(isinstance(spec, Mapping), label, "spec: required")
        assert isinstance(spec, Mapping)
        replicas = _int(spec.get("replicas", 1), f"{label}: spec.replicas")
        raw_template = spec.get("template")
        _require(isinstance(raw_template, Mapping), f"{label}: spec.template", "required")
        assert isinstance(raw_template, Mapping)
        tmeta = raw_template.get("metadata") or {}
        template = {
            "metadata": {
                "labels": _string_map(tmeta.get("labels"), f"{label}: spec.template.metadata.labels"),
                "annotations": _string_map(
                    tmeta.get("annotations"), f"{label}: spec.template.metadata.annotations"
                ),
            },
            "spec": raw_template.get("spec"),
        }
        selector = spec.get("selector") or {}
        _require(isinstance(selector, Mapping), f"{label}: spec.selector", "must be a mapping")
        unknown = sorted(set(selector) - {"matchLabels"})
        _require(
            not unknown,
            f"{label}: spec.selector.{unknown[0] if unknown else ''}",
            "only matchLabels is supported locally",
        )
        match = _string_map(selector.get("matchLabels"), f"{label}: spec.selector.matchLabels")
        _require(bool(match), f"{label}: spec.selector.matchLabels", "required")
        labels = template["metadata"]["labels"]
        wrong = [k for k, v in match.items() if labels.get(k) != v]
        _require(
            not wrong,
            f"{label}: spec.selector.matchLabels.{wrong[0] if wrong else ''}",
            "does not match spec.template.metadata.labels",
        )
        strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
        _require(
            strategy in ("RollingUpdate", "Recreate"),
            f"{label}: spec.strategy.type",
            f"unknown strategy {strategy!r}",
        )
    where = f"{label}: spec" if kind == "Pod" else f"{label}: spec.template.spec"
    if check:
        check_pod_spec(template["spec"], where)
    annotations = template["metadata"]["annotations"]
    workdir = annotations.get(WORKDIR_ANNOTATION)
    if workdir is not None and origin_dir is not None and not Path(workdir).is_absolute():
        annotations[WORKDIR_ANNOTATION] = str((origin_dir / workdir).resolve())
    return Workload(kind, name, namespace, replicas, template, template_hash(template))


KINDS = {
    ("v1", "Namespace"),
    ("v1", "Service"),
    ("v1", "Pod"),
    ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"),
}


def check_object(obj: Any, origin_dir: Path | None = None) -> Obj:
    """The object, checked (and its relative local paths resolved); raises ManifestError naming the field."""
    _require(isinstance(obj, Mapping), "manifest", f"expected an object, got {type(obj).__name__}")
    label = object_label(obj)
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    _require(
        isinstance(kind, str) and isinstance(api_version, str), label, "apiVersion and kind are required"
    )
    if is_istio(obj):
        _metadata(obj, label)  # the controller validates the rest and names the field
        return dict(obj)
    if (api_version, kind) == ("v1", "ConfigMap"):
        _metadata(obj, label)
        _require(
            is_mesh_config(obj),
            label,
            f"the only ConfigMap read locally is the mesh config, {MESH_CONFIG[0]}/{MESH_CONFIG[1]}",
        )
        return dict(obj)  # the controller reads its data.mesh and names what it cannot use
    _require(
        (api_version, kind) in KINDS,
        label,
        f"{api_version} {kind} is not run locally (local mode runs Namespaces, Services, Deployments, Pods, "
        "ServiceAccounts and Istio's kinds)",
    )
    out = json.loads(json.dumps(obj))  # a deep copy with JSON types only
    if kind == "Namespace":
        _metadata(out, label, namespaced=False)
    elif kind == "Service":
        _service(out, label)
    elif kind in ("Deployment", "Pod"):
        workload = _workload(out, label, origin_dir)
        # Keep the resolved workdir in what is stored, so the object means the same from anywhere.
        meta = (out["spec"]["template"] if kind == "Deployment" else out).setdefault("metadata", {})
        if workload.template["metadata"]["annotations"]:
            meta["annotations"] = dict(workload.template["metadata"]["annotations"])
    else:
        _metadata(out, label)
    out.setdefault("metadata", {})
    if kind != "Namespace":
        out["metadata"].setdefault("namespace", "default")
    return out


def build(objects: Iterable[Obj], trusted: Iterable[Obj] = ()) -> Workloads:
    """The checked objects as what to run (later objects with the same identity replace earlier ones).
    ``trusted`` objects (the mesh's own, made to run here) come first and skip the pod-spec checks."""
    out = Workloads()
    for obj in trusted:
        if obj.get("kind") in ("Deployment", "Pod"):
            workload = _workload(obj, object_label(obj), None, check=False)
            out.workloads[workload.key] = workload
        else:
            _add(out, obj)
    for obj in objects:
        _add(out, obj)
    return out


def _add(out: Workloads, obj: Obj) -> None:
    """One checked object into ``out``."""
    label = object_label(obj)
    kind = obj.get("kind")
    if is_istio(obj):
        out.istio.append(obj)
    elif kind == "Namespace":
        name, _ = _metadata(obj, label, namespaced=False)
        meta = obj.get("metadata") or {}
        out.namespaces[name] = Namespace(
            name, _string_map(meta.get("labels"), label), _string_map(meta.get("annotations"), label)
        )
    elif kind == "Service":
        svc = _service(obj, label)
        out.services[svc.key] = svc
    elif kind in ("Deployment", "Pod"):
        workload = _workload(obj, label, None)
        out.workloads[workload.key] = workload
    elif kind == "ServiceAccount":
        name, namespace = _metadata(obj, label)
        out.service_accounts.add(f"{namespace}/{name}")
