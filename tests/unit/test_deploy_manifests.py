"""The shipped manifests agree with the code they run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cni.agent import cli

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _docs(name: str) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_cni_daemonset_runs_the_agent_as_configured() -> None:
    docs = _docs("mizzen-cni.yaml")
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = cli.build_parser().parse_args(container["args"])  # exits (fails the test) on a bad flag
    assert "kube-system" in args.exclude_namespaces
    assert pod["hostPID"] is True and pod["hostNetwork"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {str(args.cni_bin_dir), str(args.cni_conf_dir)} <= mounts
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": args.health_port}
    assert any(e["name"] == "NODE_NAME" for e in container["env"])
    assert pod["containers"][0]["securityContext"]["privileged"] is True
    assert docs["DaemonSet"]["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"


def test_cni_rbac_covers_what_the_plugin_and_agent_call() -> None:
    docs = _docs("mizzen-cni.yaml")
    allowed = {
        (resource, verb)
        for rule in docs["ClusterRole"]["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # The plugin GETs the pod and its namespace; the agent lists pods and namespaces, and labels pods.
    assert {("pods", "get"), ("namespaces", "get"), ("pods", "list"), ("namespaces", "list")} <= allowed
    assert ("pods", "patch") in allowed
    assert {("nodes", "get"), ("nodes", "patch")} <= allowed  # the untaint
    binding = docs["ClusterRoleBinding"]
    sa = docs["ServiceAccount"]["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}]
    assert docs["DaemonSet"]["spec"]["template"]["spec"]["serviceAccountName"] == sa["name"]
