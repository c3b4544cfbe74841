"""The local mesh's pure parts: reading Kubernetes YAML (and refusing what cannot run here, by name), the
cluster objects the controller is given (ClusterIPs, EndpointSlices, Pods, hosts files), injection as the
webhook does it with the sidecar's volumes moved into the pod's folder, and the kubelet's env expansion."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from mizzen.local import cluster, system
from mizzen.local.kubelet import LocalPod, PodContext, expand, field_value
from mizzen.local.meshctl import MeshError, _with_last_applied, _without_last_applied, read_manifests
from mizzen.local.meshstate import MeshPaths
from mizzen.local.workloads import (
    WORKDIR_ANNOTATION,
    ManifestError,
    build,
    check_object,
    template_hash,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bookinfo"


def deployment(**container: Any) -> dict[str, Any]:
    spec = {"name": "web", "command": ["python3", "web.py"], **container}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web-v1", "namespace": "shop"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web", "version": "v1"}},
                "spec": {"containers": [spec]},
            },
        },
    }


def service(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            **spec,
        },
    }


# -- reading ------------------------------------------------------------------------------------------------


def test_the_bookinfo_manifests_read_and_build() -> None:
    objects = read_manifests([EXAMPLES / "platform", EXAMPLES / "networking"])
    w = build(objects)
    assert w.namespace("default").injected
    assert set(w.services) == {f"default/{n}" for n in ("details", "productpage", "ratings", "reviews")}
    assert {k.split("/")[1] for k in w.workloads} == {
        "details-v1",
        "productpage-v1",
        "ratings-v1",
        "reviews-v1",
        "reviews-v2",
        "reviews-v3",
    }
    assert "default/bookinfo-reviews" in w.service_accounts
    assert {o["kind"] for o in w.istio} == {"Gateway", "VirtualService", "DestinationRule"}
    # The local workdir is resolved against the manifest's folder, once, when read.
    workdir = w.workloads["Deployment default/reviews-v2"].template["metadata"]["annotations"][
        WORKDIR_ANNOTATION
    ]
    assert workdir == str((EXAMPLES / "apps").resolve())


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (deployment(volumeMounts=[]), "containers[0] (web).volumeMounts: volumes are not supported locally"),
        (deployment(envFrom=[]), "containers[0] (web).envFrom: not supported locally"),
        (deployment(command=None), "command: must be a list of strings"),
        (
            {**deployment(), "spec": {**deployment()["spec"], "selector": {"matchLabels": {"app": "other"}}}},
            "spec.selector.matchLabels.app: does not match spec.template.metadata.labels",
        ),
        (
            deployment(env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
            "env[0].valueFrom: only fieldRef is supported locally",
        ),
        (
            deployment(env=[{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}}]),
            "env[0].valueFrom.fieldRef.fieldPath: 'spec.hostname' is not a field local mode knows",
        ),
        (
            deployment(readinessProbe={"httpGet": {"port": 80}, "tcpSocket": {"port": 80}}),
            "readinessProbe: needs exactly one of httpGet, tcpSocket, exec",
        ),
        (deployment(ports=[{"containerPort": 70000}]), "ports[0].containerPort: must be a port number"),
        (
            service(ports=[{"port": 80}, {"port": 81}]),
            "Service shop/web: spec.ports[0].name: required when a Service has several ports",
        ),
        (service(type="ExternalName"), "spec.type: 'ExternalName' is not supported locally"),
        (
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}},
            "StatefulSet default/db: apps/v1 StatefulSet is not run locally",
        ),
    ],
)
def test_what_cannot_run_here_is_refused_by_name(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        check_object(obj)
    assert message in str(caught.value)


def test_a_deployment_names_its_object_in_errors() -> None:
    with pytest.raises(ManifestError, match=r"^Deployment shop/web-v1: spec.template.spec.containers\[0\]"):
        check_object(deployment(volumeMounts=[]))


def test_read_manifests_names_the_file_and_document(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump_all([service(), deployment(envFrom=[])]))
    with pytest.raises(MeshError, match=r"app.yaml \(document 2\): Deployment shop/web-v1: .*envFrom"):
        read_manifests([path])
    with pytest.raises(MeshError, match="no such file"):
        read_manifests([tmp_path / "missing.yaml"])


def test_template_hash_follows_the_template() -> None:
    a = deployment()["spec"]["template"]
    b = deployment(args=["--fast"])["spec"]["template"]
    assert template_hash(a) == template_hash(dict(a)) and len(template_hash(a)) == 10
    assert template_hash(a) != template_hash(b)


# -- what the controller and the pods see -------------------------------------------------------------------


def view(
    name: str, ip: str, *, ready: bool = True, terminating: bool = False, port: int = 8080
) -> cluster.PodView:
    return cluster.PodView(
        name=name,
        namespace="shop",
        uid=f"uid-{name}",
        ip=ip,
        labels={"app": "web"},
        annotations={},
        service_account="web",
        ports=(("web", "http", port),),
        ready=ready,
        terminating=terminating,
        owner=("ReplicaSet", "web-v1-abc"),
    )


def test_cluster_ips_are_kept_asked_for_or_next_free() -> None:
    w = build(
        [
            check_object(service()),
            check_object(
                {**service(clusterIP="10.96.0.50"), "metadata": {"name": "db", "namespace": "shop"}}
            ),
        ]
    )
    ips, problems = cluster.allocate_ips(w.services.values(), "10.96.0.0/24", {})
    assert ips == {"shop/web": "10.96.0.2", "shop/db": "10.96.0.50"} and problems == []
    again, _ = cluster.allocate_ips(w.services.values(), "10.96.0.0/24", {"shop/web": "10.96.0.9"})
    assert again["shop/web"] == "10.96.0.9"
    far = build([check_object(service(clusterIP="10.1.0.1"))])
    ips, problems = cluster.allocate_ips(far.services.values(), "10.96.0.0/24", {})
    assert ips == {"shop/web": "10.96.0.2"} and "not in the service range" in problems[0]


def test_endpoint_slices_resolve_named_ports_and_carry_readiness() -> None:
    svc = build([check_object(service())]).services["shop/web"]
    pods = [
        view("web-1", "10.0.0.5"),
        view("web-2", "10.0.0.6", ready=False),
        view("web-3", "10.0.0.7", terminating=True),
        view("web-4", "10.0.0.8", port=9090),
    ]
    slices = cluster.endpoint_slices(svc, pods)
    assert [s["ports"] for s in slices] == [
        [{"name": "http", "port": 8080, "protocol": "TCP"}],
        [{"name": "http", "port": 9090, "protocol": "TCP"}],
    ]
    conditions = {e["addresses"][0]: e["conditions"] for s in slices for e in s["endpoints"]}
    assert conditions["10.0.0.5"] == {"ready": True, "serving": True, "terminating": False}
    assert conditions["10.0.0.6"]["ready"] is False
    assert conditions["10.0.0.7"] == {"ready": False, "serving": True, "terminating": True}
    assert slices[0]["metadata"]["labels"]["kubernetes.io/service-name"] == "web"


def test_pod_object_is_owned_by_its_replicaset() -> None:
    obj = cluster.pod_object(view("web-v1-abc-xyz", "10.0.0.5"))
    assert obj["metadata"]["ownerReferences"][0]["name"] == "web-v1-abc"
    assert obj["status"]["podIP"] == "10.0.0.5" and obj["spec"]["serviceAccountName"] == "web"
    assert obj["spec"]["containers"] == [
        {"name": "web", "ports": [{"containerPort": 8080, "protocol": "TCP", "name": "http"}]}
    ]


def test_hosts_file_names_services_as_cluster_dns_does() -> None:
    w = build(
        [
            check_object(service()),
            check_object({**service(), "metadata": {"name": "api", "namespace": "other"}}),
        ]
    )
    text = cluster.hosts_file(
        "client", "shop", "10.0.0.9", w.services.values(), {"shop/web": "10.96.0.2", "other/api": "10.96.0.3"}
    )
    assert "10.0.0.9\tclient" in text
    assert "10.96.0.2\tweb web.shop web.shop.svc web.shop.svc.cluster.local" in text
    assert "10.96.0.3\tapi.other api.other.svc api.other.svc.cluster.local" in text  # no short name across


# -- injection ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "pod", "selected"),
    [
        ({"istio-injection": "enabled"}, {}, True),
        ({"istio-injection": "enabled"}, {"sidecar.istio.io/inject": "false"}, False),
        ({}, {"sidecar.istio.io/inject": "true"}, True),
        ({"istio-injection": "disabled"}, {"sidecar.istio.io/inject": "true"}, False),
        ({}, {}, False),
    ],
)
def test_injection_follows_istio_webhook_selectors(
    ns: dict[str, str], pod: dict[str, str], selected: bool
) -> None:
    assert system.injection_selected({"metadata": {"labels": pod}}, ns) is selected


def test_injected_sidecar_runs_mizzen_proxy_with_its_volumes_in_the_pod_folder(tmp_path: Path) -> None:
    paths = MeshPaths(tmp_path)
    pod = {
        "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}, "annotations": {}},
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "command": ["web"],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
                }
            ]
        },
    }
    injected, _ = system.inject(pod, {"istio-injection": "enabled"}, "10.0.0.2", paths)
    injected = system.localize(injected, paths)
    assert "volumes" not in injected["spec"]
    proxy = injected["spec"]["initContainers"][0]
    assert proxy["name"] == "istio-proxy" and proxy["restartPolicy"] == "Always"
    assert proxy["command"] == [str(system.BIN / "mizzen-proxy")] and "volumeMounts" not in proxy
    args = proxy["args"]
    folder = tmp_path / "mesh" / "pods" / "shop_web-1"
    assert args[args.index("--xds-address") + 1] == "10.0.0.2:15010"
    assert args[args.index("--ca-address") + 1] == "10.0.0.2:15012"
    assert args[args.index("--ca-root-cert") + 1] == str(folder / "ca" / "root-cert.pem")
    assert args[args.index("--bootstrap-out") + 1] == str(folder / "proxy" / "bootstrap.json")
    # The app's probe goes through the sidecar, as the injector rewrites it.
    assert injected["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] == 15020
    assert injected["metadata"]["annotations"]["sidecar.istio.io/status"]
    untouched, _ = system.inject(pod, {}, "10.0.0.2", paths)
    assert untouched is pod


# -- the kubelet's env, the applied label -------------------------------------------------------------------


def test_env_expansion_as_kubernetes_does_it() -> None:
    env = {"A": "x", "B": "y"}
    assert expand("$(A)-$(B)-$(C)-$$(A)", env) == "x-y-$(C)-$(A)"


def test_field_refs(tmp_path: Path) -> None:
    ctx = PodContext(
        node=None,  # type: ignore[arg-type]  # field values need no node
        pod_dir=tmp_path,
        prober=ThreadPoolExecutor(1),
        event=lambda *a: None,
        base_env={},
        host_ip="10.0.0.1",
    )
    manifest = {
        "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"serviceAccountName": "web", "containers": [{"name": "web", "command": ["web"]}]},
    }
    pod = LocalPod(ctx, manifest, uid="u-1", namespace_labels={})
    pod.ip = "10.0.0.5"
    assert field_value("status.podIP", pod) == "10.0.0.5"
    assert field_value("spec.serviceAccountName", pod) == "web"
    assert field_value("metadata.labels['app']", pod) == "web"
    assert field_value("status.hostIP", pod) == "10.0.0.1"
    ctx.prober.shutdown()


def test_applied_label_changes_with_content_only() -> None:
    obj = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "r"},
        "spec": {"hosts": ["r"]},
    }
    a, b = _with_last_applied(obj), _with_last_applied(dict(obj))
    assert a == b and a["metadata"]["labels"]["local.mizzen.io/applied"]
    changed = _with_last_applied({**obj, "spec": {"hosts": ["s"]}})
    assert changed["metadata"]["labels"] != a["metadata"]["labels"]
    assert _without_last_applied(a) == obj


def test_the_install_gateway_runs_here_as_a_router(tmp_path: Path) -> None:
    paths = MeshPaths(tmp_path)
    objects = system.system_objects("10.0.0.2")
    assert system.system_objects(None) == objects[: len(system.system_objects(None))]
    w = build([], trusted=objects)
    (gateway,) = [x for x in w.workloads.values() if system.is_gateway(x.labels)]
    svc = next(s for s in w.services.values() if s.selector and system.is_gateway(s.selector))
    assert svc.raw["spec"]["type"] == "LoadBalancer"
    assert {(p.port, p.target_port) for p in svc.ports} >= {(80, 8080), (443, 8443)}
    manifest = {
        "metadata": {"name": "gw-1", "namespace": gateway.namespace, "labels": dict(gateway.labels)},
        "spec": json.loads(json.dumps(gateway.template["spec"])),
    }
    local = system.localize(manifest, paths)
    (proxy,) = local["spec"]["containers"]
    assert proxy["command"] == [str(system.BIN / "mizzen-proxy")] and "volumes" not in local["spec"]
    args = proxy["args"]
    assert args[args.index("--proxy-type") + 1] == "router"
    assert args[args.index("--xds-address") + 1] == "10.0.0.2:15010"
    folder = tmp_path / "mesh" / "pods" / f"{gateway.namespace}_gw-1"
    assert args[args.index("--ca-root-cert") + 1] == str(folder / "ca" / "root-cert.pem")


def test_the_mesh_config_is_the_one_configmap_read_locally(tmp_path: Path) -> None:
    mesh = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "mizzen-system"},
        "data": {"mesh": "accessLogFile: /dev/stdout\n"},
    }
    assert check_object(mesh) == mesh
    other = {**mesh, "metadata": {"name": "app-settings", "namespace": "default"}}
    with pytest.raises(ManifestError, match="the only ConfigMap read locally is the mesh config"):
        check_object(other)
    # The controller's --mesh-config points at the file the applied ConfigMap lands in, Istio's defaults
    # until then.
    paths = MeshPaths(tmp_path)
    paths.create()
    assert paths.mesh_config.read_text().strip() == "{}"
    command = system.controller_manifest(paths)["spec"]["containers"][0]["command"]
    assert command[command.index("--mesh-config") + 1] == str(paths.mesh_config)
    from controller import meshconfig

    paths.mesh_config.write_text(yaml.safe_dump(mesh))
    assert meshconfig.parse(paths.mesh_config.read_text(), "x")["spec"]["accessLogFile"] == "/dev/stdout"
