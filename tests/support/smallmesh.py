"""A small mesh from YAML, for end-to-end tests of Istio's API through the real parts.

mizzen-controller runs on a folder of manifests; pods are network namespaces made through the CNI chain
(captured when in the mesh); each meshed pod runs mizzen-proxy as UID 1337 following the controller over
Delta ADS; apps are real servers. A test declares pods and services, starts the mesh once per module, then
applies Istio YAML and calls from a pod::

    with small_mesh() as mesh:
        mesh.pod("client")
        mesh.pod("web-v1", {"app": "web", "version": "v1"}, app=9080)
        mesh.service("web", {"app": "web"}, {"http": 9080})
        mesh.start()
        mesh.apply("routing", VIRTUAL_SERVICE_YAML)       # returns once every sidecar has it
        replies = mesh.http("client", "http://web:9080/", n=10)

Services get ClusterIPs from the node's service range, and every pod's /etc/hosts names them (the short
name, ``name.namespace`` and the FQDN), so clients call services by name as in a cluster.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from support.proxyproc import free_port
from support.sidecarboot import injected_bootstrap

from mizzen.local import LocalNode, NodeConfig, PodSpec, netns

BIN = Path(sys.executable).parent
SUPPORT = Path(__file__).parent
MESH_NS = {"istio-injection": "enabled"}
INJECTED = {"sidecar.istio.io/status": '{"containers":["istio-proxy"]}'}


def get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@dataclass
class Reply:
    """One HTTP response a pod got: status (0 when the request failed), headers, body."""

    status: int
    headers: list[tuple[str, str]]
    body: str
    ms: float = 0.0
    error: str = ""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def served_by(self) -> str:
        """The upstream app that answered (support/upstream.py names itself), or "" for a proxy reply."""
        try:
            return str(self.json.get("name", ""))
        except ValueError:
            return ""


@dataclass
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    meshed: bool
    app_ports: tuple[int, ...]
    tcp_ports: tuple[int, ...]
    tls_ports: tuple[int, ...]
    silent_ports: tuple[int, ...]
    locality: str
    ip: str = ""


@dataclass
class Service:
    name: str
    namespace: str
    selector: dict[str, str] | None
    ports: dict[str, int]  # name -> port (target port the same)
    ip: str
    extra: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)


class SmallMesh:
    def __init__(self, node: LocalNode, work: Path, gateway: str, service_prefix: str) -> None:
        self.node = node
        self.work = work
        self.manifests = work / "manifests"
        self.manifests.mkdir()
        self.bridge_ip = gateway
        self.service_prefix = service_prefix
        self.xds_port = free_port()
        self.debug_port = free_port()
        self.pods: dict[str, Pod] = {}
        self.services: dict[str, Service] = {}
        self.extra_hosts: dict[str, str] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sidecars: dict[str, subprocess.Popen[bytes]] = {}
        self.gateways: dict[str, int] = {}  # gateway pods (outside the mesh) -> worker processes
        self.cert: tuple[Path, Path] | None = None

    # -- declaring ---------------------------------------------------------------------------------------

    def pod(
        self,
        name: str,
        labels: Mapping[str, str] | None = None,
        *,
        namespace: str = "default",
        meshed: bool = True,
        app: int | tuple[int, ...] = (),
        tcp: int | tuple[int, ...] = (),
        tls: int | tuple[int, ...] = (),
        silent: int | tuple[int, ...] = (),
        locality: str = "",
    ) -> None:
        """A pod; ``app`` ports run the HTTP test app (support/upstream.py), ``tcp``/``tls`` ports the echo
        server, ``silent`` ports a server that never answers; ``meshed`` pods are captured and get a
        sidecar; ``locality`` is "region/zone/subzone"."""
        as_tuple = lambda v: (v,) if isinstance(v, int) else tuple(v)  # noqa: E731
        self.pods[name] = Pod(
            name,
            namespace,
            dict(labels or {"app": name}),
            meshed,
            as_tuple(app),
            as_tuple(tcp),
            as_tuple(tls),
            as_tuple(silent),
            locality,
        )

    def service(
        self,
        name: str,
        selector: Mapping[str, str] | None,
        ports: Mapping[str, int],
        *,
        namespace: str = "default",
        headless: bool = False,
        targets: Mapping[str, int] | None = None,
        **spec: Any,
    ) -> str:
        """A Kubernetes Service (ports by name; the name's prefix gives the protocol, as Istio reads it;
        ``targets`` the target ports that differ from the port); returns its ClusterIP ("" if headless)."""
        ip = "" if headless else f"{self.service_prefix}{len(self.services) + 10}"
        self.services[name] = Service(
            name, namespace, dict(selector) if selector else None, dict(ports), ip, spec, dict(targets or {})
        )
        return ip

    def host(self, name: str, ip: str = "", *, pod: str = "") -> None:
        """An /etc/hosts entry for every pod: ``name`` for ``ip``, or for the address ``pod`` will get."""
        self.extra_hosts[name] = ip or f"pod:{pod}"

    def unused_ip(self) -> str:
        """An address in the service range that no service has: routable, captured, answered by nobody."""
        return f"{self.service_prefix}250"

    def ip(self, pod: str) -> str:
        return self.pods[pod].ip

    # -- running -----------------------------------------------------------------------------------------

    def start(self) -> None:
        for pod in self.pods.values():
            record = self.node.add_pod(
                PodSpec(
                    name=pod.name,
                    namespace=pod.namespace,
                    labels=pod.labels,
                    namespace_labels=MESH_NS if pod.meshed else {},
                    annotations=INJECTED if pod.meshed else {"sidecar.istio.io/inject": "false"},
                )
            )
            assert record.ip
            pod.ip = record.ip
        self._hosts_files()
        self.write("cluster", self._cluster_state())
        self._controller()
        for pod in self.pods.values():
            for port in pod.app_ports:
                self._run(pod, [sys.executable, str(SUPPORT / "upstream.py"), str(port), pod.name, "0.0.0.0"])
            for port in pod.tcp_ports:
                self._run(pod, [sys.executable, str(SUPPORT / "echoserver.py"), str(port), pod.name])
            for port in pod.silent_ports:
                self._run(pod, [sys.executable, str(SUPPORT / "echoserver.py"), str(port), "-"])
            for port in pod.tls_ports:
                cert, key = self._certificate()
                self._run(
                    pod,
                    [
                        sys.executable,
                        str(SUPPORT / "echoserver.py"),
                        str(port),
                        pod.name,
                        str(cert),
                        str(key),
                    ],
                )
        for pod in self.pods.values():
            if pod.meshed:
                self._sidecar(pod)
        for name, workers in self.gateways.items():
            self._proxy(self.pods[name], "router", ["--concurrency", str(workers)])

    def gateway(
        self, name: str, labels: Mapping[str, str], *, workers: int = 1, namespace: str = "default"
    ) -> None:
        """A gateway pod: outside the mesh (no capture), running mizzen-proxy as a ``router`` node that
        serves the Gateways selecting its labels, with ``workers`` processes sharing its ports."""
        self.pod(name, labels, namespace=namespace, meshed=False)
        self.gateways[name] = workers

    def _run(self, pod: Pod, argv: list[str]) -> None:
        proc = self.node.spawn(pod.name, argv, namespace=pod.namespace, stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready", argv
        self.procs.append(proc)

    def _certificate(self) -> tuple[Path, Path]:
        if self.cert is None:
            import datetime

            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.x509.oid import NameOID

            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smallmesh test server")])
            now = datetime.datetime.now(datetime.UTC)
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .sign(key, hashes.SHA256())
            )
            cert_path, key_path = self.work / "server.crt", self.work / "server.key"
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            key_path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            self.cert = (cert_path, key_path)
        return self.cert

    def _hosts_files(self) -> None:
        for pod in self.pods.values():
            lines = ["127.0.0.1\tlocalhost", f"{pod.ip}\t{pod.name}"]
            for svc in self.services.values():
                if svc.ip:
                    names = [f"{svc.name}.{svc.namespace}", f"{svc.name}.{svc.namespace}.svc.cluster.local"]
                    if svc.namespace == pod.namespace:
                        names.insert(0, svc.name)
                    lines.append(f"{svc.ip}\t{' '.join(names)}")
            for name, ip in self.extra_hosts.items():
                if ip.startswith("pod:"):
                    ip = self.pods[ip[4:]].ip
                lines.append(f"{ip}\t{name}")
            netns.write_etc_file(
                self.node.netns_name(pod.name, pod.namespace), "hosts", "\n".join(lines) + "\n"
            )

    def _cluster_state(self) -> list[dict[str, Any]]:
        namespaces = sorted(
            {p.namespace for p in self.pods.values()} | {s.namespace for s in self.services.values()}
        )
        docs: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": MESH_NS}}
            for ns in namespaces
        ]
        for svc in self.services.values():
            spec: dict[str, Any] = {
                "ports": [
                    {"name": n, "port": p, "targetPort": svc.targets.get(n, p)} for n, p in svc.ports.items()
                ],
                **svc.extra,
            }
            if svc.selector is not None:
                spec["selector"] = svc.selector
            spec["clusterIP"] = svc.ip or "None"
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": svc.name, "namespace": svc.namespace},
                    "spec": spec,
                }
            )
            if svc.selector is None:
                continue
            members = [
                p
                for p in self.pods.values()
                if p.namespace == svc.namespace and all(p.labels.get(k) == v for k, v in svc.selector.items())
            ]
            endpoints = []
            for p in members:
                ep: dict[str, Any] = {
                    "addresses": [p.ip],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "name": p.name, "namespace": p.namespace},
                }
                if p.locality:
                    ep["zone"] = p.locality.split("/")[1] if "/" in p.locality else p.locality
                endpoints.append(ep)
            docs.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{svc.name}-1",
                        "namespace": svc.namespace,
                        "labels": {"kubernetes.io/service-name": svc.name},
                    },
                    "addressType": "IPv4",
                    "ports": [
                        {"name": n, "port": svc.targets.get(n, p), "protocol": "TCP"}
                        for n, p in svc.ports.items()
                    ],
                    "endpoints": endpoints,
                }
            )
        for p in self.pods.values():
            ports = [
                {"containerPort": port, "name": f"p{port}"}
                for port in (*p.app_ports, *p.tcp_ports, *p.tls_ports, *p.silent_ports)
            ]
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": p.name,
                        "namespace": p.namespace,
                        "labels": p.labels,
                        "annotations": INJECTED if p.meshed else {},
                    },
                    "spec": {"serviceAccountName": p.name, "containers": [{"name": "app", "ports": ports}]},
                    "status": {"podIP": p.ip, "phase": "Running"},
                }
            )
        return docs

    def _controller(self) -> None:
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
                    "--no-ca",
                    "--poll-interval",
                    "0.1",
                    "--debounce-after",
                    "0.02",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        self.wait(lambda: get(f"http://127.0.0.1:{self.debug_port}/ready")[0] == 200, "the controller")

    def bootstrap(self, pod: Pod, node_type: str = "sidecar") -> dict[str, Any]:
        """The bootstrap the injected sidecar builds for itself: who the proxy is, where xDS is; and the
        pod's locality, which the controller would otherwise take from its node."""
        boot = injected_bootstrap(
            self.work,
            pod.name,
            pod.ip,
            pod.labels,
            f"{self.bridge_ip}:{self.xds_port}",
            namespace=pod.namespace,
            account=pod.name,
            proxy_type=node_type,
        )
        if pod.locality:
            region, zone, sub_zone = ([*pod.locality.split("/", 2), "", ""])[:3]
            boot["node"]["locality"] = {
                k: v for k, v in (("region", region), ("zone", zone), ("sub_zone", sub_zone)) if v
            }
        return boot

    def _sidecar(self, pod: Pod) -> None:
        self.sidecars[pod.name] = self._proxy(pod, "sidecar")

    def _proxy(self, pod: Pod, node_type: str, args: list[str] | None = None) -> subprocess.Popen[bytes]:
        path = self.work / f"{pod.name}.json"
        path.write_text(json.dumps(self.bootstrap(pod, node_type)))
        path.chmod(0o644)
        log = open(self.work / f"{pod.name}.log", "wb")  # closed with the process
        proc = self.node.spawn(
            pod.name,
            [str(BIN / "mizzen-proxy"), "-c", str(path), "-l", "debug", *(args or [])],
            namespace=pod.namespace,
            uid=1337,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        self.wait(
            lambda: get(f"http://{pod.ip}:15021/healthz/ready")[0] == 200, f"the {node_type} in {pod.name}"
        )
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- config ------------------------------------------------------------------------------------------

    def write(self, name: str, docs: list[dict[str, Any]]) -> None:
        path = self.manifests / f"{name}.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump_all(docs))
        tmp.rename(path)  # whole files only: the source never sees half of one

    def apply(self, name: str, text: str) -> None:
        """Put ``text`` (Istio YAML, several documents allowed) in the manifests as ``name``; return once
        the controller took it and every sidecar acknowledged what it pushed (invalid objects raise)."""
        docs = [d for d in yaml.safe_load_all(text) if d]
        for d in docs:
            d.setdefault("metadata", {}).setdefault("namespace", "default")
        path = self.manifests / f"{name}.yaml"
        old = [d for d in yaml.safe_load_all(path.read_text()) if d] if path.exists() else []
        gone = {_key(d) for d in old} - {_key(d) for d in docs}
        previous = {_key(d): d for d in old}
        changed = {_key(d) for d in docs if previous.get(_key(d)) != d}
        before = self._debug("/debug/configz")["version"]
        self.write(name, docs)
        self._settle({_key(d) for d in docs}, gone, before, changed)

    def remove(self, name: str) -> None:
        path = self.manifests / f"{name}.yaml"
        gone = {_key(d) for d in yaml.safe_load_all(path.read_text()) if d}
        before = self._debug("/debug/configz")["version"]
        path.unlink()
        self._settle(set(), gone, before, set())

    def _debug(self, path: str) -> Any:
        status, body = get(f"http://127.0.0.1:{self.debug_port}{path}")
        assert status == 200, (path, status, body)
        return json.loads(body)

    def _settle(self, present: set[str], gone: set[str], before: int, changed: set[str]) -> None:
        """Wait until the controller holds the objects (the ``changed`` ones changed after ``before``) and
        none of the gone ones, has pushed that state, and every sidecar acknowledged it."""
        refused: list[str] = []

        def taken() -> bool:
            refused[:] = [
                f"{i['object']}: {i['errors']}"
                for i in self._debug("/debug/invalid")
                if i["object"] in present
            ]
            if refused:
                return True
            state = self._debug("/debug/configz")
            objects = state["objects"]
            if any(k not in objects for k in present) or any(objects[k] <= before for k in changed & present):
                return False
            if any(k in objects for k in gone):
                return False
            return bool(state["pushed"] >= state["version"])

        self.wait(taken, f"the controller to take {sorted(present)} (and drop {sorted(gone)})")
        assert not refused, f"the controller refused: {refused}"
        self.wait(self.synced, "every sidecar to acknowledge")

    def synced(self) -> bool:
        status = self._debug("/debug/syncz")
        for proxy in status:
            for t in proxy["types"].values():
                assert t["status"] != "NACKED", f"{proxy['proxy']} rejected config: {t['error']}"
                if t["status"] != "SYNCED":
                    return False
        return len(status) >= len(self.sidecars) + len(self.gateways)

    def wait(self, cond: Any, what: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            time.sleep(0.05)
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.work.glob("*.log")))
        raise AssertionError(f"timed out waiting for {what}\n{logs}")

    # -- traffic -----------------------------------------------------------------------------------------

    def _client(self, pod: str, spec: dict[str, Any], uid: int = 0) -> Any:
        p = self.pods[pod]
        proc = self.node.spawn(
            pod,
            [sys.executable, str(SUPPORT / "meshclient.py"), json.dumps(spec)],
            namespace=p.namespace,
            uid=uid,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        return json.loads(out)

    def http(
        self,
        pod: str,
        url: str,
        *,
        n: int = 1,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: str | None = None,
        fresh: bool = False,
    ) -> list[Reply]:
        """``n`` requests from ``pod`` (one keep-alive connection unless ``fresh``)."""
        spec = {
            "url": url,
            "n": n,
            "method": method,
            "headers": dict(headers or {}),
            "body": body,
            "fresh": fresh,
        }
        return [
            Reply(
                r["status"],
                [(k, v) for k, v in r["headers"]],
                r["body"],
                r.get("ms", 0.0),
                r.get("error", ""),
            )
            for r in self._client(pod, spec)
        ]

    def stream(
        self,
        pod: str,
        host: str,
        port: int,
        *,
        n: int = 1,
        sni: str | None = None,
        send: str = "hello",
        client_cert: tuple[Path, Path] | None = None,
    ) -> list[str]:
        """``n`` TCP connections (TLS with ``sni`` when given, presenting ``client_cert``: chain and key
        files) sending ``send``; what came back on each."""
        spec: dict[str, Any] = {
            "kind": "tls" if sni else "tcp",
            "host": host,
            "port": port,
            "n": n,
            "sni": sni,
            "send": send,
        }
        if client_cert is not None:
            spec["cert"], spec["key"] = map(str, client_cert)
        return [r["data"] if r["ok"] else f"error: {r['error']}" for r in self._client(pod, spec)]

    def controller_dump(self, pod: str) -> Any:
        """What the controller sent a pod's proxy (its /debug/config_dump)."""
        return self._debug(f"/debug/config_dump?proxy={pod}")

    def admin(self, pod: str, path: str) -> str:
        """A page of the pod's sidecar admin interface (127.0.0.1:15000, reachable only in the pod)."""
        return self.http(pod, f"http://127.0.0.1:15000{path}")[0].body

    def proxy_stats(self, pod: str) -> str:
        return get(f"http://{self.ip(pod)}:15020/stats/prometheus")[1]


def _key(doc: Mapping[str, Any]) -> str:
    meta = doc["metadata"]
    return f"{doc['kind']} {meta.get('namespace', 'default')}/{meta['name']}"


@contextlib.contextmanager
def small_mesh() -> Iterator[SmallMesh]:
    """A local node with its own bridge and address ranges (tests in parallel do not collide), torn down
    with everything in it."""
    tag = secrets.token_hex(3)
    third = secrets.randbelow(250) + 1
    work = Path(tempfile.mkdtemp(prefix="mzt-mesh-"))
    work.chmod(0o755)  # the sidecars (UID 1337) read their bootstraps here
    config = NodeConfig(
        state_dir=work / "state",
        bridge=f"mzm{tag}",
        subnet=f"10.253.{third}.0/24",
        netns_prefix=f"mzm{tag}-",
        capture=True,
        service_cidr=f"10.254.{third}.0/24",
    )
    node = LocalNode.open(config)
    mesh = SmallMesh(node, work, f"10.253.{third}.1", f"10.254.{third}.")
    try:
        node.up()
        yield mesh
    finally:
        mesh.stop()
        node.down()
        shutil.rmtree(work, ignore_errors=True)
