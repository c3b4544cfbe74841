"""What an install and the injection webhook give a cluster, made for one machine.

- The mesh's own pods and Services: ``mizzen-system/mizzen-controller`` on the files source, and
  ``istio-system/istio-ingressgateway`` (mizzen-proxy as Istio's ``router`` node, labelled
  ``istio: ingressgateway``) behind a LoadBalancer Service whose address is the gateway pod's.
- Injection: Istio's webhook selectors, then the real injector (:mod:`controller.inject.template`); the
  injected ``istio-proxy`` runs our ``mizzen-proxy`` (the proxy image's entrypoint).
- What the injector's volumes hold on a cluster, as files the sidecar is pointed at: the pod's labels and
  annotations (downward API), a service-account token for the CA (signed by the node, as local mode's
  kubelet), the CA's root; and a gateway's bootstrap.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controller.ca.tokens import LocalTokens, write_token
from controller.inject import policy as inject_policy
from controller.inject import template as inject_template
from controller.inject.config import InjectConfig
from mizzen import __version__
from mizzen.local import netns
from mizzen.local.kubelet import LocalPod
from mizzen.local.meshstate import MeshPaths
from mizzen.local.workloads import Service

BIN = Path(sys.executable).parent
PROXY_UID = 1337
XDS_PORT, SECURE_PORT, DEBUG_PORT = 15010, 15012, 15014
CONTROLLER = ("mizzen-system", "mizzen-controller")
GATEWAY = ("istio-system", "istio-ingressgateway")
GATEWAY_LABELS = {"app": "istio-ingressgateway", "istio": "ingressgateway"}
GATEWAY_PORTS = ((15021, 15021, "status-port"), (80, 8080, "http2"), (443, 8443, "https"))


def system_objects() -> list[dict[str, Any]]:
    """The mesh's own namespaces and Services, as a cluster install has them."""

    def ns(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}

    controller_ports = [
        {"name": "grpc-xds", "port": XDS_PORT},
        {"name": "https-dns", "port": SECURE_PORT},
        {"name": "http-monitoring", "port": DEBUG_PORT},
    ]
    return [
        ns(CONTROLLER[0]),
        ns(GATEWAY[0]),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": CONTROLLER[1], "namespace": CONTROLLER[0]},
            "spec": {"selector": {"app": CONTROLLER[1]}, "ports": controller_ports},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": GATEWAY[1], "namespace": GATEWAY[0], "labels": dict(GATEWAY_LABELS)},
            "spec": {
                "type": "LoadBalancer",
                "selector": dict(GATEWAY_LABELS),
                "ports": [{"name": n, "port": p, "targetPort": t} for p, t, n in GATEWAY_PORTS],
            },
        },
    ]


def controller_manifest(paths: MeshPaths) -> dict[str, Any]:
    """mizzen-controller on the files source, its CA in the state dir, its debug port probed."""
    return {
        "metadata": {
            "name": CONTROLLER[1],
            "namespace": CONTROLLER[0],
            "labels": {"app": CONTROLLER[1]},
            "annotations": {inject_policy.INJECT: "false"},
        },
        "spec": {
            "serviceAccountName": CONTROLLER[1],
            "containers": [
                {
                    "name": "controller",
                    "command": [
                        str(BIN / "mizzen-controller"),
                        "--files",
                        str(paths.source),
                        "--ca-dir",
                        str(paths.ca),
                        "--poll-interval",
                        "0.2",
                    ],
                    "ports": [
                        {"name": "grpc-xds", "containerPort": XDS_PORT},
                        {"name": "https-dns", "containerPort": SECURE_PORT},
                        {"name": "http-monitoring", "containerPort": DEBUG_PORT},
                    ],
                    "readinessProbe": {
                        "httpGet": {"path": "/ready", "port": DEBUG_PORT},
                        "periodSeconds": 1,
                        "failureThreshold": 3,
                    },
                }
            ],
        },
    }


def gateway_manifest(paths: MeshPaths, workers: int = 1) -> dict[str, Any]:
    """The ingress gateway: mizzen-proxy from a router bootstrap (written by :func:`prepare`)."""
    boot = paths.pods / f"{GATEWAY[0]}_{GATEWAY[1]}" / "bootstrap.json"
    return {
        "metadata": {
            "name": GATEWAY[1],
            "namespace": GATEWAY[0],
            "labels": {**GATEWAY_LABELS, "service.istio.io/canonical-name": GATEWAY[1]},
            "annotations": {inject_policy.INJECT: "false"},
        },
        "spec": {
            "serviceAccountName": "istio-ingressgateway-service-account",
            "containers": [
                {
                    "name": inject_policy.PROXY_NAME,
                    "command": [
                        str(BIN / "mizzen-proxy"),
                        "-c",
                        str(boot),
                        "--log-level",
                        "warning",
                        "--concurrency",
                        str(workers),
                    ],
                    "ports": [
                        {"name": n, "containerPort": t} for _, t, n in GATEWAY_PORTS if n != "status-port"
                    ]
                    + [{"name": "status-port", "containerPort": 15021}],
                    "readinessProbe": {
                        "httpGet": {"path": "/healthz/ready", "port": 15021},
                        "periodSeconds": 1,
                        "failureThreshold": 3,
                    },
                    "securityContext": {"runAsUser": PROXY_UID, "runAsGroup": PROXY_UID},
                }
            ],
        },
    }


def injection_selected(pod: Mapping[str, Any], namespace_labels: Mapping[str, str]) -> bool:
    """The injection webhook's selectors, as Istio's MutatingWebhookConfiguration has them: a namespace
    labelled ``istio-injection=enabled`` (unless the pod says false), or the pod labelled
    ``sidecar.istio.io/inject=true`` in a namespace without the label."""
    pod_flag = ((pod.get("metadata") or {}).get("labels") or {}).get(inject_policy.INJECT)
    ns_flag = namespace_labels.get("istio-injection")
    if ns_flag == "enabled":
        return pod_flag != "false"
    return ns_flag is None and pod_flag == "true"


# The injector's volumes, each a folder of the pod's here (a kubelet would mount them into the container).
VOLUME_DIRS = {
    "istio-envoy": "proxy",
    "istio-podinfo": "podinfo",
    "istio-token": "token",
    "istiod-ca-cert": "ca",
}


def inject_config(controller_ip: str | None) -> InjectConfig:
    return InjectConfig(
        image=f"mizzen/proxy:{__version__}",
        xds_address=f"{controller_ip}:{XDS_PORT}",
        ca_address=f"{controller_ip}:{SECURE_PORT}",
        native_sidecar=True,
        log_level="warning",
    )


def inject(
    manifest: dict[str, Any], namespace_labels: Mapping[str, str], controller_ip: str | None, paths: MeshPaths
) -> tuple[dict[str, Any], list[str]]:
    """The pod as the webhook would return it (unchanged when not selected), and the injector's warnings."""
    namespace = manifest["metadata"]["namespace"]
    if not injection_selected(manifest, namespace_labels):
        return manifest, []
    config = inject_config(controller_ip)
    if not inject_policy.decide(manifest, namespace, config).inject:
        return manifest, []
    injected, warnings = inject_template.inject(manifest, config, native=True)
    files = paths.pods / f"{namespace}_{manifest['metadata']['name']}"
    for group in ("initContainers", "containers"):
        for c in injected["spec"].get(group) or ():
            if c.get("name") == inject_policy.PROXY_NAME:
                _localize_proxy(c, files)
    return injected, warnings


def _localize_proxy(container: dict[str, Any], files: Path) -> None:
    """The proxy image's entrypoint is mizzen-proxy; a path under one of its volumes' mount points is the
    same path under the pod's folder for that volume (with no mount namespace, the paths move instead)."""
    container.setdefault("command", [str(BIN / "mizzen-proxy")])
    mounts: dict[str, str] = {}
    for mount in container.pop("volumeMounts", None) or ():
        local = VOLUME_DIRS.get(mount["name"])
        if local is None:
            raise ValueError(f"istio-proxy: volume {mount['name']!r} has no local counterpart")
        mounts[mount["mountPath"].rstrip("/")] = str(files / local)

    def moved(value: str) -> str:
        for mount, local in mounts.items():
            if value == mount or value.startswith(mount + "/"):
                return local + value[len(mount) :]
        return value

    container["args"] = [moved(a) for a in container.get("args") or ()]
    for item in container.get("env") or ():
        if "value" in item:
            item["value"] = moved(str(item["value"]))


def downward_file(values: Mapping[str, str]) -> str:
    """The downward API's ``key="value"`` lines (JSON quoting reads back as Go's %q does)."""
    return "".join(f"{k}={json.dumps(v)}\n" for k, v in sorted(values.items()))


def prepare(
    pod: LocalPod,
    paths: MeshPaths,
    tokens: LocalTokens,
    controller_ip: str | None,
    gateway_service: Service | None,
) -> dict[str, str]:
    """Get a new pod ready to run: the netns lets non-root bind low ports (as container runtimes set it);
    a pod with ``istio-proxy`` gets its files, and the env that points the proxy at them."""
    netns_name = pod.ctx.node.netns_name(pod.name, pod.namespace)
    netns.run(
        netns.exec_argv(netns_name, ["sysctl", "-q", "-w", "net.ipv4.ip_unprivileged_port_start=0"]),
        check=False,
    )
    if not any(c.name == inject_policy.PROXY_NAME for c in pod.containers):
        return {}
    files = pod.files
    for sub in VOLUME_DIRS.values():
        (files / sub).mkdir(exist_ok=True)
    (files / "podinfo" / "labels").write_text(downward_file(pod.labels))
    (files / "podinfo" / "annotations").write_text(downward_file(pod.annotations))
    # The istio-ca-root-cert ConfigMap: the root the proxy verifies the CA with.
    shutil.copyfile(paths.ca / "root-cert.pem", files / "ca" / "root-cert.pem")
    for sub in ("podinfo", "token", "ca"):
        (files / sub).chmod(0o755)
        for f in (files / sub).iterdir():
            f.chmod(0o644)
    os.chown(files / "proxy", PROXY_UID, PROXY_UID)
    token = tokens.issue(pod.namespace, pod.service_account, pod=pod.name)
    write_token(files / "token" / "istio-token", token, uid=PROXY_UID)
    if (pod.namespace, pod.name) == GATEWAY:
        load_balancer(netns_name, pod.ip, gateway_service)
        write_router_bootstrap(pod, controller_ip)
    return {
        "MIZZEN_LABELS_FILE": str(files / "podinfo" / "labels"),
        "TOKEN_PATH": str(files / "token" / "istio-token"),
        "CA_ADDR": f"{controller_ip}:{SECURE_PORT}",
        "CA_ROOT_CERT": str(files / "ca" / "root-cert.pem"),
    }


def write_router_bootstrap(pod: LocalPod, controller_ip: str | None) -> None:
    """The gateway's bootstrap: the injected sidecar's, as Istio's ``router`` node (its listeners come from
    the Gateways that select its labels)."""
    from fastpath import bootstrap_gen

    boot = bootstrap_gen.generate(
        f"{controller_ip}:{XDS_PORT}",
        {
            "POD_NAME": pod.name,
            "POD_NAMESPACE": pod.namespace,
            "INSTANCE_IP": pod.ip or "",
            "SERVICE_ACCOUNT": pod.service_account,
            "ISTIO_META_WORKLOAD_NAME": pod.name,
        },
        pod.files / "podinfo" / "labels",
    )
    boot["node"]["id"] = "router" + boot["node"]["id"][len("sidecar") :]
    path = pod.files / "bootstrap.json"
    path.write_text(json.dumps(boot, indent=2))
    path.chmod(0o644)


def load_balancer(netns_name: str, ip: str | None, service: Service | None) -> None:
    """The gateway pod's address stands for its LoadBalancer Service: each Service port leads to its target
    port (80 to 8080, 443 to 8443) inside the pod, as kube-proxy's rules lead it on a node."""
    if service is None or ip is None:
        return
    for port in service.ports:
        if isinstance(port.target_port, int) and port.target_port != port.port:
            rule = ["-p", "tcp", "-d", ip, "--dport", str(port.port), "-j", "REDIRECT"]
            rule += ["--to-ports", str(port.target_port)]
            netns.run(netns.exec_argv(netns_name, ["iptables", "-w", "-t", "nat", "-A", "PREROUTING", *rule]))
