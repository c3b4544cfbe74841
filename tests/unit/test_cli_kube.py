"""The cluster half of the CLI, offline: manifest generate, kube-inject, analyze on broken configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mizzen import cli

GOLDEN = Path(__file__).resolve().parents[1] / "golden"

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec:
      containers:
        - name: web
          image: example/web:1
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /ready, port: http}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: shop}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        metadata: {annotations: {proxy.istio.io/config: "tracing: {}"}}
        spec:
          restartPolicy: Never
          containers: [{name: job, image: example/job:1}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: v1
kind: Pod
metadata: {name: out, namespace: shop, labels: {sidecar.istio.io/inject: "false"}}
spec: {containers: [{name: app, image: example/app:1}]}
"""


def test_manifest_generate_prints_every_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["manifest", "generate", "--profile", "minimal", "--set", "proxy.logLevel=debug"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    kinds = [d["kind"] for d in docs]
    assert "DaemonSet" not in kinds  # minimal: no CNI agent
    assert kinds[0] == "Namespace" and kinds[-1] == "ValidatingWebhookConfiguration"
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["config.yaml"]
    assert yaml.safe_load(config)["logLevel"] == "debug"


def test_manifest_generate_names_a_bad_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["manifest", "generate", "--set", "proxy.loglevel=debug"]) == 1
    assert "unknown key proxy.loglevel" in capsys.readouterr().err


def test_kube_inject_workloads_and_passes_the_rest_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "app.yaml"
    src.write_text(DEPLOYMENT)
    assert cli.main(["kube-inject", "-f", str(src), "--native-sidecar", "false"]) == 0
    captured = capsys.readouterr()
    deployment, cronjob, service, pod = yaml.safe_load_all(captured.out)
    template = deployment["spec"]["template"]
    assert [c["name"] for c in template["spec"]["containers"]] == ["istio-proxy", "web"]
    assert template["spec"]["containers"][1]["readinessProbe"]["httpGet"]["port"] == 15020
    assert "sidecar.istio.io/status" in template["metadata"]["annotations"]
    job_pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert [c["name"] for c in job_pod["containers"]] == ["istio-proxy", "job"]
    assert service == list(yaml.safe_load_all(DEPLOYMENT))[2]  # not a pod: untouched
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app"]  # opted out
    assert "Mizzen does not implement tracing" in captured.err
    # Injecting the output again changes nothing (idempotent).
    again = tmp_path / "again.yaml"
    again.write_text(captured.out)
    assert cli.main(["kube-inject", "-f", str(again), "--native-sidecar", "false"]) == 0
    assert capsys.readouterr().out == captured.out


def test_kube_inject_native_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "app.yaml"
    src.write_text(DEPLOYMENT)
    assert cli.main(["kube-inject", "-f", str(src)]) == 0
    deployment = next(yaml.safe_load_all(capsys.readouterr().out))
    init = deployment["spec"]["template"]["spec"]["initContainers"]
    assert init[0]["name"] == "istio-proxy" and init[0]["restartPolicy"] == "Always"


def test_analyze_finds_the_broken_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["analyze", str(GOLDEN / "analyze" / "broken.yaml"), "-o", "json"]) == 1
    findings = {
        (f["code"], f["object"], f["message"].split(":")[0]) for f in json.loads(capsys.readouterr().out)
    }
    assert ("IST0101", "VirtualService shop/reviews", "http[0].route[0].destination.subset") in findings
    assert ("IST0101", "VirtualService shop/reviews", "http[1].route[0].destination.host") in findings
    assert ("IST0101", "VirtualService shop/reviews", "gateways[1]") in findings
    assert ("IST0106", "DestinationRule shop/reviews", "trafficPolicy.loadBalancer.simple") in findings
    assert ("IST0118", "Service shop/reviews", "ports[1] (metrics)") in findings
    assert {f[1] for f in findings if f[0] == "IST0103"} == {"Pod shop/legacy"}
    named = {f[1] for f in findings}
    assert "Pod shop/opted-out" not in named
    ports = {f[2] for f in findings if f[0] == "IST0118"}
    assert ports == {"ports[1] (metrics)"}  # http, grpc-web and appProtocol ports are fine


def test_analyze_text_on_a_clean_mesh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "svc.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n"
        "spec: {ports: [{name: http, port: 80}]}\n"
    )
    assert cli.main(["analyze", str(tmp_path)]) == 0
    assert "No validation issues found" in capsys.readouterr().out
