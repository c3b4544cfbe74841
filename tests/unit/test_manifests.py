"""The rendered install: every object is valid Kubernetes (checked against the API's own OpenAPI schemas),
CRDs are structural and serve Istio's versions, RBAC is exactly what the informers and webhooks use, the
controller's and agent's arguments parse, images exist in images/, and deploy/ matches the renderer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cni.agent import cli as agent_cli
from controller import main as controller_main
from controller.inject.config import from_dict
from controller.sources.kinds import KIND_INFO
from fastpath import main as proxy_main
from mizzen.manifests import PROFILES, render, resolve, to_yaml
from mizzen.manifests.render import cni_component

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = "1.29"  # the oldest release we support (native sidecars on by default)
PROFILE_VALUES = {name: resolve(name) for name in PROFILES}
CERT_MANAGER = resolve(sets=["webhooks.certificates=cert-manager"])


def _all() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for label, values in [*PROFILE_VALUES.items(), ("cert-manager", CERT_MANAGER)]:
        out += [(f"{label}:{o['kind']}/{o['metadata']['name']}", o) for o in render(values)]
    return out


@pytest.mark.parametrize(("label", "obj"), _all(), ids=[label for label, _ in _all()])
def test_every_object_is_valid_kubernetes(label: str, obj: dict[str, Any]) -> None:
    if obj["apiVersion"].startswith("cert-manager.io/"):
        assert obj["spec"]["issuerRef"]["kind"] == "Issuer" if obj["kind"] == "Certificate" else True
        return  # not a Kubernetes schema; cert-manager validates its own
    kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def _by_kind(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))


def _structural(schema: dict[str, Any], path: str) -> None:
    """Kubernetes' structural-schema rules that matter here: every node has a type (or preserves unknown
    fields), and no node mixes preserve-unknown-fields with declared properties below ``spec``."""
    assert "type" in schema, f"{path}: no type"
    for name, sub in (schema.get("properties") or {}).items():
        _structural(sub, f"{path}.{name}")
    if "items" in schema:
        _structural(schema["items"], f"{path}[]")


def test_crds_are_structural_and_serve_istios_versions() -> None:
    crds = [o for o in render(PROFILE_VALUES["default"]) if o["kind"] == "CustomResourceDefinition"]
    istio = {k: i for k, i in KIND_INFO.items() if i.group.endswith(".istio.io")}
    assert {c["spec"]["names"]["kind"] for c in crds} == set(istio)
    for crd in crds:
        spec = crd["spec"]
        info = istio[spec["names"]["kind"]]
        assert crd["metadata"]["name"] == f"{info.plural}.{info.group}"
        assert [v["name"] for v in spec["versions"]] == list(info.versions)
        assert sum(v["storage"] for v in spec["versions"]) == 1
        for version in spec["versions"]:
            _structural(version["schema"]["openAPIV3Schema"], f"{crd['metadata']['name']}/{version['name']}")


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        if not rule.get("resourceNames")
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_controller_rbac_is_exactly_what_the_informers_and_webhooks_use() -> None:
    objects = render(PROFILE_VALUES["default"])
    role = _by_kind(objects, "ClusterRole", "mizzen-controller")
    # Derived from the informer list: each kind the mesh reads is listed and watched, and read one by one.
    needed = {
        (info.group, info.plural, verb) for info in KIND_INFO.values() for verb in ("get", "list", "watch")
    }
    # The workload CA: TokenReview for callers' tokens, the root ConfigMap kept in every namespace.
    ca = {("authentication.k8s.io", "tokenreviews", "create")} | {
        ("", "configmaps", verb) for verb in ("get", "list", "watch", "create", "update")
    }
    assert _grants(role["rules"]) == needed | ca
    named = {
        (r["resources"][0], tuple(r["resourceNames"]), tuple(r["verbs"]))
        for r in role["rules"]
        if r.get("resourceNames")
    }
    assert named == {
        ("mutatingwebhookconfigurations", ("mizzen-sidecar-injector",), ("get", "patch")),
        ("validatingwebhookconfigurations", ("mizzen-validator",), ("get", "patch")),
    }
    namespaced = _by_kind(objects, "Role", "mizzen-controller")["rules"]
    assert _grants(namespaced) == {("coordination.k8s.io", "leases", "create"), ("", "secrets", "create")}
    secrets = {
        tuple(r["resourceNames"])
        for r in namespaced
        if r["resources"] == ["secrets"] and "resourceNames" in r
    }
    assert secrets == {("istio-ca-secret", "cacerts"), ("mizzen-webhook-certs",)}
    # No wildcard anywhere, no secrets cluster-wide.
    for rule in [*role["rules"], *namespaced]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
    # With cert-manager the webhook certificate is not ours to write; the CA's own Secret still is.
    cm = _by_kind(render(CERT_MANAGER), "Role", "mizzen-controller")["rules"]
    assert {
        tuple(r["resourceNames"]) for r in cm if r["resources"] == ["secrets"] and "resourceNames" in r
    } == {("istio-ca-secret", "cacerts")}


def test_gateways_by_profile_as_istio_lays_them_out() -> None:
    def gateways(values: dict[str, Any]) -> dict[str, Any]:
        return {
            o["metadata"]["name"]: o
            for o in render(values)
            if o["kind"] == "Deployment" and "gateway" in o["metadata"]["name"]
        }

    assert set(gateways(PROFILE_VALUES["default"])) == {"istio-ingressgateway"}
    assert set(gateways(PROFILE_VALUES["demo"])) == {"istio-ingressgateway", "istio-egressgateway"}
    assert gateways(PROFILE_VALUES["minimal"]) == {}
    objects = render(PROFILE_VALUES["demo"])
    for kind in ("ingress", "egress"):
        name = f"istio-{kind}gateway"
        deployment = _by_kind(objects, "Deployment", name)
        pod = deployment["spec"]["template"]
        # Gateway resources written for Istio select these labels; the gateway itself is never injected.
        assert pod["metadata"]["labels"]["istio"] == f"{kind}gateway"
        assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
        container = pod["spec"]["containers"][0]
        args = proxy_main.build_parser().parse_args(container["args"])  # exits (fails the test) on a bad flag
        assert args.proxy_type == "router" and args.concurrency == 2
        assert args.ca_address.endswith(":15012") and args.xds_address.endswith(":15010")
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/var/run/secrets/istio", "/var/run/secrets/tokens", "/etc/istio/pod"} <= mounts
        assert container["securityContext"]["runAsUser"] == 1337
        service = _by_kind(objects, "Service", name)
        # Istio's ports to unprivileged container ports (the controller binds Gateway ports to the target).
        assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} >= {(80, 8080), (443, 8443)}
        assert service["spec"]["type"] == ("LoadBalancer" if kind == "ingress" else "ClusterIP")
        declared = {p["containerPort"] for p in container["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= declared


def test_controller_and_agent_arguments_parse() -> None:
    for values in [*PROFILE_VALUES.values(), CERT_MANAGER]:
        objects = render(values)
        deployment = _by_kind(objects, "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        args = controller_main.parse_args(container["args"])  # exits (fails the test) on a bad flag
        assert args.webhook_port == 15017 and args.mesh_namespace == values["namespace"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert str(args.inject_config.parent) in mounts
        if args.webhook_cert_mode == "files":
            assert str(args.webhook_cert_dir) in mounts
        config = yaml.safe_load(
            _by_kind(objects, "ConfigMap", "mizzen-sidecar-injector")["data"]["config.yaml"]
        )
        assert from_dict(config).mesh_namespace == values["namespace"]
        if values["components"]["cni"]["enabled"]:
            ds = _by_kind(objects, "DaemonSet")
            agent = ds["spec"]["template"]["spec"]["containers"][0]
            parsed = agent_cli.build_parser().parse_args(agent["args"])
            assert {"kube-system", values["namespace"]} <= set(parsed.exclude_namespaces)
            assert agent["readinessProbe"]["httpGet"]["port"] == parsed.health_port


def test_service_and_webhooks_line_up() -> None:
    objects = render(PROFILE_VALUES["default"])
    service = _by_kind(objects, "Service")
    ports = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert ports == {15010: 15010, 15012: 15012, 15014: 15014, 443: 15017}
    mutating = _by_kind(objects, "MutatingWebhookConfiguration")
    validating = _by_kind(objects, "ValidatingWebhookConfiguration")
    for hook in [*mutating["webhooks"], *validating["webhooks"]]:
        ref = hook["clientConfig"]["service"]
        assert (ref["name"], ref["namespace"], ref["port"]) == ("mizzen-controller", "mizzen-system", 443)
        assert "caBundle" not in hook["clientConfig"]  # filled in by the controller, never by apply
        assert hook["sideEffects"] == "None"
    # The validation webhook can never block the cluster: Ignore, and a short timeout.
    assert validating["webhooks"][0]["failurePolicy"] == "Ignore"
    assert validating["webhooks"][0]["timeoutSeconds"] <= 5
    # Injection: Istio's two selectors; kube-system and the mesh's namespace are never sent.
    for hook in mutating["webhooks"]:
        never = [
            e
            for e in hook["namespaceSelector"]["matchExpressions"]
            if e["key"] == "kubernetes.io/metadata.name"
        ]
        assert never and {"kube-system", "mizzen-system"} <= set(never[0]["values"])
    pdb = _by_kind(objects, "PodDisruptionBudget")
    selector = _by_kind(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector == service["spec"]["selector"]


def test_images_referenced_exist_in_images() -> None:
    objects = render(PROFILE_VALUES["default"])
    images = {
        c["image"]
        for o in objects
        if o["kind"] in ("Deployment", "DaemonSet")
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    images.add(yaml.safe_load(_by_kind(objects, "ConfigMap")["data"]["config.yaml"])["image"])
    for image in images:
        name = image.split("/")[-1].split(":")[0]
        assert (ROOT / "images" / name / "Dockerfile").exists(), f"{image}: no images/{name}/Dockerfile"


def test_deploy_folder_is_the_rendered_default() -> None:
    rendered = render(PROFILE_VALUES["default"])
    shipped = [d for d in yaml.safe_load_all((ROOT / "deploy/kubernetes/mizzen.yaml").read_text()) if d]
    assert shipped == rendered, "regenerate deploy/kubernetes/mizzen.yaml with `mizzen manifest generate`"
    cni = [d for d in yaml.safe_load_all((ROOT / "deploy/kubernetes/mizzen-cni.yaml").read_text()) if d]
    assert cni == [rendered[0], *cni_component(PROFILE_VALUES["default"])]
    assert to_yaml(rendered)  # and it prints


def test_injected_pods_are_valid_kubernetes() -> None:
    golden = ROOT / "tests" / "golden" / "inject"
    pods = [yaml.safe_load(p.read_text()).get("pod") for p in sorted(golden.glob("*.golden.yaml"))]
    pods = [p for p in pods if p]
    assert len(pods) >= 6
    for pod in pods:
        kubernetes_validate.validate(pod, KUBERNETES, strict=True)
