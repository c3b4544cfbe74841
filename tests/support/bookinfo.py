"""Bookinfo on a local mesh for end-to-end tests: the product as a user runs it (``mizzen local up`` of
``examples/bookinfo``), on a node of its own (bridge, address ranges, netns prefix, state dir), with what the
tests need around it: readers at the ingress gateway, steady load, the sidecars' metrics, the pods' logs,
and a check that teardown left nothing behind.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mizzen.local import LocalNode, NodeConfig, firewall, netns
from mizzen.local.meshctl import Mesh

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "bookinfo"
NETWORKING = EXAMPLES / "networking"
MIZZEN = str(Path(sys.executable).parent / "mizzen")


@dataclass
class Page:
    status: int
    body: dict[str, Any] | None
    seconds: float
    request_id: str = ""

    @property
    def version(self) -> str | None:
        return (self.body or {}).get("reviewsVersion")

    @property
    def ratings(self) -> bool | None:
        return (self.body or {}).get("ratingsReachable")


class Reader:
    """One client at the ingress gateway on a kept-alive connection (a browser, a load generator's user)."""

    def __init__(self, host: str, port: int = 80, timeout: float = 15.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, float]:
        start = time.monotonic()
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("GET", path, headers=headers or {})
                response = self.conn.getresponse()
                body = response.read()
                if response.getheader("connection", "").lower() == "close":
                    self.close()
                return response.status, body, time.monotonic() - start
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    return 0, b"", time.monotonic() - start
        raise AssertionError("unreachable")

    def page(self, user: str | None = None, request_id: str | None = None) -> Page:
        headers = {"end-user": user} if user else {}
        if request_id:
            headers["x-request-id"] = request_id
        status, body, seconds = self.get("/api/v1/productpage", headers)
        data = json.loads(body) if status == 200 else None
        return Page(status, data, seconds, request_id or "")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Load:
    """Readers in threads, each on its own connection, until stopped: counts of good and bad pages."""

    host: str
    threads: int = 2
    user: str | None = None
    pages: list[Page] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    @staticmethod
    def good(page: Page) -> bool:
        """The page rendered with reviews (the user saw a working product)."""
        return page.status == 200 and page.version is not None

    @property
    def failed(self) -> list[Page]:
        return [p for p in list(self.pages) if not self.good(p)]

    def __enter__(self) -> Load:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def _run(self) -> None:
        reader = Reader(self.host)
        try:
            while not self._stop.is_set():
                self.pages.append(reader.page(self.user))
        finally:
            reader.close()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)


class Bookinfo:
    """A running Bookinfo mesh and ways to look at it."""

    def __init__(self, node: LocalNode, work: Path) -> None:
        self.node = node
        self.work = work
        self.mesh = Mesh(node, say=lambda line: None)
        self.env = {**os.environ, "MIZZEN_STATE_DIR": str(node.config.state_dir)}

    # -- the mesh ------------------------------------------------------------------------------------------

    def up(self) -> None:
        self.mesh.up([EXAMPLES / "platform", NETWORKING / "bookinfo-gateway.yaml"], timeout=240)

    @property
    def status(self) -> dict[str, Any]:
        return self.mesh.status()

    @property
    def gateway(self) -> str:
        return str(self.status["ingress"]["ip"])

    def reader(self) -> Reader:
        return Reader(self.gateway)

    def pages(self, n: int, user: str | None = None) -> list[Page]:
        reader = self.reader()
        try:
            return [reader.page(user) for _ in range(n)]
        finally:
            reader.close()

    def cli(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The ``mizzen`` command as a user types it, on this mesh."""
        return subprocess.run(
            [MIZZEN, *argv], capture_output=True, text=True, timeout=timeout, env=self.env, check=False
        )

    def rules(self, *files: str, extra: list[dict[str, Any]] | None = None) -> None:
        """Exactly these Istio rules (the gateway's stay): the others are deleted, these applied."""
        keep = {"bookinfo-gateway", "bookinfo"}
        current = [o for o in self.mesh.istio_objects() if o["metadata"]["name"] not in keep]
        from mizzen.local.meshctl import read_manifests

        wanted = read_manifests([NETWORKING / f for f in files]) + list(extra or ())
        names = {(o["kind"], o["metadata"]["name"]) for o in wanted}
        stale = [o for o in current if (o["kind"], o["metadata"]["name"]) not in names]
        if stale:
            self.mesh.delete_objects(stale)
        if wanted:
            self.mesh.apply_objects(wanted)

    # -- pods ----------------------------------------------------------------------------------------------

    def pod(self, prefix: str, namespace: str = "default") -> dict[str, Any]:
        """The pod named ``prefix``, else the first running one of the Deployment named ``prefix``."""
        for pod in self.status["pods"]:
            mine = pod["name"] == prefix or pod["name"].rsplit("-", 2)[0] == prefix
            if pod["namespace"] == namespace and mine and pod["phase"] == "Running":
                return pod
        raise AssertionError(f"no pod {namespace}/{prefix}-*: {[p['name'] for p in self.status['pods']]}")

    def container(self, prefix: str, name: str, namespace: str = "default") -> dict[str, Any]:
        return next(c for c in self.pod(prefix, namespace)["containers"] if c["name"] == name)

    def metrics(self, prefix: str, namespace: str = "default") -> str:
        """The sidecar's Prometheus text on 15020."""
        ip = self.pod(prefix, namespace)["ip"]
        with urllib_open(f"http://{ip}:15020/stats/prometheus") as response:
            return response.read().decode()

    def log(self, prefix: str, container: str) -> str:
        return Path(self.container(prefix, container)["log"]).read_text(errors="replace")

    def wait(self, cond: Any, what: str, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            time.sleep(0.1)
        raise AssertionError(
            f"timed out waiting for {what}: {json.dumps(self.status['pods'], indent=1)[:3000]}"
        )


def urllib_open(url: str) -> Any:
    import urllib.request

    return urllib.request.urlopen(url, timeout=5)


def unique_node(work: Path) -> NodeConfig:
    """A node of its own: tests in parallel (and a user's own mesh) do not collide."""
    tag = secrets.token_hex(3)
    third = secrets.randbelow(250) + 1
    return NodeConfig(
        state_dir=work / "state",
        bridge=f"mzb{tag}",
        subnet=f"10.241.{third}.0/24",
        netns_prefix=f"mzb{tag}-",
        capture=True,
        service_cidr=f"10.242.{third}.0/24",
        log_level="warning",
    )


@dataclass
class Footprint:
    """What a mesh on a node has made, taken while it is up, so that teardown can be checked against it:
    its pods' network namespaces (by inode: a process can keep one alive after its name is gone) and the
    host ends of their veths."""

    config: NodeConfig
    netns_inodes: set[int]
    veths: set[str]

    @classmethod
    def take(cls, config: NodeConfig) -> Footprint:
        inodes = {os.stat(netns.path(n)).st_ino for n in netns.list_names(config.netns_prefix)}
        out = subprocess.run(
            ["ip", "-o", "link", "show", "master", config.bridge], capture_output=True, text=True, check=True
        ).stdout
        veths = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip()}
        return cls(config, inodes, veths)

    def left(self) -> list[str]:
        """Whatever is still there: network namespaces and /etc/netns entries by our prefix, the bridge, the
        veths, our iptables chain, processes in our pods' namespaces or started from our state dir, the
        state dir itself."""
        config = self.config
        found = [f"netns {n}" for n in netns.list_names(config.netns_prefix)]
        found += [f"/etc/netns/{n}" for n in netns.list_etc_dirs(config.netns_prefix)]
        links = subprocess.run(
            ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
        ).stdout
        for line in links.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name == config.bridge or name in self.veths:
                found.append(f"link {name}")
        if firewall.present(config.bridge):
            found.append(f"iptables chain {firewall.chain_name(config.bridge)}")
        state = str(config.state_dir)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                inode = os.stat(proc / "ns" / "net").st_ino
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # gone meanwhile
            if inode in self.netns_inodes or state in cmdline:
                found.append(f"process {proc.name}: {cmdline[:120]}")
        if config.state_dir.exists():
            found.append(f"state dir {config.state_dir}")
        return found


@contextmanager
def bookinfo() -> Iterator[Bookinfo]:
    """Bookinfo up (platform and gateway) on a node of its own; everything removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="mzt-bookinfo-"))
    work.chmod(0o755)
    config = unique_node(work)
    node = LocalNode.open(config)
    app = Bookinfo(node, work)
    try:
        app.up()
        yield app
    finally:
        app.mesh.down()
        shutil.rmtree(work, ignore_errors=True)


def request_id() -> str:
    return str(uuid.uuid4())
