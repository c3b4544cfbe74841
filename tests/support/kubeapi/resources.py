"""The resource types an API test server serves: built-in kinds and CRDs, each with its served versions."""

from __future__ import annotations

from dataclasses import dataclass, field

# Verbs as discovery lists them for an ordinary resource.
VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

# Fields every resource can be selected by; kinds add their own (a real server rejects others with 400).
COMMON_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class ResourceDef:
    """One resource. ``versions`` are served, the first is the preferred (storage) version. ``builtin``
    kinds (core, discovery.k8s.io) leave kind/apiVersion off list items, as the real server does; CRDs keep
    them."""

    group: str
    versions: tuple[str, ...]
    plural: str
    kind: str
    namespaced: bool = True
    builtin: bool = False
    short_names: tuple[str, ...] = ()
    fields: tuple[str, ...] = field(default=COMMON_FIELDS)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version


_POD_FIELDS = (
    *COMMON_FIELDS,
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)

NAMESPACES = ResourceDef(
    "", ("v1",), "namespaces", "Namespace", namespaced=False, builtin=True, short_names=("ns",)
)
PODS = ResourceDef("", ("v1",), "pods", "Pod", builtin=True, short_names=("po",), fields=_POD_FIELDS)
SERVICES = ResourceDef("", ("v1",), "services", "Service", builtin=True, short_names=("svc",))
ENDPOINT_SLICES = ResourceDef(
    "discovery.k8s.io",
    ("v1",),
    "endpointslices",
    "EndpointSlice",
    builtin=True,
    fields=(*COMMON_FIELDS, "addressType"),
)
DEPLOYMENTS = ResourceDef("apps", ("v1",), "deployments", "Deployment", builtin=True, short_names=("deploy",))

SECRETS = ResourceDef("", ("v1",), "secrets", "Secret", builtin=True, fields=(*COMMON_FIELDS, "type"))
CONFIG_MAPS = ResourceDef("", ("v1",), "configmaps", "ConfigMap", builtin=True, short_names=("cm",))

# Every cluster serves these; the controller reads the first four and keeps its CA and root in the last two.
CORE = (NAMESPACES, PODS, SERVICES, ENDPOINT_SLICES, DEPLOYMENTS, SECRETS, CONFIG_MAPS)

_NETWORKING = (
    ("virtualservices", "VirtualService", ("vs",)),
    ("destinationrules", "DestinationRule", ("dr",)),
    ("gateways", "Gateway", ("gw",)),
    ("serviceentries", "ServiceEntry", ("se",)),
    ("sidecars", "Sidecar", ()),
)
_SECURITY = (
    ("peerauthentications", "PeerAuthentication", ("pa",)),
    ("authorizationpolicies", "AuthorizationPolicy", ("ap",)),
)


def istio_crds(
    networking: tuple[str, ...] = ("v1", "v1beta1", "v1alpha3"),
    security: tuple[str, ...] = ("v1", "v1beta1"),
    telemetry: tuple[str, ...] = ("v1", "v1alpha1"),
) -> tuple[ResourceDef, ...]:
    """Istio's CRDs as a given Istio release serves them (1.22+: v1 first; older: v1beta1 first)."""
    defs = [ResourceDef("networking.istio.io", networking, p, k, short_names=s) for p, k, s in _NETWORKING]
    defs += [ResourceDef("security.istio.io", security, p, k, short_names=s) for p, k, s in _SECURITY]
    if telemetry:
        defs.append(
            ResourceDef(
                "telemetry.istio.io", telemetry, "telemetries", "Telemetry", short_names=("telemetry",)
            )
        )
    return tuple(defs)
