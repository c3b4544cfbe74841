"""Running a pod on this machine as a kubelet would: containers in order, probes, restarts, termination.

A pod is a network namespace from the CNI chain (:class:`~mizzen.local.node.LocalNode`); each container
is a process in it, started as its ``securityContext`` user with its ``env``, ``command``/``args``
(``$(VAR)`` expanded) and working directory, its output appended to a log file. The order is the
kubelet's: init containers one by one, a native sidecar (an init container with ``restartPolicy: Always``,
as the injector makes ``istio-proxy``) started and awaited through its startup probe, then the app
containers together. Readiness, liveness and startup probes (HTTP, TCP, exec) run as the kubelet runs
them, and a container that exits is restarted with a growing back-off (1 s doubling to 30 s, shorter than
Kubernetes' 10 s to 5 min: a local mesh should heal while you watch).

Everything here is driven by :meth:`LocalPod.tick` from one thread (the agent's loop); probes run on a
thread pool and only do network or exec work, never touch the node's state.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mizzen import logs
from mizzen.local import procs
from mizzen.local.node import LocalNode, NodeError, PodSpec
from mizzen.local.workloads import WORKDIR_ANNOTATION

log = logs.get("local.kubelet")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
BACKOFF_RESET = 60.0  # a container that ran this long starts its back-off afresh
ENDPOINT_GRACE = 1.0  # between "not ready" and SIGTERM: the endpoint change reaches the sidecars first
_VAR = re.compile(r"\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)|\$\$")

Event = Callable[[str, str, str], None]  # (object, reason, message)


@dataclass
class Probe:
    """One probe's state, counted as the kubelet counts it."""

    spec: Mapping[str, Any]
    ok: bool = False
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0
    pending: Future[str | None] | None = None
    last_error: str = ""

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))


@dataclass
class Container:
    name: str
    spec: Mapping[str, Any]
    kind: str  # "init", "sidecar" (restartable init container) or "app"
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    exit_code: int | None = None  # of the current run, once it is over (None while it runs)
    last_exit: int | None = None  # of the last run that ended, kept across restarts
    done: bool = False  # an init container that exited 0
    next_start: float = 0.0
    backoff: float = 0.0
    probes: dict[str, Probe] = field(default_factory=dict)
    stopping_since: float | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def started(self) -> bool:
        """Past its startup probe (or running, without one)."""
        probe = self.probes.get("startupProbe")
        return self.running and (probe is None or probe.ok)

    @property
    def ready(self) -> bool:
        probe = self.probes.get("readinessProbe")
        return self.started and (probe is None or probe.ok)


@dataclass
class PodContext:
    """What every pod on the node shares: where things go, and how to talk about them."""

    node: LocalNode
    pod_dir: Path  # per-pod files (logs, volumes) go under pod_dir / "<namespace>_<name>"
    prober: ThreadPoolExecutor
    event: Event
    base_env: Mapping[str, str]
    # Called after the netns exists and before any container starts (tokens, downward files, bootstrap).
    prepare: Callable[[LocalPod], dict[str, str]] | None = None
    host_ip: str = ""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names are replaced, unknown ones kept, ``$$`` is ``$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, text)


def field_value(path: str, pod: LocalPod) -> str:
    """A downward-API ``fieldRef`` value."""
    label = re.match(r"^metadata\.(labels|annotations)\['([^']+)'\]$", path)
    if label:
        source = pod.labels if label.group(1) == "labels" else pod.annotations
        return source.get(label.group(2), "")
    return {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.serviceAccountName": pod.service_account,
        "spec.nodeName": pod.node_name,
        "status.podIP": pod.ip or "",
        "status.podIPs": pod.ip or "",
        "status.hostIP": pod.ctx.host_ip,
    }.get(path, "")


def _probe_port(port: Any, container: Mapping[str, Any]) -> int:
    if isinstance(port, int):
        return port
    for declared in container.get("ports") or ():
        if declared.get("name") == port:
            return int(declared["containerPort"])
    if isinstance(port, str) and port.isdigit():
        return int(port)
    raise ValueError(f"port {port!r} is not declared by the container")


class LocalPod:
    """One pod: its netns, its containers' processes and probes, its phase."""

    def __init__(
        self,
        ctx: PodContext,
        manifest: Mapping[str, Any],
        *,
        uid: str,
        namespace_labels: Mapping[str, str],
        owner: tuple[str, str] | None = None,
    ) -> None:
        self.ctx = ctx
        meta = manifest["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta.get("namespace", "default")
        self.uid = uid
        self.labels: dict[str, str] = dict(meta.get("labels") or {})
        self.annotations: dict[str, str] = dict(meta.get("annotations") or {})
        self.namespace_labels = dict(namespace_labels)
        self.spec: dict[str, Any] = dict(manifest["spec"])
        self.owner = owner
        self.service_account: str = self.spec.get("serviceAccountName") or "default"
        self.node_name = "local"
        self.ip: str | None = None
        self.phase = "Pending"
        self.deleting_since: float | None = None
        self.message = ""
        self.extra_env: dict[str, str] = {}
        self.containers = [
            Container(c["name"], c, "sidecar" if c.get("restartPolicy") == "Always" else "init")
            for c in self.spec.get("initContainers") or ()
        ] + [Container(c["name"], c, "app") for c in self.spec["containers"]]
        for c in self.containers:
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                if isinstance(c.spec.get(kind), Mapping):
                    c.probes[kind] = Probe(c.spec[kind])

    # -- what others read ------------------------------------------------------------------------------

    @property
    def ident(self) -> str:
        return f"pod {self.namespace}/{self.name}"

    @property
    def files(self) -> Path:
        return self.ctx.pod_dir / f"{self.namespace}_{self.name}"

    def log_path(self, container: str) -> Path:
        return self.files / "logs" / f"{container}.log"

    @property
    def ready(self) -> bool:
        live = [c for c in self.containers if c.kind != "init"]
        return self.phase == "Running" and self.deleting_since is None and all(c.ready for c in live)

    @property
    def gone(self) -> bool:
        return self.phase == "Gone"

    def status(self) -> dict[str, Any]:
        """This pod as ``mizzen local status -o json`` shows it."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "ip": self.ip,
            "phase": "Terminating" if self.deleting_since is not None else self.phase,
            "ready": self.ready,
            "labels": dict(self.labels),
            "serviceAccount": self.service_account,
            "message": self.message,
            "containers": [
                {
                    "name": c.name,
                    "kind": c.kind,
                    "state": "running" if c.running else ("completed" if c.done else "waiting"),
                    "ready": c.ready,
                    "restarts": c.restarts,
                    "pid": c.proc.pid if c.running and c.proc is not None else None,
                    "lastExitCode": c.last_exit,
                    "probeError": next((p.last_error for p in c.probes.values() if p.last_error), ""),
                    "log": str(self.log_path(c.name)),
                }
                for c in self.containers
            ],
        }

    # -- lifecycle -------------------------------------------------------------------------------------

    def create(self) -> None:
        """The netns through the CNI chain (ADD), then whatever the pod needs on disk."""
        record = self.ctx.node.add_pod(
            PodSpec(
                name=self.name,
                namespace=self.namespace,
                labels=self.labels,
                annotations=self.annotations,
                namespace_labels=self.namespace_labels,
            )
        )
        self.ip = record.ip
        (self.files / "logs").mkdir(parents=True, exist_ok=True)
        self.files.chmod(0o755)
        if self.ctx.prepare is not None:
            self.extra_env = self.ctx.prepare(self)
        self.phase = "Running"
        self.ctx.event(self.ident, "Created", f"IP {self.ip}")

    def delete(self) -> None:
        """Start terminating: the pod turns unready now, its containers get SIGTERM shortly after."""
        if self.deleting_since is None:
            self.deleting_since = time.monotonic()
            self.ctx.event(self.ident, "Killing", "terminating")

    def tick(self, now: float) -> None:
        """Advance: start what is due, collect probe results, restart what died, finish a deletion."""
        if self.phase == "Gone":
            return
        if self.deleting_since is not None:
            self._terminate(now)
            return
        if self.phase == "Pending":
            return
        for c in self.containers:
            self._reap(c, now)
            self._collect(c, now)
        self._start_due(now)
        for c in self.containers:
            if c.running:
                self._schedule_probes(c, now)

    def _start_due(self, now: float) -> None:
        for c in self.containers:
            if c.kind == "init":
                if c.done:
                    continue
                if not c.running and now >= c.next_start:
                    self._start(c, now)
                return  # the next container waits for this one to complete
            if c.kind == "sidecar":
                if not c.running and now >= c.next_start:
                    self._start(c, now)
                if not c.started and c.restarts == 0:
                    return  # first start: hold the rest until the sidecar is up (the native-sidecar order)
                continue
            if not c.running and now >= c.next_start:
                self._start(c, now)

    def _env(self, c: Container) -> dict[str, str]:
        env = {**self.ctx.base_env, "HOSTNAME": self.name}
        if c.name == "istio-proxy":
            env.update(self.extra_env)
        for item in c.spec.get("env") or ():
            if "valueFrom" in item:
                env[item["name"]] = field_value(item["valueFrom"]["fieldRef"]["fieldPath"], self)
            else:
                env[item["name"]] = expand(str(item.get("value", "")), env)
        return env

    def _user(self, c: Container) -> tuple[int, int]:
        pod_ctx = self.spec.get("securityContext") or {}
        ctx = c.spec.get("securityContext") or {}
        uid = int(ctx.get("runAsUser", pod_ctx.get("runAsUser", 0)))
        gid = int(ctx.get("runAsGroup", pod_ctx.get("runAsGroup", uid)))
        return uid, gid

    def _cwd(self, c: Container) -> str:
        workdir = self.annotations.get(WORKDIR_ANNOTATION)
        if workdir:
            return workdir
        configured = c.spec.get("workingDir")
        if configured and Path(configured).is_dir():
            return str(configured)
        return "/"

    def argv(self, c: Container, env: Mapping[str, str]) -> list[str]:
        return [expand(a, env) for a in [*(c.spec.get("command") or ()), *(c.spec.get("args") or ())]]

    def _start(self, c: Container, now: float) -> None:
        env = self._env(c)
        argv = self.argv(c, env)
        uid, gid = self._user(c)
        path = self.log_path(c.name)
        try:
            with open(path, "ab") as out:
                c.proc = self.ctx.node.spawn(
                    self.name,
                    argv,
                    namespace=self.namespace,
                    uid=uid,
                    gid=gid,
                    env=env,
                    cwd=self._cwd(c),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        except (OSError, NodeError, ValueError) as exc:
            c.exit_code = 128
            self._backoff(c, now)
            self.message = f"container {c.name}: cannot start {argv[0]!r}: {exc}"
            self.ctx.event(self.ident, "Failed", self.message)
            return
        c.started_at = now
        c.exit_code = None
        for probe in c.probes.values():
            probe.ok = False
            probe.successes = probe.failures = 0
            probe.next_at = now + float(probe.spec.get("initialDelaySeconds", 0))
        if c.restarts:
            self.ctx.event(self.ident, "Restarted", f"container {c.name} (restart {c.restarts})")
        else:
            self.ctx.event(self.ident, "Started", f"container {c.name} (pid {c.proc.pid})")

    def _backoff(self, c: Container, now: float) -> None:
        if c.started_at and now - c.started_at >= BACKOFF_RESET:
            c.backoff = 0.0
        c.backoff = BACKOFF_FIRST if c.backoff == 0 else min(c.backoff * 2, BACKOFF_MAX)
        c.next_start = now + c.backoff

    def _reap(self, c: Container, now: float) -> None:
        if c.proc is None or c.exit_code is not None:
            return  # never started, or its exit is already handled
        code = c.proc.poll()
        if code is None:
            return
        c.exit_code = c.last_exit = code
        policy = self.spec.get("restartPolicy", "Always")
        if c.kind == "init" and code == 0:
            c.done = True
            self.ctx.event(self.ident, "Completed", f"init container {c.name}")
            return
        if c.kind == "app" and (policy == "Never" or (policy == "OnFailure" and code == 0)):
            c.done = True
            self.ctx.event(self.ident, "Exited", f"container {c.name} exited {code}")
            c.next_start = float("inf")
            return
        c.restarts += 1
        self._backoff(c, now)
        self.message = f"container {c.name} exited with {code}; restarting in {c.backoff:g}s"
        self.ctx.event(self.ident, "BackOff", self.message)

    # -- probes ----------------------------------------------------------------------------------------

    def _schedule_probes(self, c: Container, now: float) -> None:
        for kind, probe in c.probes.items():
            if probe.pending is not None or now < probe.next_at:
                continue
            if kind != "startupProbe" and "startupProbe" in c.probes and not c.probes["startupProbe"].ok:
                continue  # the other probes wait for the startup probe, as the kubelet's do
            if kind == "startupProbe" and probe.ok:
                continue
            probe.pending = self.ctx.prober.submit(self._run_probe, c, probe)
            probe.next_at = now + probe.period

    def _run_probe(self, c: Container, probe: Probe) -> str | None:
        """None when the probe passes, else why it failed (runs on the prober pool)."""
        spec = probe.spec
        try:
            if "httpGet" in spec:
                get = spec["httpGet"]
                host = get.get("host") or self.ip
                scheme = str(get.get("scheme") or "HTTP").lower()
                url = f"{scheme}://{host}:{_probe_port(get.get('port'), c.spec)}{get.get('path') or '/'}"
                headers = {h["name"]: h.get("value", "") for h in get.get("httpHeaders") or ()}
                request = urllib.request.Request(url, headers={"User-Agent": "kube-probe/local", **headers})
                try:
                    with urllib.request.urlopen(request, timeout=probe.timeout) as response:
                        status = response.status
                except urllib.error.HTTPError as exc:
                    status = exc.code
                return None if 200 <= status < 400 else f"HTTP probe {url}: status {status}"
            if "tcpSocket" in spec:
                port = _probe_port(spec["tcpSocket"].get("port"), c.spec)
                with socket.create_connection(
                    (spec["tcpSocket"].get("host") or self.ip, port), probe.timeout
                ):
                    return None
            command = list(spec["exec"]["command"])
            uid, gid = self._user(c)
            argv = procs.pod_argv(self.ctx.node.netns_name(self.name, self.namespace), command, uid, gid)
            done = subprocess.run(argv, capture_output=True, timeout=probe.timeout, env=self._env(c))
            if done.returncode == 0:
                return None
            return f"exec probe {command[0]}: exit {done.returncode}: {done.stdout.decode()[-200:].strip()}"
        except (OSError, ValueError, subprocess.TimeoutExpired, urllib.error.URLError) as exc:
            return f"{next(iter(k for k in spec if k in ('httpGet', 'tcpSocket', 'exec')))} probe: {exc}"

    def _collect(self, c: Container, now: float) -> None:
        for kind, probe in c.probes.items():
            if probe.pending is None or not probe.pending.done():
                continue
            error = probe.pending.result()
            probe.pending = None
            if not c.running:
                continue  # a result about a process that has gone since
            if error is None:
                probe.successes += 1
                probe.failures = 0
                probe.last_error = ""
                threshold = 1 if kind != "readinessProbe" else int(probe.spec.get("successThreshold", 1))
                if not probe.ok and probe.successes >= threshold:
                    probe.ok = True
                    if kind == "readinessProbe":
                        self.ctx.event(self.ident, "Ready", f"container {c.name}")
                continue
            probe.failures += 1
            probe.successes = 0
            probe.last_error = error
            if probe.failures < int(probe.spec.get("failureThreshold", 3)):
                continue
            if kind == "readinessProbe":
                if probe.ok:
                    self.ctx.event(self.ident, "Unready", f"container {c.name}: {error}")
                probe.ok = False
            elif kind == "livenessProbe" or (kind == "startupProbe" and not probe.ok):
                self.ctx.event(self.ident, "Unhealthy", f"container {c.name}: {error}; killing it")
                self._signal(c, signal.SIGKILL)

    # -- termination -----------------------------------------------------------------------------------

    def _signal(self, c: Container, sig: signal.Signals) -> None:
        if c.proc is None or c.proc.poll() is not None:
            return
        try:
            # Each container leads its own session: its children (workers, shells) get the signal too.
            os.killpg(c.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill_container(self, name: str) -> bool:
        """SIGKILL one container's processes (as an OOM kill would); it restarts by the pod's policy."""
        for c in self.containers:
            if c.name == name and c.running:
                self._signal(c, signal.SIGKILL)
                return True
        return False

    def _terminate(self, now: float) -> None:
        assert self.deleting_since is not None
        grace = float(self.spec.get("terminationGracePeriodSeconds", 30))
        if now - self.deleting_since < ENDPOINT_GRACE and self.phase == "Running":
            return
        # Apps first, then the sidecars and the init containers still running (the native-sidecar order).
        for group in (("app",), ("sidecar", "init")):
            members = [c for c in self.containers if c.kind in group and c.running]
            for c in members:
                if c.stopping_since is None:
                    c.stopping_since = now
                    self._signal(c, signal.SIGTERM)
                elif now - c.stopping_since > grace:
                    self._signal(c, signal.SIGKILL)
            if members:
                return
        try:
            self.ctx.node.delete_pod(self.name, self.namespace, force=True)
        except (NodeError, OSError) as exc:
            log.warning("pod removal failed", pod=self.ident, error=str(exc))
        for c in self.containers:
            if c.proc is not None:
                c.proc.poll()
        self.phase = "Gone"
        self.ctx.event(self.ident, "Deleted", "")
