"""The user's side of the local mesh: ``mizzen local up / apply / delete / status / exec / logs / down``.

Commands talk to the agent (:mod:`mizzen.local.mesh`) through its state files and to the controller
through its debug endpoint, and wait as ``kubectl rollout status`` and ``istioctl`` users expect: ``up``
and ``apply`` return once every pod is ready and every proxy has acknowledged the config it was sent (or
say what is not ready and why).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from mizzen.local import procs
from mizzen.local.meshstate import MeshPaths, agent_alive, spawn_agent
from mizzen.local.node import LocalNode
from mizzen.local.state import read_json, write_json
from mizzen.local.system import CONTROLLER
from mizzen.local.workloads import (
    ManifestError,
    check_object,
    is_istio,
    is_mesh_config,
    object_key,
    object_label,
)

Say = Callable[[str], None]
SUFFIXES = (".yaml", ".yml", ".json")
_SETTLE_POLL = 0.1


class MeshError(RuntimeError):
    """What the user asked cannot be done (or did not happen in time); the message says why."""


def read_manifests(sources: Iterable[Path]) -> list[dict[str, Any]]:
    """Every object in the files (folders: their ``*.yaml``, ``*.yml``, ``*.json``, sorted), checked; the
    first problem is raised naming the file, the object and the field."""
    objects: list[dict[str, Any]] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            files = sorted(p for p in source.iterdir() if p.suffix in SUFFIXES and not p.name.startswith("."))
        elif source.exists():
            files = [source]
        else:
            raise MeshError(f"{source}: no such file or directory")
        for path in files:
            try:
                docs = list(yaml.safe_load_all(path.read_text()))
            except yaml.YAMLError as exc:
                raise MeshError(f"{path}: not YAML: {exc}") from None
            for number, doc in enumerate(docs, 1):
                if doc is None:
                    continue
                items = (
                    doc.get("items")
                    if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List")
                    else [doc]
                )
                for item in items or ():
                    try:
                        objects.append(check_object(item, path.parent.resolve()))
                    except ManifestError as exc:
                        raise MeshError(f"{path} (document {number}): {exc}") from None
    return objects


def _get(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


class Mesh:
    """A local mesh, found by the node's state directory."""

    def __init__(self, node: LocalNode, say: Say | None = None) -> None:
        self.node = node
        self.paths = MeshPaths(node.config.state_dir)
        self.say: Say = say or (lambda line: print(line, flush=True))

    # -- reading ---------------------------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self.paths.exists

    def require_up(self) -> None:
        if not self.is_up:
            raise MeshError(
                f"no local mesh at {self.node.config.state_dir} (start one with `mizzen local up DIR`)"
            )

    def agent_status(self) -> dict[str, Any]:
        return read_json(self.paths.status_file) or {}

    @property
    def debug_address(self) -> str | None:
        return (self.agent_status().get("controller") or {}).get("debug")

    def debug(self, path: str) -> Any:
        """A controller debug endpoint's JSON (``/debug/syncz``...); MeshError when it cannot be reached."""
        address = self.debug_address
        if not address:
            raise MeshError("the controller has no address yet")
        status, data = _get(f"http://{address}{path}")
        if status != 200:
            raise MeshError(f"the controller's {path} answered {status or 'nothing'}")
        return data

    def proxies(self) -> list[dict[str, Any]]:
        try:
            return list(self.debug("/debug/syncz"))
        except MeshError:
            return []

    def status(self) -> dict[str, Any]:
        """The agent's view plus each sidecar's sync state from the controller (the documented JSON)."""
        status = self.agent_status()
        settings = read_json(self.paths.mesh_file) or {}
        proxies = {(p.get("namespace"), p.get("pod")): p for p in self.proxies()}
        for pod in status.get("pods") or ():
            proxy = proxies.get((pod["namespace"], pod["name"]))
            pod["proxy"] = _sync_state(proxy) if proxy else ("NOT CONNECTED" if _has_proxy(pod) else None)
        ingress = status.get("ingress") or {}
        if ingress.get("ip"):
            ingress["url"] = f"http://{ingress['ip']}:{settings.get('ingressPort', 80)}"
        return {
            **status,
            "up": self.is_up,
            "agentRunning": agent_alive(self.paths),
            "stateDir": str(self.node.config.state_dir),
            "node": {
                "bridge": self.node.config.bridge,
                "subnet": self.node.config.subnet,
                "serviceCIDR": self.node.config.service_cidr,
            },
        }

    # -- up / down -------------------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        """Who brought the mesh up (``mizzen local up``, ``mizzen demo``)."""
        return str((read_json(self.paths.mesh_file) or {}).get("origin", ""))

    def up(
        self, sources: list[Path], *, timeout: float = 180.0, origin: str = "mizzen local up"
    ) -> dict[str, Any]:
        """Bring the mesh up with the objects in ``sources`` and wait until it is ready."""
        objects = read_manifests(sources)  # every problem before anything is started
        if self.is_up:
            if agent_alive(self.paths):
                raise MeshError("a local mesh is already up: `mizzen local apply -f FILE` changes it")
            raise MeshError("a local mesh was left behind by a crash: run `mizzen local down` first")
        if self.node.is_up and self.node.pods():
            raise MeshError(
                "this node already has pods (from `mizzen local pod add`?): run `mizzen local down` first"
            )
        if not self.node.config.service_cidr:
            raise MeshError("the node has no service range: bring it up with --service-cidr")
        started = time.monotonic()
        self.node.up()
        self.paths.create()
        self._store(objects)
        self.paths.bump_generation()
        settings: dict[str, Any] = {
            "createdAt": time.time(),
            "origin": origin,
            "sources": [str(Path(s).resolve()) for s in sources],
        }
        write_json(self.paths.mesh_file, settings)
        agent = spawn_agent(self.node.config.state_dir, self.paths.agent_log)
        settings["agent"] = {"pid": agent.pid, "startTime": procs.start_time(agent.pid)}
        write_json(self.paths.mesh_file, settings)
        self.say(
            f"mizzen local up: {len(objects)} objects; node {self.node.config.bridge} "
            f"{self.node.config.subnet}, services {self.node.config.service_cidr}"
        )
        self.wait_ready(timeout, started=started, progress=True)
        istio = {_config_key(o) for o in objects if is_istio(o)}
        if istio:
            self.wait_settled(istio, set(), set(), None, max(5.0, timeout - (time.monotonic() - started)))
            self.wait_ready(timeout)
        return self.status()

    def down(self) -> None:
        """Stop the agent, then remove every pod, rule and file (also after a crash)."""
        settings = read_json(self.paths.mesh_file) or {}
        agent = settings.get("agent") or {}
        pid = agent.get("pid")
        if pid and procs.alive(int(pid), agent.get("startTime")):
            os.kill(int(pid), signal.SIGTERM)
            if procs.wait_gone([int(pid)], 10.0):
                os.kill(int(pid), signal.SIGKILL)
                procs.wait_gone([int(pid)], 5.0)
        self.node.down()

    # -- apply / delete --------------------------------------------------------------------------------

    def _store(self, objects: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
        """Write each object where its reader looks; returns (Kubernetes keys, Istio keys) written."""
        kube: set[str] = set()
        istio: set[str] = set()
        for obj in objects:
            key = object_key(obj)
            path = self._path_of(obj)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(yaml.safe_dump(_with_last_applied(obj) if is_istio(obj) else obj, sort_keys=False))
            os.replace(tmp, path)  # whole files only: no reader sees half of one
            (istio if is_istio(obj) else kube).add(key)
        return kube, istio

    def apply(self, sources: list[Path], *, timeout: float = 120.0, wait: bool = True) -> list[str]:
        """``kubectl apply`` for the local mesh; returns what changed (``Kind ns/name configured``)."""
        self.require_up()
        objects = read_manifests(sources)
        return self._change(objects, [], timeout=timeout, wait=wait)

    def delete(self, sources: list[Path], *, timeout: float = 120.0, wait: bool = True) -> list[str]:
        self.require_up()
        objects = read_manifests(sources)
        return self._change([], objects, timeout=timeout, wait=wait)

    def apply_objects(
        self, objects: Iterable[dict[str, Any]], *, timeout: float = 120.0, wait: bool = True
    ) -> list[str]:
        """:meth:`apply` for objects in hand (checked the same way; relative local paths stay as given)."""
        self.require_up()
        return self._change([_checked(o) for o in objects], [], timeout=timeout, wait=wait)

    def delete_objects(
        self, objects: Iterable[dict[str, Any]], *, timeout: float = 120.0, wait: bool = True
    ) -> list[str]:
        """:meth:`delete` by identity: each object needs its apiVersion, kind and metadata only."""
        self.require_up()
        return self._change([], [dict(o) for o in objects], timeout=timeout, wait=wait)

    def istio_objects(self) -> list[dict[str, Any]]:
        """The Istio objects in force (as applied)."""
        return [_without_last_applied(o) for o in self.paths.istio_objects()]

    def _change(
        self, present: list[dict[str, Any]], gone: list[dict[str, Any]], *, timeout: float, wait: bool
    ) -> list[str]:
        before = self._baseline()
        previous = {object_key(o): self._stored(o) for o in present}
        report = []
        for obj in present:
            old = previous[object_key(obj)]
            verb = "created" if old is None else ("unchanged" if old == obj else "configured")
            report.append(f"{object_label(obj)} {verb}")
        for obj in gone:
            path = self._path_of(obj)
            report.append(f"{object_label(obj)} {'deleted' if path.exists() else 'not found'}")
            if is_mesh_config(obj):
                path.write_text("{}\n")  # back to Istio's defaults
            else:
                path.unlink(missing_ok=True)
        self._store(present)
        self.paths.bump_generation()
        if wait:
            changed = {_config_key(o) for o in present if previous[object_key(o)] != o and is_istio(o)}
            self.wait_settled(
                {_config_key(o) for o in present if is_istio(o)},
                {_config_key(o) for o in gone if is_istio(o)},
                changed,
                before,
                timeout,
            )
            self.wait_ready(timeout)
        return report

    def _path_of(self, obj: dict[str, Any]) -> Path:
        """Where an object is kept: Istio's kinds for the controller's files source, the mesh config for its
        --mesh-config, the rest for the agent."""
        if is_mesh_config(obj):
            return self.paths.mesh_config
        directory = self.paths.istio if is_istio(obj) else self.paths.applied
        return directory / f"{object_key(obj)}.yaml"

    def _stored(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        path = self._path_of(obj)
        if not path.exists() or (is_mesh_config(obj) and path.read_text().strip() == "{}"):
            return None
        loaded = yaml.safe_load(path.read_text())
        return _without_last_applied(loaded) if isinstance(loaded, dict) else None

    def _baseline(self) -> Baseline:
        """What the controller holds just before a change is written, to tell its answer to it apart."""
        try:
            version = int(self.debug("/debug/configz")["version"])
            refused = {i["object"]: "; ".join(i["errors"]) for i in self.debug("/debug/invalid")}
        except (MeshError, KeyError, TypeError):
            version, refused = -1, {}
        return Baseline(version, self._controller_restarts(), refused)

    def _controller_restarts(self) -> int:
        for pod in self.agent_status().get("pods") or ():
            if (pod["namespace"], pod["name"]) == CONTROLLER:
                return sum(int(c["restarts"]) for c in pod["containers"])
        return 0

    # -- waiting ---------------------------------------------------------------------------------------

    def wait_settled(
        self, present: set[str], gone: set[str], changed: set[str], before: Baseline | None, timeout: float
    ) -> None:
        """Until the controller holds the Istio objects (the changed ones at a version later than
        ``before``), none of the gone ones, and has pushed that to every proxy. An object it refused is
        raised with the controller's reason (a refusal it already held before the change counts only for
        objects that did not change, or at the deadline)."""
        before = before or Baseline(-1, self._controller_restarts(), {})
        deadline = time.monotonic() + timeout
        refused: list[str] = []
        while True:
            try:
                version = before.version
                if self._controller_restarts() != before.restarts:
                    version = -1  # a controller started since: it read every file after the change
                invalid = {i["object"]: "; ".join(i["errors"]) for i in self.debug("/debug/invalid")}
                refused = [f"{k}: {e}" for k, e in sorted(invalid.items()) if k in present]
                news = [
                    f"{k}: {e}"
                    for k, e in sorted(invalid.items())
                    if k in present and (k not in changed or before.refused.get(k) != e)
                ]
                if news:
                    raise MeshError("the controller refused " + " / ".join(news))
                state = self.debug("/debug/configz")
                objects = state["objects"]
                taken = all(k in objects for k in present) and not any(k in objects for k in gone)
                fresh = all(objects[k] > version for k in changed if k in objects)
                if taken and fresh and state["pushed"] >= state["version"]:
                    return
            except MeshError as exc:
                if "refused" in str(exc):
                    raise
            if time.monotonic() > deadline:
                if refused:
                    raise MeshError("the controller refused " + " / ".join(refused))
                raise MeshError(f"the controller did not take {sorted(present | gone)} within {timeout:g}s")
            time.sleep(_SETTLE_POLL)

    def wait_ready(self, timeout: float, *, started: float | None = None, progress: bool = False) -> None:
        """Until the agent has acted on the latest generation, every workload is rolled out and ready, and
        every proxy acknowledged its config; with ``progress``, say what happens on the way."""
        started = started or time.monotonic()
        deadline = started + timeout
        generation = self.paths.generation()
        seen: dict[str, tuple[str | None, bool]] = {}
        offset = 0
        while True:
            status = self.agent_status()
            if progress:
                offset = self._progress(status, seen, started, offset)
            problems = self._not_ready(status, generation)
            if not problems:
                if progress:
                    self.say(
                        f"  {time.monotonic() - started:5.1f}s  every pod is ready and every proxy is SYNCED"
                    )
                return
            if not agent_alive(self.paths):
                raise MeshError(f"the local mesh's agent is not running (its log: {self.paths.agent_log})")
            if time.monotonic() > deadline:
                raise MeshError(
                    f"not ready after {timeout:g}s:\n  " + "\n  ".join(problems[:12]) + self._hints(status)
                )
            time.sleep(0.2)

    def _not_ready(self, status: dict[str, Any], generation: int) -> list[str]:
        if status.get("generation", -1) < generation:
            return ["the agent has not read the latest objects yet"]
        problems = list(status.get("errors") or ())
        controller = status.get("controller") or {}
        if not controller.get("ready"):
            return [*problems, "the controller is not ready"]
        for w in status.get("workloads") or ():
            label = f"{w['kind']} {w['namespace']}/{w['name']}"
            if w["ready"] < w["replicas"] or w["updated"] < w["replicas"]:
                why = [_why(p) for p in status.get("pods") or () if _owned_by(p, w) and not p["ready"]]
                problems.append(f"{label}: {w['ready']}/{w['replicas']} ready {' '.join(filter(None, why))}")
            elif w["old"]:
                problems.append(f"{label}: {w['old']} old pods terminating")
        for pod in status.get("pods") or ():
            if pod["phase"] == "Terminating":
                problems.append(f"pod {pod['namespace']}/{pod['name']}: terminating")
        if problems:
            return problems
        if not controller.get("clusterSynced"):
            return ["the controller has not pushed the latest pods and endpoints yet"]
        proxies = {(p.get("namespace"), p.get("pod")): p for p in self.proxies()}
        for pod in status.get("pods") or ():
            if not (_has_proxy(pod) and pod["phase"] != "Terminating"):
                continue
            proxy = proxies.get((pod["namespace"], pod["name"]))
            state = _sync_state(proxy) if proxy else "NOT CONNECTED"
            if state != "SYNCED":
                problems.append(f"pod {pod['namespace']}/{pod['name']}: proxy {state}")
        return problems

    def _progress(
        self, status: dict[str, Any], seen: dict[str, tuple[str | None, bool]], started: float, offset: int
    ) -> int:
        elapsed = time.monotonic() - started
        for pod in status.get("pods") or ():
            key = f"{pod['namespace']}/{pod['name']}"
            state = (pod.get("ip"), bool(pod.get("ready")))
            old = seen.get(key)
            if old is None:
                if pod.get("gateway"):
                    kind = "the ingress gateway"
                else:
                    kind = "sidecar injected" if pod.get("meshed") else "not in the mesh"
                self.say(f"  {elapsed:5.1f}s  {key:<52} created {pod.get('ip') or '-'}, {kind}")
            if state[1] and not (old or (None, False))[1]:
                self.say(f"  {elapsed:5.1f}s  {key:<52} ready")
            seen[key] = state
        # Problems the user should see while waiting (restarts, failed probes, refused objects).
        try:
            with open(self.paths.events_file) as fh:
                fh.seek(offset)
                for line in fh:
                    event = json.loads(line)
                    if event["reason"] in (
                        "BackOff",
                        "FailedCreate",
                        "Unhealthy",
                        "Invalid",
                        "Failed",
                        "ClusterIP",
                    ):
                        self.say(
                            f"  {elapsed:5.1f}s  {event['object']:<52} {event['reason']}: {event['message']}"
                        )
                return fh.tell()
        except FileNotFoundError:
            return offset

    def _hints(self, status: dict[str, Any]) -> str:
        lines = []
        for pod in status.get("pods") or ():
            for c in pod.get("containers") or ():
                if c.get("restarts") or c.get("probeError"):
                    exited = c.get("lastExitCode")
                    lines.append(
                        f"{pod['namespace']}/{pod['name']} {c['name']}: restarts {c['restarts']}"
                        + (f", last exit status {exited}" if exited is not None else "")
                        + (f", {c['probeError']}" if c.get("probeError") else "")
                        + f" (log: {c['log']})"
                    )
        return ("\n" + "\n".join("  " + line for line in lines[:8])) if lines else ""

    # -- pods ------------------------------------------------------------------------------------------

    def find_pod(self, name: str, namespace: str = "default") -> dict[str, Any]:
        """A pod by name, or ``deploy/NAME`` (its first ready pod), from the agent's status."""
        pods = [p for p in self.agent_status().get("pods") or () if p["namespace"] == namespace]
        if name.startswith(("deploy/", "deployment/")):
            workload = name.split("/", 1)[1]
            owned = [p for p in pods if p["name"].rsplit("-", 2)[0] == workload and p["phase"] == "Running"]
            owned.sort(key=lambda p: (not p["ready"], p["name"]))
            if owned:
                return owned[0]
        else:
            for pod in pods:
                if pod["name"] == name:
                    return pod
        known = ", ".join(sorted(p["name"] for p in pods)) or "none"
        raise MeshError(f"no pod {name!r} in namespace {namespace} (pods there: {known})")

    def logs(
        self, name: str, namespace: str, container: str | None, *, follow: bool, tail: int | None
    ) -> None:
        pod = self.find_pod(name, namespace)
        names = [c["name"] for c in pod["containers"]]
        if container is None:
            apps = [c["name"] for c in pod["containers"] if c["kind"] == "app"]
            container = apps[0] if apps else names[0]
        match = [c for c in pod["containers"] if c["name"] == container]
        if not match:
            raise MeshError(
                f"pod {namespace}/{pod['name']} has no container {container!r} ({', '.join(names)})"
            )
        path = Path(match[0]["log"])
        with open(path, "rb") as fh:
            lines = fh.read().decode(errors="replace").splitlines(keepends=True)
            sys.stdout.write("".join(lines[-tail:] if tail is not None else lines))
            sys.stdout.flush()
            while follow:
                chunk = fh.read()
                if chunk:
                    sys.stdout.write(chunk.decode(errors="replace"))
                    sys.stdout.flush()
                else:
                    time.sleep(0.2)


def print_status(status: dict[str, Any], out: TextIO) -> None:
    """The mesh as a table, as ``kubectl get pods`` and ``istioctl proxy-status`` would show it together."""
    from mizzen import output

    controller = status.get("controller") or {}
    ingress = status.get("ingress") or {}
    agent = "running" if status.get("agentRunning") else "NOT RUNNING (run `mizzen local down`)"
    out.write(
        f"local mesh: agent {agent}; controller {controller.get('ip') or '-'} "
        f"({'ready' if controller.get('ready') else 'not ready'}); "
        f"ingress gateway {ingress.get('url') or '-'}\n\n"
    )
    rows = []
    for pod in status.get("pods") or ():
        live = [c for c in pod["containers"] if c["kind"] != "init"]
        rows.append(
            [
                pod["namespace"],
                pod["name"],
                f"{sum(1 for c in live if c['ready'])}/{len(live)}",
                pod["phase"],
                str(sum(c["restarts"] for c in pod["containers"])),
                pod.get("ip") or "-",
                pod.get("proxy") or "-",
            ]
        )
    output.table(rows, ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "IP", "PROXY"], out)
    out.write("\n")
    services = [
        [
            s["namespace"],
            s["name"],
            s.get("clusterIP") or "None",
            ",".join(str(p["port"]) for p in s["ports"]),
        ]
        for s in status.get("services") or ()
    ]
    output.table(services, ["NAMESPACE", "SERVICE", "CLUSTER-IP", "PORTS"], out)
    for error in status.get("errors") or ():
        out.write(f"error: {error}\n")


@dataclass(frozen=True)
class Baseline:
    version: int  # the controller's snapshot version
    restarts: int  # of the controller's container: a new instance numbers its versions afresh
    refused: dict[str, str]  # object -> the controller's reasons


APPLIED_LABEL = "local.mizzen.io/applied"


def _with_last_applied(obj: dict[str, Any]) -> dict[str, Any]:
    """The object labelled with a digest of what was applied. The controller's model keeps labels (not
    annotations): any change to what the user applies changes the model, so the object's revision tells
    when the controller has read it; re-applying the same leaves it alone."""
    out = json.loads(json.dumps(obj))
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
    out.setdefault("metadata", {}).setdefault("labels", {})[APPLIED_LABEL] = digest
    return out


def _without_last_applied(obj: dict[str, Any]) -> dict[str, Any]:
    labels = (obj.get("metadata") or {}).get("labels")
    if isinstance(labels, dict) and APPLIED_LABEL in labels:
        labels.pop(APPLIED_LABEL)
        if not labels:
            obj["metadata"].pop("labels")
    return obj


def _checked(obj: dict[str, Any]) -> dict[str, Any]:
    try:
        return check_object(obj)
    except ManifestError as exc:
        raise MeshError(str(exc)) from None


def _has_proxy(pod: dict[str, Any]) -> bool:
    return bool(pod.get("meshed") or pod.get("gateway"))


def _sync_state(proxy: dict[str, Any]) -> str:
    states = {t.get("status") for t in (proxy.get("types") or {}).values()}
    for worst in ("NACKED", "STALE", "NOT SENT"):
        if worst in states:
            return worst
    return "SYNCED" if states else "NOT SENT"


def _owned_by(pod: dict[str, Any], workload: dict[str, Any]) -> bool:
    if pod["namespace"] != workload["namespace"]:
        return False
    return pod["name"] == workload["name"] or pod["name"].rsplit("-", 2)[0] == workload["name"]


def _why(pod: dict[str, Any]) -> str:
    reasons = [f"{c['name']}: {c['probeError']}" for c in pod.get("containers") or () if c.get("probeError")]
    return f"({'; '.join(reasons)})" if reasons else ""


def _config_key(obj: dict[str, Any]) -> str:
    """The controller's name for an object in /debug/configz: ``Kind namespace/name``."""
    meta = obj.get("metadata") or {}
    return f"{obj['kind']} {meta.get('namespace') or 'default'}/{meta['name']}"


__all__ = ["CONTROLLER", "Mesh", "MeshError", "print_status", "read_manifests"]
