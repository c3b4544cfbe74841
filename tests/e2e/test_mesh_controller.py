"""The control plane and the sidecars together, for real: mizzen-controller on a folder of manifests,
CNI-captured pods, a mizzen-proxy in each following the controller over Delta ADS, and Istio routing
(a VirtualService and its DestinationRule) changed live while traffic flows through ClusterIPs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.proxyproc import free_port
from support.sidecarboot import injected_bootstrap

from mizzen.local import LocalNode, NodeConfig, PodSpec

pytestmark = pytest.mark.root

BIN = Path(sys.executable).parent
UPSTREAM = str(Path(__file__).parent.parent / "support" / "upstream.py")
MESH = {"istio-injection": "enabled"}
INJECTED = {"sidecar.istio.io/status": '{"containers":["istio-proxy"]}'}


class Mesh:
    def __init__(self, node: LocalNode, work: Path, gateway: str, cluster_ip: str) -> None:
        self.node = node
        self.work = work
        self.manifests = work / "manifests"
        self.manifests.mkdir()
        self.gateway = gateway
        self.cluster_ip = cluster_ip
        self.xds_port = free_port()
        self.debug_port = free_port()
        self.ip: dict[str, str] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.procs: list[subprocess.Popen[bytes]] = []

    def pod(self, name: str, labels: dict[str, str]) -> None:
        record = self.node.add_pod(
            PodSpec(name=name, labels=labels, namespace_labels=MESH, annotations=INJECTED)
        )
        assert record.ip
        self.ip[name] = record.ip
        self.labels[name] = labels

    def write(self, name: str, docs: list[dict[str, Any]]) -> None:
        path = self.manifests / f"{name}.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump_all(docs))
        tmp.rename(path)  # whole files only: the source never sees half of one

    def cluster_state(self) -> None:
        """What a cluster would hold for these pods: namespace, Service, EndpointSlice, Pods."""
        pods = [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": n, "namespace": "default", "labels": self.labels[n]},
                "spec": {
                    "serviceAccountName": n.split("-")[0],
                    "containers": [{"name": "app", "ports": [{"containerPort": 9080, "name": "http"}]}],
                },
                "status": {"podIP": ip, "phase": "Running"},
            }
            for n, ip in self.ip.items()
        ]
        reviews = [n for n in self.ip if n.startswith("reviews")]
        self.write(
            "cluster",
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "labels": MESH}},
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "reviews", "namespace": "default"},
                    "spec": {
                        "clusterIP": self.cluster_ip,
                        "selector": {"app": "reviews"},
                        "ports": [{"name": "http", "port": 9080, "targetPort": 9080}],
                    },
                },
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": "reviews-1",
                        "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "reviews"},
                    },
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
                    "endpoints": [
                        {
                            "addresses": [self.ip[n]],
                            "conditions": {"ready": True},
                            "targetRef": {"kind": "Pod", "name": n, "namespace": "default"},
                        }
                        for n in reviews
                    ],
                },
                *pods,
            ],
        )

    def controller(self) -> None:
        log = open(self.work / "controller.log", "wb")  # closed with the process
        self.procs.append(
            subprocess.Popen(
                [
                    str(BIN / "mizzen-controller"),
                    "--files",
                    str(self.manifests),
                    "--xds-port",
                    str(self.xds_port),
                    "--debug-port",
                    str(self.debug_port),
                    "--poll-interval",
                    "0.2",
                    "--debounce-after",
                    "0.05",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        wait(lambda: _get(f"http://127.0.0.1:{self.debug_port}/ready")[0] == 200, "the controller", self.work)

    def sidecar(self, pod: str) -> None:
        ip = self.ip[pod]
        boot = injected_bootstrap(
            self.work,
            pod,
            ip,
            self.labels[pod],
            f"{self.gateway}:{self.xds_port}",
            account=pod.split("-")[0],
            workload=pod.rsplit("-", 1)[0],
        )
        path = self.work / f"{pod}.json"
        path.write_text(json.dumps(boot))
        path.chmod(0o644)
        log = open(self.work / f"{pod}.log", "wb")  # closed with the process
        self.procs.append(
            self.node.spawn(
                pod,
                [str(BIN / "mizzen-proxy"), "-c", str(path), "-l", "debug"],
                uid=1337,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        wait(lambda: _get(f"http://{ip}:15021/healthz/ready")[0] == 200, f"the sidecar in {pod}", self.work)

    def app(self, pod: str) -> None:
        proc = self.node.spawn(
            pod, [sys.executable, UPSTREAM, "9080", pod, "0.0.0.0"], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        self.procs.append(proc)

    def call(self, n: int = 1, headers: dict[str, str] | None = None) -> list[str]:
        """``n`` requests from the client pod to reviews' ClusterIP; the pods that answered."""
        code = (
            "import json, sys, urllib.request\n"
            "out = []\n"
            "for _ in range(int(sys.argv[2])):\n"
            "    req = urllib.request.Request(sys.argv[1], headers=json.loads(sys.argv[3]))\n"
            "    with urllib.request.urlopen(req, timeout=10) as r:\n"
            "        out.append(json.loads(r.read())['name'])\n"
            "print(json.dumps(out))\n"
        )
        proc = self.node.spawn(
            "client",
            [
                sys.executable,
                "-c",
                code,
                f"http://{self.cluster_ip}:9080/r",
                str(n),
                json.dumps(headers or {}),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        return json.loads(out)  # type: ignore[no-any-return]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def wait(cond: Any, what: str, work: Path, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(work.glob("*.log")))
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    tag = secrets.token_hex(3)
    third = secrets.randbelow(250) + 1
    work = Path(tempfile.mkdtemp(prefix="mzt-e2e-"))
    work.chmod(0o755)  # the sidecars (UID 1337) read their bootstraps here
    config = NodeConfig(
        state_dir=work / "state",
        bridge=f"mzt{tag}",
        subnet=f"10.251.{third}.0/24",
        netns_prefix=f"mzt{tag}-",
        capture=True,
        service_cidr=f"10.252.{third}.0/24",
    )
    node = LocalNode.open(config)
    m = Mesh(node, work, f"10.251.{third}.1", f"10.252.{third}.10")
    try:
        node.up()
        m.pod("client", {"app": "client", "version": "v1"})
        m.pod("reviews-v1", {"app": "reviews", "version": "v1"})
        m.pod("reviews-v2", {"app": "reviews", "version": "v2"})
        m.cluster_state()
        m.controller()
        for pod in ("reviews-v1", "reviews-v2"):
            m.app(pod)
        for pod in ("client", "reviews-v1", "reviews-v2"):
            m.sidecar(pod)
        yield m
    finally:
        for proc in reversed(m.procs):
            proc.terminate()
        for proc in m.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        node.down()
        shutil.rmtree(work, ignore_errors=True)


def test_service_traffic_spreads_over_both_versions(mesh: Mesh) -> None:
    seen = mesh.call(20)
    assert set(seen) == {"reviews-v1", "reviews-v2"}


def test_virtual_service_changes_apply_live(mesh: Mesh) -> None:
    dr = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "host": "reviews",
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}},
            ],
        },
    }

    def vs(http: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": http},
        }

    mesh.write("routing", [dr, vs([{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}])])
    wait(lambda: set(mesh.call(10)) == {"reviews-v2"}, "all traffic on v2", mesh.work)
    mesh.write(
        "routing",
        [
            dr,
            vs(
                [
                    {
                        "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                        "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
                    },
                    {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
                ]
            ),
        ],
    )
    wait(lambda: set(mesh.call(10)) == {"reviews-v1"}, "everyone else on v1", mesh.work)
    assert set(mesh.call(10, {"end-user": "jason"})) == {"reviews-v2"}
    os.remove(mesh.manifests / "routing.yaml")
    wait(lambda: set(mesh.call(20)) == {"reviews-v1", "reviews-v2"}, "both versions again", mesh.work)


def test_endpoint_removed_at_runtime(mesh: Mesh) -> None:
    del mesh.ip["reviews-v1"]
    mesh.cluster_state()  # the EndpointSlice now lists v2 only
    wait(lambda: set(mesh.call(10)) == {"reviews-v2"}, "v1 to leave the endpoints", mesh.work)
