"""The ingress and egress gateways of an install, laid out as Istio's are, so Gateway resources written for
Istio select them unchanged (``istio: ingressgateway``, ``istio: egressgateway``).

Each is ``mizzen-proxy --proxy-type router`` (no capture, no app) following the controller like a sidecar
(xDS on 15010, its workload certificate from the CA on 15012 with the mesh's root, a projected token),
with several worker processes sharing its ports. Its Service maps Istio's ports to unprivileged container
ports (80 -> 8080, 443 -> 8443): the gateway runs as UID 1337 and the controller binds each Gateway port
to the Service's target port, as Istio does.
"""

from __future__ import annotations

from typing import Any

from controller.inject import template
from controller.inject.config import InjectConfig

Obj = dict[str, Any]

# (name, Service port, container port): Istio's gateway ports.
_PORTS = {
    "ingress": [("status-port", 15021, 15021), ("http2", 80, 8080), ("https", 443, 8443)],
    "egress": [("http2", 80, 8080), ("https", 443, 8443)],
}


def gateway_objects(
    kind: str, values: Obj, config: InjectConfig, proxy_image: str, managed: dict[str, str]
) -> list[Obj]:
    """ServiceAccount, Deployment, Service (and, with replicas to spare, a PodDisruptionBudget) of the
    ``kind`` ("ingress"/"egress") gateway, in the install's namespace; ``managed``: the install's labels."""
    settings = values["gateways"][kind]
    ns = values["namespace"]
    name = f"istio-{kind}gateway"
    labels = {"app": name, "istio": f"{kind}gateway"}
    meta = {
        "name": name,
        "namespace": ns,
        "labels": {**labels, **managed, "app.kubernetes.io/component": kind},
    }
    account = f"{name}-service-account"
    ports = _PORTS[kind]
    env = [
        _field("POD_NAME", "metadata.name"),
        _field("POD_NAMESPACE", "metadata.namespace"),
        _field("INSTANCE_IP", "status.podIP"),
        _field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        _field("HOST_IP", "status.hostIP"),
        _field("NODE_NAME", "spec.nodeName"),
        {"name": "ISTIO_META_WORKLOAD_NAME", "value": name},
        {"name": "ISTIO_META_CLUSTER_ID", "value": config.cluster_id},
        {"name": "MIZZEN_CLUSTER_DOMAIN", "value": config.cluster_domain},
        {"name": "MIZZEN_LOG_FORMAT", "value": "json"},
    ]
    container = {
        "name": "istio-proxy",
        "image": proxy_image,
        "imagePullPolicy": values["imagePullPolicy"],
        "args": [
            "--proxy-type",
            "router",
            "--xds-address",
            config.xds_address,
            "--ca-address",
            config.ca_address,
            "--ca-root-cert",
            f"{template.CA_ROOT_DIR}/root-cert.pem",
            "--bootstrap-out",
            f"{template.SCRATCH_DIR}/bootstrap.json",
            "--concurrency",
            str(settings["concurrency"]),
            "--log-level",
            values["proxy"]["logLevel"],
        ],
        "env": env,
        "ports": [
            *({"name": n, "containerPort": c, "protocol": "TCP"} for n, _, c in ports if c != 15021),
            {"name": "status-port", "containerPort": 15021, "protocol": "TCP"},
            {"name": "mizzen-metrics", "containerPort": template.METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": 15021, "scheme": "HTTP"},
            "periodSeconds": 2,
            "failureThreshold": 30,
        },
        "resources": settings["resources"],
        "securityContext": template.proxy_security_context(),
        "volumeMounts": template.proxy_volume_mounts(),
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": settings["replicas"],
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    # Never injected: it is a proxy itself, and its traffic is not captured.
                    "labels": {
                        **labels,
                        "sidecar.istio.io/inject": "false",
                        "service.istio.io/canonical-name": name,
                    },
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(template.METRICS_PORT),
                        "prometheus.io/path": "/stats/prometheus",
                    },
                },
                "spec": {
                    "serviceAccountName": account,
                    "securityContext": {
                        "fsGroup": template.PROXY_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": template.volumes(config),
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": settings["serviceType"],
            "selector": labels,
            "ports": [{"name": n, "port": p, "targetPort": c, "protocol": "TCP"} for n, p, c in ports],
        },
    }
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {**meta, "name": account}},
        deployment,
        service,
    ]
    if settings["replicas"] > 1:
        # Only with a spare: a budget of one over one replica would block every node drain.
        objects.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": meta,
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
            }
        )
    return objects


def _field(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}
