"""What an install and the injection webhook give a cluster, made for one machine.

- The mesh's own pods and Services: ``mizzen-system/mizzen-controller`` on the files source (a pod of its
  own, as the files source is local mode's), and the install's ingress gateway exactly as ``mizzen install``
  renders it (:mod:`mizzen.manifests.gateways`: ``mizzen-proxy --proxy-type router``, labelled
  ``istio: ingressgateway``, a LoadBalancer Service 80/443 to 8080/8443). A LoadBalancer Service's
  address is its pod's IP here: its ports lead to their target ports inside the pod.
- Injection: Istio's webhook selectors, then the real injector (:mod:`controller.inject.template`).
- ``istio-proxy`` containers (injected or the gateway's) run our ``mizzen-proxy`` (the proxy image's
  entrypoint), and what their volumes hold on a cluster is in folders of the pod, their paths moved there:
  the pod's labels and annotations (downward API), a service-account token for the CA (signed by the node,
  local mode's kubelet), the CA's root (the ``istio-ca-root-cert`` ConfigMap), a scratch folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterable, Mapping
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
GATEWAY_LABEL = ("istio", "ingressgateway")  # how Gateways (and we) find the ingress gateway's pods


def system_objects(controller_ip: str | None) -> list[dict[str, Any]]:
    """The mesh's own namespaces and Services, and (once the controller has an address) the install's
    ingress gateway."""

    def ns(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}

    controller_ports = [
        {"name": "grpc-xds", "port": XDS_PORT},
        {"name": "https-dns", "port": SECURE_PORT},
        {"name": "http-monitoring", "port": DEBUG_PORT},
    ]
    objects = [
        ns(CONTROLLER[0]),
        ns("istio-system"),  # the root namespace, for mesh-wide config
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": CONTROLLER[1], "namespace": CONTROLLER[0]},
            "spec": {"selector": {"app": CONTROLLER[1]}, "ports": controller_ports},
        },
    ]
    if controller_ip is not None:
        from mizzen.manifests.gateways import gateway_objects
        from mizzen.manifests.values import resolve

        values = resolve("default")
        values["namespace"] = CONTROLLER[0]
        objects += gateway_objects("ingress", values, inject_config(controller_ip), PROXY_IMAGE, {})
    return objects


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
                        "--mesh-config",
                        str(paths.mesh_config),
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


def is_gateway(labels: Mapping[str, str]) -> bool:
    """The install's ingress gateway's pods (what Gateway resources select as ``istio: ingressgateway``)."""
    return labels.get(GATEWAY_LABEL[0]) == GATEWAY_LABEL[1]


def injection_selected(pod: Mapping[str, Any], namespace_labels: Mapping[str, str]) -> bool:
    """The injection webhook's selectors, as Istio's MutatingWebhookConfiguration has them: a namespace
    labelled ``istio-injection=enabled`` (unless the pod says false), or the pod labelled
    ``sidecar.istio.io/inject=true`` in a namespace without the label."""
    pod_flag = ((pod.get("metadata") or {}).get("labels") or {}).get(inject_policy.INJECT)
    ns_flag = namespace_labels.get("istio-injection")
    if ns_flag == "enabled":
        return pod_flag != "false"
    return ns_flag is None and pod_flag == "true"


PROXY_IMAGE = f"mizzen/proxy:{__version__}"
# The injector's volumes, each a folder of the pod's here (a kubelet would mount them into the container).
VOLUME_DIRS = {
    "istio-envoy": "proxy",
    "istio-podinfo": "podinfo",
    "istio-token": "token",
    "istiod-ca-cert": "ca",
}


def inject_config(controller_ip: str | None) -> InjectConfig:
    return InjectConfig(
        image=PROXY_IMAGE,
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
    return inject_template.inject(manifest, config, native=True)


def localize(manifest: dict[str, Any], paths: MeshPaths) -> dict[str, Any]:
    """The pod with its ``istio-proxy`` containers made to run here (see the module's docstring)."""
    meta = manifest["metadata"]
    files = paths.pods / f"{meta['namespace']}_{meta['name']}"
    proxies = [
        c
        for group in ("initContainers", "containers")
        for c in manifest["spec"].get(group) or ()
        if c.get("name") == inject_policy.PROXY_NAME
    ]
    for c in proxies:
        _localize_proxy(c, files)
    if proxies:
        manifest["spec"].pop("volumes", None)
    return manifest


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
    pod: LocalPod, paths: MeshPaths, tokens: LocalTokens, services: Iterable[Service]
) -> dict[str, str]:
    """Get a new pod ready to run: the netns lets non-root bind low ports (as container runtimes set it); a
    LoadBalancer Service's ports lead to their targets; a pod with ``istio-proxy`` gets its folders, and the
    env that points the proxy at what is not in its arguments (its token, its labels)."""
    netns_name = pod.ctx.node.netns_name(pod.name, pod.namespace)
    netns.run(
        netns.exec_argv(netns_name, ["sysctl", "-q", "-w", "net.ipv4.ip_unprivileged_port_start=0"]),
        check=False,
    )
    for svc in services:
        if svc.namespace == pod.namespace and svc.raw.get("spec", {}).get("type") == "LoadBalancer":
            if svc.selector is not None and all(pod.labels.get(k) == v for k, v in svc.selector.items()):
                load_balancer(netns_name, pod, svc)
    if not any(c.name == inject_policy.PROXY_NAME for c in pod.containers):
        return {}
    files = pod.files
    for sub in VOLUME_DIRS.values():
        (files / sub).mkdir(exist_ok=True)
    (files / "podinfo" / "labels").write_text(downward_file(pod.labels))
    (files / "podinfo" / "annotations").write_text(downward_file(pod.annotations))
    shutil.copyfile(paths.ca / "root-cert.pem", files / "ca" / "root-cert.pem")
    for sub in ("podinfo", "token", "ca"):
        (files / sub).chmod(0o755)
        for f in (files / sub).iterdir():
            f.chmod(0o644)
    os.chown(files / "proxy", PROXY_UID, PROXY_UID)
    token = tokens.issue(pod.namespace, pod.service_account, pod=pod.name)
    write_token(files / "token" / "istio-token", token, uid=PROXY_UID)
    return {
        "MIZZEN_LABELS_FILE": str(files / "podinfo" / "labels"),
        "TOKEN_PATH": str(files / "token" / "istio-token"),
    }


def load_balancer(netns_name: str, pod: LocalPod, service: Service) -> None:
    """The pod's address stands for its LoadBalancer Service: each Service port leads to its target port
    inside the pod (80 to 8080 for the gateway), as kube-proxy's rules lead it on a node."""
    for port in service.ports:
        target = port.target_port
        if isinstance(target, str):
            target = next(
                (
                    int(p["containerPort"])
                    for c in pod.containers
                    for p in c.spec.get("ports") or ()
                    if p.get("name") == target
                ),
                port.port,
            )
        if target != port.port and pod.ip:
            rule = [
                "-p",
                "tcp",
                "-d",
                pod.ip,
                "--dport",
                str(port.port),
                "-j",
                "REDIRECT",
                "--to-ports",
                str(target),
            ]
            netns.run(netns.exec_argv(netns_name, ["iptables", "-w", "-t", "nat", "-A", "PREROUTING", *rule]))
