"""From install values to the Kubernetes objects of a Mizzen install, in the order they apply.

The source of truth for ``mizzen install``, ``mizzen manifest generate`` and the files in ``deploy/``:
namespace, CRDs, least-privilege RBAC, the injector's ConfigMap, the controller's Service, Deployment and
PodDisruptionBudget, the CNI DaemonSet, and the webhook configurations (last, once what serves them is
declared).
"""

from __future__ import annotations

from typing import Any

import yaml

from controller.ca.store import PLUGIN_SECRET as PLUGIN_CA_SECRET
from controller.ca.store import SELF_SIGNED_SECRET as CA_SECRET
from controller.inject.config import InjectConfig
from controller.webhooks.server import DEFAULT_PORT as WEBHOOK_PORT
from mizzen.manifests import crds as crd_defs
from mizzen.manifests.gateways import gateway_objects

Obj = dict[str, Any]

CONTROLLER = "mizzen-controller"
CNI = "mizzen-cni"
INJECTOR_CONFIG = "mizzen-sidecar-injector"
MUTATING = "mizzen-sidecar-injector"
VALIDATING = "mizzen-validator"
WEBHOOK_SECRET = "mizzen-webhook-certs"
LEASE = "mizzen-controller-leader"
MESH_CONFIG = "istio"  # Istio's name for the mesh config ConfigMap
INJECT_CONFIG_DIR = "/etc/mizzen/inject"
CERT_DIR = "/etc/mizzen/webhook-certs"
# What `mizzen uninstall` looks for: every object the installer made carries it.
MANAGED = {"app.kubernetes.io/part-of": "mizzen", "app.kubernetes.io/managed-by": "mizzen"}


def _labels(component: str | None = None) -> dict[str, str]:
    labels = dict(MANAGED)
    if component:
        labels["app.kubernetes.io/component"] = component
    return labels


def _meta(name: str, namespace: str | None = None, component: str | None = None, **extra: Any) -> Obj:
    meta: Obj = {"name": name, "labels": _labels(component)}
    if namespace:
        meta["namespace"] = namespace
    meta.update(extra)
    return meta


def image(values: Obj, name: str) -> str:
    return f"{values['hub']}/{name}:{values['tag']}"


def inject_config(values: Obj) -> InjectConfig:
    """The injector's settings for these values (also what ``mizzen kube-inject`` uses offline)."""
    proxy, ns = values["proxy"], values["namespace"]
    return InjectConfig(
        image=image(values, "proxy"),
        image_pull_policy=values["imagePullPolicy"],
        xds_address=f"{CONTROLLER}.{ns}.svc:15010",
        ca_address=f"{CONTROLLER}.{ns}.svc:15012",
        mesh_namespace=ns,
        native_sidecar=proxy["nativeSidecar"],
        hold_application_until_proxy_starts=proxy["holdApplicationUntilProxyStarts"],
        rewrite_app_probers=proxy["rewriteAppProbers"],
        resources=_resources(proxy["resources"]),
        log_level=proxy["logLevel"],
        drain_duration_seconds=float(proxy["drainDurationSeconds"]),
        cluster_domain=values["clusterDomain"],
    )


def _resources(data: Obj) -> Any:
    from controller.inject.config import Resources

    return Resources(
        requests={k: str(v) for k, v in (data.get("requests") or {}).items()},
        limits={k: str(v) for k, v in (data.get("limits") or {}).items()},
    )


# RBAC: what the controller's informers read (controller/sources/kinds.py), and the webhooks' writes.
_READ = ["get", "list", "watch"]


def controller_cluster_rules() -> list[Obj]:
    return [
        # Secrets: the TLS credentials Gateways name (credentialName), as istiod reads them.
        {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "secrets"], "verbs": _READ},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": _READ},
        {
            "apiGroups": ["networking.istio.io"],
            "resources": ["virtualservices", "destinationrules", "gateways", "serviceentries", "sidecars"],
            "verbs": _READ,
        },
        {
            "apiGroups": ["security.istio.io"],
            "resources": ["peerauthentications", "authorizationpolicies"],
            "verbs": _READ,
        },
        {"apiGroups": ["telemetry.istio.io"], "resources": ["telemetries"], "verbs": _READ},
        # The caBundle of its own two webhook configurations, nothing else's.
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": [MUTATING],
            "verbs": ["get", "patch"],
        },
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingwebhookconfigurations"],
            "resourceNames": [VALIDATING],
            "verbs": ["get", "patch"],
        },
        # The workload CA: callers' tokens checked by TokenReview (audience istio-ca), and the mesh's root
        # kept in ConfigMap istio-ca-root-cert in every namespace (namespaces are read above).
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": [*_READ, "create", "update"]},
    ]


def controller_namespace_rules(self_managed_certs: bool) -> list[Obj]:
    rules: list[Obj] = [
        # Leader election: one replica does the few writes.
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [LEASE],
            "verbs": ["get", "update"],
        },
        # The mesh config (the istio ConfigMap's mesh key), read and watched.
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [MESH_CONFIG], "verbs": _READ},
    ]
    # The CA's own key and certificate: istio-ca-secret (made on first start), or cacerts (plugged in).
    rules += [
        # create cannot be limited by name (the object does not exist yet); the rest can.
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [CA_SECRET, PLUGIN_CA_SECRET],
            "verbs": ["get", "update"],
        },
    ]
    if self_managed_certs:
        rules += [
            # (create, which cannot be limited by name, is granted above)
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [WEBHOOK_SECRET],
                "verbs": ["get", "update"],
            },
        ]
    return rules


def _namespace(values: Obj) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(values["namespace"])}


def _controller_rbac(values: Obj) -> list[Obj]:
    ns = values["namespace"]
    sa = {"kind": "ServiceAccount", "name": CONTROLLER, "namespace": ns}
    self_managed = values["webhooks"]["certificates"] == "self"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(CONTROLLER, ns, "controller")},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(CONTROLLER, component="controller"),
            "rules": controller_cluster_rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(CONTROLLER, component="controller"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CONTROLLER},
            "subjects": [sa],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(CONTROLLER, ns, "controller"),
            "rules": controller_namespace_rules(self_managed),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(CONTROLLER, ns, "controller"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CONTROLLER},
            "subjects": [sa],
        },
    ]


def _injector_config(values: Obj) -> Obj:
    text = yaml.safe_dump(inject_config(values).to_dict(), sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(INJECTOR_CONFIG, values["namespace"], "injector"),
        "data": {"config.yaml": text},
    }


def _mesh_config(values: Obj) -> Obj:
    """Istio's ``istio`` ConfigMap: the MeshConfig under ``mesh``, watched by the controller."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(MESH_CONFIG, values["namespace"], "controller"),
        "data": {"mesh": yaml.safe_dump(values["meshConfig"], sort_keys=True)},
    }


def _service(values: Obj) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(CONTROLLER, values["namespace"], "controller", annotations={}),
        "spec": {
            "selector": {"app": CONTROLLER},
            "ports": [
                {"name": "grpc-xds", "port": 15010, "targetPort": 15010, "protocol": "TCP"},
                # xDS over TLS: served once the controller's CA lands (issue 8); declared for Istio parity.
                {"name": "https-dns", "port": 15012, "targetPort": 15012, "protocol": "TCP"},
                {"name": "http-monitoring", "port": 15014, "targetPort": 15014, "protocol": "TCP"},
                {"name": "https-webhook", "port": 443, "targetPort": WEBHOOK_PORT, "protocol": "TCP"},
            ],
        },
    }


def _controller_deployment(values: Obj) -> Obj:
    ctl, ns = values["controller"], values["namespace"]
    cert_manager = values["webhooks"]["certificates"] == "cert-manager"
    args = [
        "--log-level",
        ctl["logLevel"],
        "--outbound-traffic-policy",
        ctl["outboundTrafficPolicy"],
        "--webhook-port",
        str(WEBHOOK_PORT),
        "--inject-config",
        f"{INJECT_CONFIG_DIR}/config.yaml",
        "--mesh-namespace",
        ns,
        "--webhook-cert-mode",
        "files" if cert_manager else "secret",
    ]
    mounts = [{"name": "inject-config", "mountPath": INJECT_CONFIG_DIR, "readOnly": True}]
    volumes: list[Obj] = [{"name": "inject-config", "configMap": {"name": INJECTOR_CONFIG}}]
    if cert_manager:
        args += ["--webhook-cert-dir", CERT_DIR]
        mounts.append({"name": "webhook-certs", "mountPath": CERT_DIR, "readOnly": True})
        volumes.append({"name": "webhook-certs", "secret": {"secretName": WEBHOOK_SECRET}})
    selector = {"app": CONTROLLER}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(CONTROLLER, ns, "controller"),
        "spec": {
            "replicas": ctl["replicas"],
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": {**selector, **_labels("controller"), "sidecar.istio.io/inject": "false"},
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": "15014",
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": CONTROLLER,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1337,
                        "runAsGroup": 1337,
                        "fsGroup": 1337,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    # Replicas on different nodes, so one node going away leaves xDS and the webhooks up.
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": selector},
                        }
                    ],
                    "containers": [
                        {
                            "name": "controller",
                            "image": image(values, "controller"),
                            "imagePullPolicy": values["imagePullPolicy"],
                            "args": args,
                            "env": [
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                                {"name": "MIZZEN_LOG_FORMAT", "value": "json"},
                            ],
                            "ports": [
                                {"name": "grpc-xds", "containerPort": 15010, "protocol": "TCP"},
                                {"name": "http-monitoring", "containerPort": 15014, "protocol": "TCP"},
                                {"name": "https-webhook", "containerPort": WEBHOOK_PORT, "protocol": "TCP"},
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": "/ready", "port": 15014},
                                "periodSeconds": 3,
                                "timeoutSeconds": 5,
                            },
                            "livenessProbe": {
                                "tcpSocket": {"port": 15014},
                                "initialDelaySeconds": 10,
                                "periodSeconds": 10,
                            },
                            "resources": ctl["resources"],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def _pdb(values: Obj) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(CONTROLLER, values["namespace"], "controller"),
        # maxUnavailable rather than minAvailable: a one-replica install can still drain its node.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": CONTROLLER}}},
    }


def cni_component(values: Obj) -> list[Obj]:
    ns, cni = values["namespace"], values["cni"]
    excluded = list(dict.fromkeys([*cni["excludeNamespaces"], "kube-system", ns]))
    selector = {"app": "mizzen-cni-node"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(CNI, ns, "cni")},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(CNI, component="cni"),
            "rules": [
                # The plugin reads a pod and its namespace at ADD; the agent lists this node's pods to
                # repair them and labels those it cannot repair in place.
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
                # Removing the cni.mizzen.io/not-ready taint from its own node once capture is installed.
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(CNI, component="cni"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CNI},
            "subjects": [{"kind": "ServiceAccount", "name": CNI, "namespace": ns}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": _meta("mizzen-cni-node", ns, "cni"),
            "spec": {
                "selector": {"matchLabels": selector},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {
                    "metadata": {
                        "labels": {**selector, **_labels("cni"), "sidecar.istio.io/inject": "false"}
                    },
                    "spec": {
                        "serviceAccountName": CNI,
                        "priorityClassName": "system-node-critical",
                        # The host's network (the node's CNI config is not a pod's business) and PIDs (a
                        # pod's network namespace is found through /proc/<pid>/ns/net when repairing it).
                        "hostNetwork": True,
                        "hostPID": True,
                        "tolerations": [{"operator": "Exists"}],
                        "terminationGracePeriodSeconds": 30,
                        "containers": [
                            {
                                "name": "agent",
                                "image": image(values, "cni"),
                                "imagePullPolicy": values["imagePullPolicy"],
                                "args": [
                                    f"--exclude-namespaces={','.join(excluded)}",
                                    f"--repair-mode={cni['repairMode']}",
                                    f"--plugin-log-level={cni['logLevel']}",
                                ],
                                "env": [
                                    {
                                        "name": "NODE_NAME",
                                        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                    },
                                    {"name": "MIZZEN_LOG_FORMAT", "value": "json"},
                                ],
                                # Entering other pods' network namespaces to repair them and writing the
                                # host's CNI directories need full privileges; nothing else runs here.
                                "securityContext": {"privileged": True},
                                "readinessProbe": {
                                    "httpGet": {"path": "/readyz", "port": 15181},
                                    "periodSeconds": 2,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/healthz", "port": 15181},
                                    "initialDelaySeconds": 10,
                                    "periodSeconds": 10,
                                },
                                "resources": cni["resources"],
                                "volumeMounts": [
                                    {"name": "cni-bin", "mountPath": "/host/opt/cni/bin"},
                                    {"name": "cni-conf", "mountPath": "/host/etc/cni/net.d"},
                                ],
                            }
                        ],
                        "volumes": [
                            {
                                "name": "cni-bin",
                                "hostPath": {"path": "/opt/cni/bin", "type": "DirectoryOrCreate"},
                            },
                            {
                                "name": "cni-conf",
                                "hostPath": {"path": "/etc/cni/net.d", "type": "DirectoryOrCreate"},
                            },
                        ],
                    },
                },
            },
        },
    ]


def _client_config(values: Obj, path: str) -> Obj:
    # No caBundle here: the controller (or cert-manager's cainjector) fills it in; `mizzen install`
    # applies server-side, so re-installing never takes it away.
    return {"service": {"name": CONTROLLER, "namespace": values["namespace"], "path": path, "port": 443}}


def _webhook_annotations(values: Obj) -> Obj:
    if values["webhooks"]["certificates"] == "cert-manager":
        return {"cert-manager.io/inject-ca-from": f"{values['namespace']}/mizzen-webhook"}
    return {}


def _never(values: Obj) -> Obj:
    # The control plane's own namespace and kube-system are never sent to the injector.
    names = sorted({"kube-system", "kube-public", values["namespace"]})
    return {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": names}


def _mutating(values: Obj) -> Obj:
    hook = values["webhooks"]["injection"]
    pods = [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    common = {
        "clientConfig": _client_config(values, "/inject"),
        "rules": pods,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1", "v1beta1"],
        "failurePolicy": hook["failurePolicy"],
        "timeoutSeconds": hook["timeoutSeconds"],
        "matchPolicy": "Equivalent",
        "reinvocationPolicy": "Never",
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": _meta(MUTATING, component="injector", annotations=_webhook_annotations(values)),
        "webhooks": [
            {
                # Istio's two entries: a labelled namespace (pods may opt out) ...
                "name": "namespace.sidecar-injector.mizzen.io",
                **common,
                "namespaceSelector": {
                    "matchExpressions": [
                        {"key": "istio-injection", "operator": "In", "values": ["enabled"]},
                        _never(values),
                    ]
                },
                "objectSelector": {
                    "matchExpressions": [
                        {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}
                    ]
                },
            },
            {
                # ... or a pod that opts in from a namespace that says nothing.
                "name": "object.sidecar-injector.mizzen.io",
                **common,
                "namespaceSelector": {
                    "matchExpressions": [
                        {"key": "istio-injection", "operator": "DoesNotExist"},
                        {"key": "istio.io/rev", "operator": "DoesNotExist"},
                        _never(values),
                    ]
                },
                "objectSelector": {
                    "matchExpressions": [
                        {"key": "sidecar.istio.io/inject", "operator": "In", "values": ["true"]},
                        {"key": "istio.io/rev", "operator": "DoesNotExist"},
                    ]
                },
            },
        ],
    }


def _validating(values: Obj) -> Obj:
    hook = values["webhooks"]["validation"]
    groups = {
        "networking.istio.io": [
            "virtualservices",
            "destinationrules",
            "gateways",
            "serviceentries",
            "sidecars",
        ],
        "security.istio.io": ["peerauthentications", "authorizationpolicies"],
        "telemetry.istio.io": ["telemetries"],
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": _meta(VALIDATING, component="validation", annotations=_webhook_annotations(values)),
        "webhooks": [
            {
                "name": "validation.mizzen.io",
                "clientConfig": _client_config(values, "/validate"),
                "rules": [
                    {
                        "operations": ["CREATE", "UPDATE"],
                        "apiGroups": [group],
                        "apiVersions": ["*"],
                        "resources": resources,
                        "scope": "Namespaced",
                    }
                    for group, resources in groups.items()
                ],
                "sideEffects": "None",
                "admissionReviewVersions": ["v1", "v1beta1"],
                "failurePolicy": hook["failurePolicy"],
                "timeoutSeconds": hook["timeoutSeconds"],
                "matchPolicy": "Equivalent",
            }
        ],
    }


def _cert_manager(values: Obj) -> list[Obj]:
    """cert-manager mode: a self-signed root, a CA issuer, and the serving certificate in the Secret."""
    ns = values["namespace"]
    names = [f"{CONTROLLER}.{ns}.svc", f"{CONTROLLER}.{ns}.svc.{values['clusterDomain']}"]
    return [
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Issuer",
            "metadata": _meta("mizzen-selfsigned", ns, "webhook"),
            "spec": {"selfSigned": {}},
        },
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": _meta("mizzen-webhook-ca", ns, "webhook"),
            "spec": {
                "isCA": True,
                "commonName": "mizzen-webhook-ca",
                "secretName": "mizzen-webhook-ca",
                "privateKey": {"algorithm": "ECDSA", "size": 256},
                "issuerRef": {"name": "mizzen-selfsigned", "kind": "Issuer"},
            },
        },
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Issuer",
            "metadata": _meta("mizzen-webhook-ca", ns, "webhook"),
            "spec": {"ca": {"secretName": "mizzen-webhook-ca"}},
        },
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": _meta("mizzen-webhook", ns, "webhook"),
            "spec": {
                "secretName": WEBHOOK_SECRET,
                "dnsNames": names,
                "duration": "720h",
                "renewBefore": "240h",
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                "issuerRef": {"name": "mizzen-webhook-ca", "kind": "Issuer"},
            },
        },
    ]


def render(values: Obj) -> list[Obj]:
    """Every object of an install, in apply order."""
    components = values["components"]
    objects: list[Obj] = [_namespace(values)]
    if components["crds"]["enabled"]:
        objects += crd_defs.crds(_labels("crds"))
    if components["controller"]["enabled"]:
        objects += _controller_rbac(values)
        objects += [_injector_config(values), _mesh_config(values)]
        if values["webhooks"]["certificates"] == "cert-manager":
            objects += _cert_manager(values)
        objects += [_service(values), _controller_deployment(values), _pdb(values)]
    if components["cni"]["enabled"]:
        objects += cni_component(values)
    if components["controller"]["enabled"]:
        objects += [_mutating(values), _validating(values)]
    for kind in ("ingress", "egress"):
        if values["gateways"][kind]["enabled"]:
            objects += gateway_objects(kind, values, inject_config(values), image(values, "proxy"), MANAGED)
    return objects


def to_yaml(objects: list[Obj]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, width=120)
