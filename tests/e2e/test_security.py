"""Zero-config mutual TLS and authorization through the real mesh: mizzen-controller (with its CA) on a folder
of manifests, CNI-captured pods, a mizzen-proxy in each that gets its certificate from the controller with
its pod's token, and Istio's PeerAuthentication / AuthorizationPolicy YAML changed live.

The bytes between the pods are captured on the node's bridge (AF_PACKET): mesh traffic must be TLS records
only; the server's sidecar must see the client's SPIFFE ID.
"""

from __future__ import annotations

import json
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
from support.prom import value
from support.proxyproc import free_port
from support.sidecarboot import injected_bootstrap
from support.wire import Capture, streams, tls_records

from controller.ca.authority import CaMaterial, CertificateAuthority, cert_pem, key_pem, make_csr, new_key
from controller.ca.tokens import LocalTokens, write_token
from mizzen.local import LocalNode, NodeConfig, PodSpec

pytestmark = pytest.mark.root

BIN = Path(sys.executable).parent
UPSTREAM = str(Path(__file__).parent.parent / "support" / "upstream.py")
MESH = {"istio-injection": "enabled"}
INJECTED = {"sidecar.istio.io/status": '{"containers":["istio-proxy"]}'}
SIDECAR_LABELS = {"security.istio.io/tlsMode": "istio"}  # what the injector adds
CERT_TTL = 8  # seconds: rotation every ~4 s while the tests run
PORT = 9080


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


# Runs in a pod: prints one JSON line per request: [status, body or error].
CALLER = """
import json, sys, urllib.request, urllib.error
url, n, headers = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
out = []
for _ in range(n):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            out.append([r.status, r.read().decode()])
    except urllib.error.HTTPError as e:
        out.append([e.code, e.read().decode()])
    except Exception as e:
        out.append([0, repr(e)])
print(json.dumps(out))
"""


class Mesh:
    def __init__(self, node: LocalNode, work: Path, gateway: str, bridge: str, cluster_ip: str) -> None:
        self.node = node
        self.work = work
        self.manifests = work / "manifests"
        self.manifests.mkdir()
        self.ca_dir = work / "ca"
        self.gateway = gateway
        self.bridge = bridge
        self.cluster_ip = cluster_ip
        self.xds_port = free_port()
        self.secure_port = free_port()
        self.debug_port = free_port()
        self.ip: dict[str, str] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.controller_proc: subprocess.Popen[bytes] | None = None
        self.tokens = LocalTokens.load_or_create(self.ca_dir)  # the node's token signer, shared with the CA

    def pod(self, name: str, labels: dict[str, str], account: str, *, meshed: bool = True) -> None:
        spec = PodSpec(
            name=name,
            labels={**labels, **(SIDECAR_LABELS if meshed else {})},
            namespace_labels=MESH,
            annotations=INJECTED if meshed else {"sidecar.istio.io/inject": "false"},
        )
        record = self.node.add_pod(spec)
        assert record.ip
        self.ip[name] = record.ip
        self.pods[name] = {"labels": dict(spec.labels), "account": account, "meshed": meshed}

    def write(self, name: str, docs: list[dict[str, Any]]) -> None:
        path = self.manifests / f"{name}.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump_all(docs))
        tmp.rename(path)

    def remove(self, name: str) -> None:
        (self.manifests / f"{name}.yaml").unlink(missing_ok=True)

    def cluster_state(self) -> None:
        pods = [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": n, "namespace": "default", "labels": p["labels"]},
                "spec": {
                    "serviceAccountName": p["account"],
                    "containers": [{"name": "app", "ports": [{"containerPort": PORT, "name": "http"}]}],
                },
                "status": {"podIP": self.ip[n], "phase": "Running"},
            }
            for n, p in self.pods.items()
        ]
        self.write(
            "cluster",
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "labels": MESH}},
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "server", "namespace": "default"},
                    "spec": {
                        "clusterIP": self.cluster_ip,
                        "selector": {"app": "server"},
                        "ports": [{"name": "http", "port": PORT, "targetPort": PORT}],
                    },
                },
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": "server-1",
                        "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "server"},
                    },
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}],
                    "endpoints": [
                        {
                            "addresses": [self.ip["server"]],
                            "conditions": {"ready": True},
                            "targetRef": {"kind": "Pod", "name": "server", "namespace": "default"},
                        }
                    ],
                },
                *pods,
            ],
        )

    def controller(self) -> None:
        log = open(self.work / "controller.log", "ab")  # closed with the process
        self.controller_proc = subprocess.Popen(
            [
                str(BIN / "mizzen-controller"),
                "--files",
                str(self.manifests),
                "--ca-dir",
                str(self.ca_dir),
                "--xds-port",
                str(self.xds_port),
                "--secure-port",
                str(self.secure_port),
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
        wait(lambda: _get(f"http://127.0.0.1:{self.debug_port}/ready")[0] == 200, "the controller", self.work)

    def sidecar(self, pod: str) -> None:
        ip = self.ip[pod]
        meta = self.pods[pod]
        token = self.work / "tokens" / pod
        token.parent.mkdir(exist_ok=True)
        token.parent.chmod(0o755)
        write_token(token, self.tokens.issue("default", meta["account"], pod=pod), uid=1337)
        boot = injected_bootstrap(
            self.work, pod, ip, meta["labels"], f"{self.gateway}:{self.xds_port}", account=meta["account"]
        )
        path = self.work / f"{pod}.json"
        path.write_text(json.dumps(boot))
        path.chmod(0o644)
        log = open(self.work / f"{pod}.log", "wb")  # closed with the process
        self.procs.append(
            self.node.spawn(
                pod,
                [
                    str(BIN / "mizzen-proxy"),
                    "-c",
                    str(path),
                    "-l",
                    "debug",
                    "--token-path",
                    str(token),
                    "--ca-address",
                    f"{self.gateway}:{self.secure_port}",
                    "--ca-root-cert",
                    str(self.ca_dir / "root-cert.pem"),
                    "--cert-ttl",
                    str(CERT_TTL),
                ],
                uid=1337,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        wait(lambda: _get(f"http://{ip}:15021/healthz/ready")[0] == 200, f"the sidecar in {pod}", self.work)

    def app(self, pod: str) -> None:
        proc = self.node.spawn(
            pod, [sys.executable, UPSTREAM, str(PORT), pod, "0.0.0.0"], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        self.procs.append(proc)

    def call(
        self, pod: str, path: str = "/", n: int = 1, headers: dict[str, str] | None = None, target: str = ""
    ) -> list[tuple[int, str]]:
        """``n`` requests from ``pod`` to the server (its ClusterIP, or ``target``); (status, body) each."""
        url = f"http://{target or self.cluster_ip}:{PORT}{path}"
        proc = self.node.spawn(
            pod,
            [sys.executable, "-c", CALLER, url, str(n), json.dumps(headers or {})],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        return [(s, b) for s, b in json.loads(out)]

    def codes(self, pod: str, path: str = "/", n: int = 3, **kw: Any) -> set[int]:
        return {s for s, _ in self.call(pod, path, n, **kw)}

    def metrics(self, pod: str) -> str:
        return _get(f"http://{self.ip[pod]}:15020/stats/prometheus")[1]


def wait(cond: Any, what: str, work: Path, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.2)

    def notable(text: str) -> str:
        keep = [
            ln
            for ln in text.splitlines()
            if any(w in ln.lower() for w in ("nack", "error", "reject", "fail"))
        ]
        return "\n".join(keep[-15:])

    logs = "\n".join(f"--- {p.name}\n{notable(p.read_text())}" for p in sorted(work.glob("*.log")))
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    import secrets

    tag = secrets.token_hex(3)
    third = secrets.randbelow(250) + 1
    work = Path(tempfile.mkdtemp(prefix="mzt-sec-"))
    work.chmod(0o755)  # the sidecars (UID 1337) read their bootstraps and the root here
    config = NodeConfig(
        state_dir=work / "state",
        bridge=f"mzs{tag}",
        subnet=f"10.249.{third}.0/24",
        netns_prefix=f"mzs{tag}-",
        capture=True,
        service_cidr=f"10.250.{third}.0/24",
    )
    node = LocalNode.open(config)
    m = Mesh(node, work, f"10.249.{third}.1", config.bridge, f"10.250.{third}.10")
    try:
        node.up()
        m.pod("client", {"app": "client"}, "client")
        m.pod("other", {"app": "other"}, "other")
        m.pod("server", {"app": "server"}, "server")
        m.pod("outsider", {"app": "outsider"}, "outsider", meshed=False)
        m.cluster_state()
        m.controller()
        (m.ca_dir / "root-cert.pem").chmod(0o644)
        m.ca_dir.chmod(0o755)
        m.app("server")
        for pod in ("client", "other", "server"):
            m.sidecar(pod)
        yield m
    finally:
        for proc in [*reversed(m.procs), *([m.controller_proc] if m.controller_proc else [])]:
            proc.terminate()
        for proc in [*m.procs, *([m.controller_proc] if m.controller_proc else [])]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        node.down()
        shutil.rmtree(work, ignore_errors=True)


def test_sidecars_talk_mutual_tls_by_default_on_the_wire(mesh: Mesh) -> None:
    with Capture(mesh.bridge) as cap:
        replies = mesh.call("client", "/hello", 5)
        time.sleep(0.3)
        segments = cap.stop()
    assert [s for s, _ in replies] == [200] * 5
    flows = streams(segments, mesh.ip["client"], mesh.ip["server"], PORT)
    assert flows, f"no traffic between the pods was captured ({len(segments)} segments)"
    for key, data in flows.items():
        types = tls_records(data)  # raises if any byte between the pods is not a TLS record
        assert 23 in types, f"{key}: no application data records"
        assert b"GET /hello" not in data and b"HTTP/1.1" not in data
    # The server's sidecar knows who called, and tells the application as Istio does.
    xfcc = json.loads(replies[0][1])["headers"]["x-forwarded-client-cert"]
    assert xfcc.startswith("By=spiffe://cluster.local/ns/default/sa/server;Hash="), xfcc
    assert xfcc.endswith(';Subject="";URI=spiffe://cluster.local/ns/default/sa/client'), xfcc
    # A plain-text caller cannot claim an identity: the header it sends does not reach the application.
    forged = mesh.call(
        "outsider", "/", 1, {"x-forwarded-client-cert": "URI=spiffe://x/ns/a/sa/admin"}, mesh.ip["server"]
    )
    assert forged[0][0] == 200 and "x-forwarded-client-cert" not in json.loads(forged[0][1])["headers"]
    # Nor can a meshed one: its own sidecar drops the header (Envoy's default, SANITIZE), so the server
    # sees only what its sidecar says about the caller's certificate.
    claimed = mesh.call("client", "/", 1, {"x-forwarded-client-cert": "URI=spiffe://x/ns/a/sa/admin"})
    assert claimed[0][0] == 200
    assert json.loads(claimed[0][1])["headers"]["x-forwarded-client-cert"] == xfcc
    text = mesh.metrics("server")
    assert 'source_principal="spiffe://cluster.local/ns/default/sa/client"' in text, text
    assert 'connection_security_policy="mutual_tls"' in text, text


def test_plain_text_client_permissive_then_refused_by_strict(mesh: Mesh) -> None:
    direct = mesh.ip["server"]
    assert mesh.codes("outsider", target=direct) == {200}  # PERMISSIVE: no sidecar, still served
    strict = {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "default"},
        "spec": {"mtls": {"mode": "STRICT"}},
    }
    mesh.write("peer-auth", [strict])
    try:
        wait(
            lambda: mesh.codes("outsider", target=direct, n=1) == {0},
            "STRICT to refuse plain text",
            mesh.work,
        )
        assert mesh.codes("client") == {200}  # mesh traffic is mutual TLS: unaffected
        # Port-level DISABLE for the app port on the server workload lets plain text in there again.
        port_level = {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": {"name": "server", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "server"}},
                "mtls": {"mode": "STRICT"},
                "portLevelMtls": {str(PORT): {"mode": "PERMISSIVE"}},
            },
        }
        mesh.write("peer-auth", [strict, port_level])
        wait(lambda: mesh.codes("outsider", target=direct, n=1) == {200}, "port-level PERMISSIVE", mesh.work)
    finally:
        mesh.remove("peer-auth")
    wait(lambda: mesh.codes("outsider", target=direct, n=1) == {200}, "PERMISSIVE again", mesh.work)


def _tls_hello(mesh: Mesh, cert: bytes, key: bytes) -> str:
    """From the outsider pod: a TLS handshake with the server's sidecar presenting ``cert``; 'ok' or why
    not."""
    files = mesh.work / "client-cert"
    files.mkdir(exist_ok=True)
    (files / "c.pem").write_bytes(cert + key)
    code = (
        "import socket, ssl, sys\n"
        "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False\n"
        "ctx.verify_mode = ssl.CERT_NONE; ctx.load_cert_chain(sys.argv[3])\n"
        "ctx.set_alpn_protocols(['istio'])\n"
        "try:\n"
        "    s = ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5))\n"
        "    s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n"
        "    print('ok' if s.recv(12).startswith(b'HTTP/1.1') else 'no answer')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__)\n"
    )
    proc = mesh.node.spawn(
        "outsider",
        [sys.executable, "-c", code, mesh.ip["server"], str(PORT), str(files / "c.pem")],
        stdout=subprocess.PIPE,
    )
    out, _ = proc.communicate(timeout=30)
    return out.decode().strip()


def test_a_certificate_from_another_root_is_refused(mesh: Mesh) -> None:
    ident = "spiffe://cluster.local/ns/default/sa/client"
    key = new_key()
    ours = CertificateAuthority(CaMaterial.load_dir(mesh.ca_dir))
    good = "".join(ours.sign(make_csr(key, ident), ident, ttl=300)[:-1]).encode()
    assert _tls_hello(mesh, good, key_pem(key)) == "ok"  # the control: our root's certificate is served
    foreign = CertificateAuthority(CaMaterial.self_signed())
    bad = "".join(foreign.sign(make_csr(key, ident), ident, ttl=300)[:-1]).encode()
    assert _tls_hello(mesh, bad, key_pem(key)) != "ok"
    assert cert_pem  # same SPIFFE ID, other root: refused


def policy(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def test_authorization_policy_matrix(mesh: Mesh) -> None:
    def apply(*docs: dict[str, Any]) -> None:
        mesh.write("authz", list(docs))

    def expect(what: str, cases: list[tuple[str, str, dict[str, str], int]]) -> None:
        def ok() -> bool:
            return all(mesh.codes(pod, path, n=1, headers=h) == {code} for pod, path, h, code in cases)

        wait(ok, what, mesh.work)

    server = {"matchLabels": {"app": "server"}}
    try:
        # Allow by principal (workload scope): only the client's identity.
        apply(
            policy(
                "allow-client",
                {
                    "selector": server,
                    "action": "ALLOW",
                    "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/client"]}}]}],
                },
            )
        )
        expect("allow by principal", [("client", "/", {}, 200), ("other", "/", {}, 403)])
        body = mesh.call("other", "/")[0][1]
        assert body == "RBAC: access denied"
        # Deny by path, namespace scope (no selector), next to the allow: DENY is evaluated first.
        apply(
            policy(
                "allow-client",
                {
                    "selector": server,
                    "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/client"]}}]}],
                },
            ),
            policy(
                "deny-admin", {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}
            ),
        )
        expect(
            "deny by path",
            [("client", "/admin/x", {}, 403), ("client", "/ok", {}, 200), ("other", "/ok", {}, 403)],
        )
        # not* fields: deny everyone but the client, and methods other than GET.
        apply(
            policy(
                "deny-not-client",
                {
                    "selector": server,
                    "action": "DENY",
                    "rules": [
                        {"from": [{"source": {"notPrincipals": ["cluster.local/ns/default/sa/client"]}}]}
                    ],
                },
            )
        )
        expect("notPrincipals", [("client", "/", {}, 200), ("other", "/", {}, 403)])
        # when on request headers, and namespaces.
        apply(
            policy(
                "allow-alice",
                {
                    "selector": server,
                    "rules": [
                        {
                            "from": [{"source": {"namespaces": ["default"]}}],
                            "when": [{"key": "request.headers[x-user]", "values": ["alice", "bob*"]}],
                        }
                    ],
                },
            )
        )
        expect(
            "when headers",
            [
                ("other", "/", {"x-user": "alice"}, 200),
                ("other", "/", {"x-user": "bobby"}, 200),
                ("other", "/", {"x-user": "mallory"}, 403),
                ("client", "/", {}, 403),
            ],
        )
        # A policy for another workload has no effect on the server; an ALLOW policy with no rules
        # that does select it denies everything.
        apply(policy("elsewhere", {"selector": {"matchLabels": {"app": "nothing"}}}))
        expect("other workload's policy", [("other", "/", {}, 200)])
        apply(policy("deny-all", {"selector": server}))
        expect("allow-nothing", [("client", "/", {}, 403), ("other", "/", {}, 403)])
        text = mesh.metrics("server")
        assert 'response_code="403"' in text
    finally:
        mesh.remove("authz")
    expect("no policies", [("client", "/", {}, 200), ("other", "/", {}, 200)])


def test_rotation_under_load_drops_nothing(mesh: Mesh) -> None:
    before = (mesh.work / "server.log").read_text().count("certificate installed")
    started = time.monotonic()
    failures: list[Any] = []
    total = 0
    while time.monotonic() - started < 2.5 * CERT_TTL:
        replies = mesh.call("client", "/", 20)
        total += len(replies)
        failures += [r for r in replies if r[0] != 200]
    after = (mesh.work / "server.log").read_text().count("certificate installed")
    assert after - before >= 3, "the server's certificate did not rotate"
    assert total >= 100 and failures == [], failures[:5]
    # The controller counts what its CA did on its metrics port (istiod's citadel_server_* counters).
    text = _get(f"http://127.0.0.1:{mesh.debug_port}/metrics")[1]
    asked, issued = (
        value(text, "citadel_server_csr_count"),
        value(text, "citadel_server_success_cert_issuance_count"),
    )
    assert issued >= after and asked >= issued, text


def test_ca_away_traffic_flows_until_certificates_expire(mesh: Mesh) -> None:
    assert mesh.controller_proc is not None
    mesh.controller_proc.terminate()
    mesh.controller_proc.wait(timeout=10)
    try:
        stopped = time.monotonic()
        replies = mesh.call("client", "/", 10)
        assert [s for s, _ in replies] == [200] * 10
        assert time.monotonic() - stopped < CERT_TTL  # within the current certificates' life
        wait(
            lambda: "certificate request failed" in (mesh.work / "client.log").read_text(),
            "the client's sidecar to notice the CA is away",
            mesh.work,
        )
        assert mesh.codes("client", n=5) == {200}
    finally:
        mesh.controller()  # back for anything that runs after
    wait(lambda: mesh.codes("client", n=2) == {200}, "traffic with new certificates", mesh.work)
