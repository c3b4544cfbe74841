"""The mesh as one immutable, versioned snapshot, and the state that turns source changes into new snapshots.

Every batch of changes from a source yields a new :class:`MeshSnapshot` with a higher version. Snapshots
share the unchanged parts of the previous one (per-kind maps are copied only when that kind changed), so
holding an old snapshot while translating is cheap and safe. Each object carries the snapshot version at
which it last changed (``revision``): translation caches key on those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from controller.model.gateway import build_credential, build_gateway
from controller.model.istio import (
    DestinationRule,
    ServiceEntry,
    Sidecar,
    VirtualService,
    build_destination_rule,
    build_service_entry,
    build_sidecar,
    build_virtual_service,
)
from controller.model.kube import (
    EndpointSlice,
    Namespace,
    Pod,
    Service,
    build_endpoint_slice,
    build_namespace,
    build_pod,
    build_service,
)
from controller.model.meta import key_of
from controller.model.security import (
    AuthorizationPolicy,
    PeerAuthentication,
    build_authorization_policy,
    build_peer_authentication,
)
from controller.model.telemetry import (
    MESH_CONFIG_KEY,
    MeshConfig,
    Telemetry,
    build_mesh_config,
    build_telemetry,
)
from controller.model.values import ResourceKey
from controller.validation import Issue, validate
from mizzen import logs

log = logs.get("model")

BUILDERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "Namespace": build_namespace,
    "Pod": build_pod,
    "Service": build_service,
    "EndpointSlice": build_endpoint_slice,
    "VirtualService": build_virtual_service,
    "DestinationRule": build_destination_rule,
    "ServiceEntry": build_service_entry,
    "Sidecar": build_sidecar,
    "Gateway": build_gateway,
    "Secret": build_credential,
    "PeerAuthentication": build_peer_authentication,
    "AuthorizationPolicy": build_authorization_policy,
    "Telemetry": build_telemetry,
    "MeshConfig": build_mesh_config,  # not a Kubernetes kind: the controller's mesh config (MESH_CONFIG_KEY)
}

_EMPTY: Mapping[Any, Any] = {}
_DEFAULT_MESH = MeshConfig()


class Stamped(NamedTuple):
    """A model object with the snapshot version at which it last changed."""

    obj: Any
    revision: int


class ConfigChange(NamedTuple):
    """One object's net change between two snapshots (``old``/``new`` is None when absent)."""

    key: ResourceKey
    old: Any
    new: Any


class Rejected(NamedTuple):
    """An object validation refused; ``kept_previous`` says whether its last valid version stays in force."""

    key: ResourceKey
    issues: tuple[Issue, ...]
    kept_previous: bool


class MeshSnapshot:
    """An immutable view of the whole mesh at one version. Do not mutate what its accessors return."""

    __slots__ = (
        "_objects",
        "_pods_by_ip",
        "_services_by_host",
        "_slices_by_service",
        "invalid",
        "version",
        "warnings",
    )

    def __init__(
        self,
        version: int,
        objects: Mapping[str, Mapping[ResourceKey, Stamped]],
        services_by_host: Mapping[str, ResourceKey],
        slices_by_service: Mapping[tuple[str, str], frozenset[ResourceKey]],
        pods_by_ip: Mapping[str, ResourceKey],
        invalid: Mapping[ResourceKey, Rejected],
        warnings: Mapping[ResourceKey, tuple[Issue, ...]] | None = None,
    ) -> None:
        self.version = version
        self._objects = objects
        self._services_by_host = services_by_host
        self._slices_by_service = slices_by_service
        self._pods_by_ip = pods_by_ip
        self.invalid = invalid
        # Objects in force with fields Mizzen ignores (unsupported), so users can find them later.
        self.warnings: Mapping[ResourceKey, tuple[Issue, ...]] = warnings or {}

    # -- generic access --
    def items(self, kind: str) -> Mapping[ResourceKey, Stamped]:
        return self._objects.get(kind, _EMPTY)

    def objects(self, kind: str) -> Iterable[Any]:
        return (s.obj for s in self._objects.get(kind, _EMPTY).values())

    def get(self, key: ResourceKey) -> Any:
        stamped = self._objects.get(key.kind, _EMPTY).get(key)
        return stamped.obj if stamped else None

    def revision(self, key: ResourceKey) -> int:
        """The version at which ``key`` last changed; 0 when absent."""
        stamped = self._objects.get(key.kind, _EMPTY).get(key)
        return stamped.revision if stamped else 0

    def count(self, kind: str) -> int:
        return len(self._objects.get(kind, _EMPTY))

    # -- typed access --
    def service_by_host(self, host: str) -> Service | None:
        key = self._services_by_host.get(host)
        return self.get(key) if key else None

    def services(self) -> Iterable[Service]:
        return self.objects("Service")

    def slices_of(self, namespace: str, service: str) -> list[EndpointSlice]:
        keys = self._slices_by_service.get((namespace, service), frozenset())
        return [self.get(k) for k in sorted(keys)]

    def slice_keys_of(self, namespace: str, service: str) -> frozenset[ResourceKey]:
        return self._slices_by_service.get((namespace, service), frozenset())

    def pod(self, namespace: str, name: str) -> Pod | None:
        return self.get(ResourceKey("Pod", namespace, name))  # type: ignore[no-any-return]

    def pod_by_ip(self, ip: str) -> Pod | None:
        key = self._pods_by_ip.get(ip)
        return self.get(key) if key else None

    def namespace(self, name: str) -> Namespace | None:
        return self.get(ResourceKey("Namespace", "", name))  # type: ignore[no-any-return]

    def virtual_services(self) -> Iterable[VirtualService]:
        return self.objects("VirtualService")

    def destination_rules(self) -> Iterable[DestinationRule]:
        return self.objects("DestinationRule")

    def service_entries(self) -> Iterable[ServiceEntry]:
        return self.objects("ServiceEntry")

    def sidecars(self) -> Iterable[Sidecar]:
        return self.objects("Sidecar")

    def peer_authentications(self) -> Iterable[PeerAuthentication]:
        return self.objects("PeerAuthentication")

    def authorization_policies(self) -> Iterable[AuthorizationPolicy]:
        return self.objects("AuthorizationPolicy")

    def telemetries(self) -> Iterable[Telemetry]:
        return self.objects("Telemetry")

    def mesh_config(self) -> MeshConfig:
        """The mesh config in force (Istio's defaults when none was given)."""
        found = self.get(MESH_CONFIG_KEY)
        return found if found is not None else _DEFAULT_MESH


class SnapshotUpdate(NamedTuple):
    snapshot: MeshSnapshot
    changes: tuple[ConfigChange, ...]
    rejected: tuple[Rejected, ...]


class MeshState:
    """Holds the current snapshot and applies batches of raw changes to it.

    Invalid objects are skipped with a logged reason; an invalid *update* keeps the object's last valid
    version in force (as an admission webhook would have refused the update), so nothing working is lost.
    """

    def __init__(self, domain: str = "cluster.local") -> None:
        self.domain = domain
        self._snapshot = MeshSnapshot(0, {}, {}, {}, {}, {})

    @property
    def snapshot(self) -> MeshSnapshot:
        return self._snapshot

    def load(self, raw_by_kind: Mapping[str, Sequence[Mapping[str, Any]]]) -> SnapshotUpdate:
        """Apply a source's full initial state."""
        changes = [(kind, raw, False) for kind, items in raw_by_kind.items() for raw in items]
        return self._apply(changes)

    def apply(self, batch: Iterable[Any]) -> SnapshotUpdate:
        """Apply a batch of source ``Change`` tuples (kind, key, type, obj)."""
        return self._apply([(c.kind, c.obj, c.type == "DELETED") for c in batch])

    def _apply(self, batch: Sequence[tuple[str, Mapping[str, Any], bool]]) -> SnapshotUpdate:
        old = self._snapshot
        version = old.version + 1
        objects = dict(old._objects)
        copied: set[str] = set()
        invalid = dict(old.invalid)
        warnings = dict(old.warnings)
        changes: dict[ResourceKey, ConfigChange] = {}
        rejected: list[Rejected] = []

        def kind_map(kind: str) -> dict[ResourceKey, Stamped]:
            if kind not in copied:
                objects[kind] = dict(objects.get(kind, _EMPTY))
                copied.add(kind)
            return objects[kind]  # type: ignore[return-value]

        for kind, raw, deleted in batch:
            builder = BUILDERS.get(kind)
            if builder is None:
                continue
            raw = {**raw, "kind": kind} if raw.get("kind") != kind else raw
            key = key_of(raw)
            current = old._objects.get(kind, _EMPTY).get(key)
            before = changes[key].old if key in changes else (current.obj if current else None)
            if deleted:
                invalid.pop(key, None)
                warnings.pop(key, None)
                if key in kind_map(kind):
                    del kind_map(kind)[key]
                changes[key] = ConfigChange(key, before, None)
                continue
            issues = validate(raw)
            errors = tuple(i for i in issues if i.severity == "error")
            if errors:
                kept = key in kind_map(kind)
                entry = Rejected(key, errors, kept)
                invalid[key] = entry
                rejected.append(entry)
                log.warning(
                    "invalid config skipped",
                    object=str(key),
                    kept_previous=kept,
                    errors=[i.format(key) for i in errors],
                )
                continue
            invalid.pop(key, None)
            if issues:
                warnings[key] = tuple(issues)
                log.warning(
                    "config accepted with warnings", object=str(key), warnings=[i.format(key) for i in issues]
                )
            else:
                warnings.pop(key, None)
            try:
                obj = builder(raw)
            except (KeyError, TypeError, ValueError) as exc:  # a gap in validation must not stop the mesh
                entry = Rejected(
                    key, (Issue("error", "", f"cannot be read: {exc!r}"),), key in kind_map(kind)
                )
                invalid[key] = entry
                rejected.append(entry)
                log.error("config could not be built", object=str(key), error=repr(exc))
                continue
            if current is not None and current.obj == obj and key not in changes:
                continue  # e.g. a status-only update: the model is unchanged
            kind_map(kind)[key] = Stamped(obj, version)
            changes[key] = ConfigChange(key, before, obj)

        net = tuple(c for c in changes.values() if c.old != c.new)
        if not net and invalid == old.invalid and warnings == old.warnings:
            return SnapshotUpdate(old, (), tuple(rejected))
        snapshot = MeshSnapshot(
            version,
            objects,
            _services_by_host(old, objects, net),
            _slices_by_service(old, net),
            _pods_by_ip(old, objects, net),
            invalid,
            warnings,
        )
        self._snapshot = snapshot
        return SnapshotUpdate(snapshot, net, tuple(rejected))


def _services_by_host(
    old: MeshSnapshot, objects: Mapping[str, Mapping[ResourceKey, Stamped]], changes: Sequence[ConfigChange]
) -> Mapping[str, ResourceKey]:
    touched = [c for c in changes if c.key.kind == "Service"]
    if not touched:
        return old._services_by_host
    index = dict(old._services_by_host)
    for change in touched:
        if change.old is not None and index.get(change.old.hostname) == change.key:
            del index[change.old.hostname]
        if change.new is not None:
            index[change.new.hostname] = change.key
    return index


def _slices_by_service(
    old: MeshSnapshot, changes: Sequence[ConfigChange]
) -> Mapping[tuple[str, str], frozenset[ResourceKey]]:
    touched = [c for c in changes if c.key.kind == "EndpointSlice"]
    if not touched:
        return old._slices_by_service
    index = dict(old._slices_by_service)
    for change in touched:
        for obj, add in ((change.old, False), (change.new, True)):
            if obj is None or not obj.service_name:
                continue
            group = (change.key.namespace, obj.service_name)
            members = index.get(group, frozenset())
            members = members | {change.key} if add else members - {change.key}
            if members:
                index[group] = members
            else:
                index.pop(group, None)
    return index


def _pods_by_ip(
    old: MeshSnapshot, objects: Mapping[str, Mapping[ResourceKey, Stamped]], changes: Sequence[ConfigChange]
) -> Mapping[str, ResourceKey]:
    touched = [c for c in changes if c.key.kind == "Pod"]
    if not touched:
        return old._pods_by_ip
    index = dict(old._pods_by_ip)
    for change in touched:
        if change.old is not None:
            for ip in change.old.ips:
                if index.get(ip) == change.key:
                    del index[ip]
        if change.new is not None:
            for ip in change.new.ips:
                index[ip] = change.key
    return index
