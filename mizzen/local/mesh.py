"""The local mesh's agent: the cluster's control loops for one machine (``mizzen local up`` starts it).

It reads the applied Kubernetes objects, and does what a cluster's parts do for a mesh:
- the API server's and controllers' part: ClusterIPs, EndpointSlices with each pod's readiness, Pods with
  their IPs, all written to the controller's files source (``cluster.yaml``), and every pod's
  ``/etc/hosts`` naming the Services;
- the injection webhook's part: pods selected by Istio's rules get ``istio-proxy`` from the real injector
  (:mod:`controller.inject.template`), following the controller over ADS with a workload certificate from
  the controller's CA (local tokens signed by the node);
- the kubelet's part (:mod:`mizzen.local.kubelet`) for every pod, the controller and the ingress gateway
  included: ``mizzen-system/mizzen-controller`` on the files source, ``istio-system/istio-ingressgateway``
  (mizzen-proxy as a ``router`` node, labelled ``istio: ingressgateway``).

State lives under ``<node state>/mesh`` (:mod:`mizzen.local.meshstate`). The CLI talks to the agent
through files: it writes objects and bumps ``generation``; the agent writes ``status.json`` and
``events.jsonl``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import yaml

from controller.ca.store import load_dir
from controller.ca.tokens import LocalTokens
from controller.inject import policy as inject_policy
from mizzen import logs
from mizzen.local import cluster, system
from mizzen.local.kubelet import LocalPod, PodContext
from mizzen.local.meshstate import STATUS_VERSION, MeshPaths, write_hosts
from mizzen.local.node import LocalNode
from mizzen.local.state import read_json, write_json
from mizzen.local.system import CONTROLLER, DEBUG_PORT, XDS_PORT
from mizzen.local.workloads import ManifestError, Workload, Workloads, build, template_hash

log = logs.get("local.mesh")

# Containers see a container's usual PATH, not the shell's of whoever ran `mizzen local up`.
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TICK = 0.05


@dataclass
class DesiredPod:
    """A pod the agent wants running: its manifest (already injected) and who owns it."""

    manifest: dict[str, Any]
    workload: str  # Workload.key
    owner: tuple[str, str] | None
    namespace_labels: dict[str, str]
    template_hash: str
    index: int


class MeshAgent:
    """The agent's state and its loop (one thread; probes on a small pool)."""

    def __init__(self, node: LocalNode) -> None:
        self.node = node
        self.paths = MeshPaths(node.config.state_dir)
        self.settings: dict[str, Any] = read_json(self.paths.mesh_file) or {}
        self.service_cidr = node.config.service_cidr or ""
        self.host_ip = self._bridge_ip()
        self.tokens = LocalTokens.load_or_create(self.paths.ca)
        load_dir(self.paths.ca, "cluster.local")  # the CA the controller will load: its root exists now
        self.workloads = Workloads()
        self.generation = -1
        self.loaded_for: tuple[int, str | None] = (-1, None)
        self.errors: list[str] = []
        self.pods: dict[str, LocalPod] = {}  # "namespace/name"
        self.desired_hash: dict[str, str] = {}  # pod key -> template hash it was made from
        self.cluster_ips: dict[str, str] = dict(read_json(self.paths.ips_file) or {})
        self.hosts_written: dict[str, str] = {}
        self.last_cluster = ""
        self.cluster_after = -1
        self.cluster_taken = False
        self.cluster_after_restarts = 0
        self.published_key: tuple[Any, ...] = ()
        self.last_status = ""
        self.stopping = False
        self.retry_at: dict[str, float] = {}  # pods whose creation failed: when to try again
        self._wanted: dict[str, DesiredPod] = {}
        self._wanted_for: tuple[int, str | None] = (-2, None)
        self.prober = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        self.ctx = PodContext(
            node=node,
            pod_dir=self.paths.pods,
            prober=self.prober,
            event=self.event,
            base_env=self._base_env(),
            prepare=lambda pod: system.prepare(
                pod, self.paths, self.tokens, self.workloads.services.values()
            ),
            host_ip=self.host_ip,
        )
        self.started = time.monotonic()

    # -- helpers ---------------------------------------------------------------------------------------

    def _bridge_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.node.config.subnet).hosts()))

    @staticmethod
    def _base_env() -> dict[str, str]:
        env = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "HOME": "/root"}
        # Switches of our own processes (e.g. MIZZEN_NO_EXTENSIONS) reach the sidecars they start.
        env.update(
            {k: v for k, v in os.environ.items() if k.startswith("MIZZEN_") and k != "MIZZEN_STATE_DIR"}
        )
        return env

    def event(self, obj: str, reason: str, message: str) -> None:
        entry = {"time": time.time(), "object": obj, "reason": reason, "message": message}
        with open(self.paths.events_file, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
        log.info(reason.lower(), object=obj, message=message)

    @property
    def controller_pod(self) -> LocalPod | None:
        return self.pods.get("/".join(CONTROLLER))

    @property
    def controller_ip(self) -> str | None:
        pod = self.controller_pod
        return pod.ip if pod is not None else None

    # -- desired state ---------------------------------------------------------------------------------

    def _load(self) -> None:
        generation = self.paths.generation()
        # The install's gateway follows the controller: its objects are made once the controller has an IP.
        if (generation, self.controller_ip) == self.loaded_for:
            return
        self.loaded_for = (generation, self.controller_ip)
        try:
            self.workloads = build(
                self.paths.applied_objects(), trusted=system.system_objects(self.controller_ip)
            )
            self.errors = []
        except (ManifestError, yaml.YAMLError, OSError) as exc:
            self.errors = [str(exc)]
            self.event("mesh", "Invalid", str(exc))
        self.generation = generation
        ips, problems = cluster.allocate_ips(
            self.workloads.services.values(), self.service_cidr, self.cluster_ips
        )
        for problem in problems:
            self.event("mesh", "ClusterIP", problem)
        if ips != self.cluster_ips:
            self.cluster_ips = ips
            write_json(self.paths.ips_file, ips)

    def _pod_manifest(self, w: Workload, name: str, owner: tuple[str, str] | None) -> dict[str, Any]:
        """The pod a ReplicaSet (or the user, for a bare Pod) would create, through the injection webhook."""
        meta = w.template.get("metadata") or {}
        labels = dict(meta.get("labels") or {})
        if owner is not None:
            labels["pod-template-hash"] = w.template_hash
        manifest: dict[str, Any] = {
            "metadata": {
                "name": name,
                "namespace": w.namespace,
                "labels": labels,
                "annotations": dict(meta.get("annotations") or {}),
            },
            "spec": json.loads(json.dumps(w.template["spec"])),
        }
        if owner is not None:
            manifest["metadata"]["ownerReferences"] = [
                {"kind": owner[0], "name": owner[1], "controller": True}
            ]
        ns_labels = dict(self.workloads.namespace(w.namespace).labels)
        injected, warnings = system.inject(manifest, ns_labels, self.controller_ip, self.paths)
        for warning in warnings:
            self.event(f"{w.kind} {w.namespace}/{w.name}", "InjectWarning", warning)
        return system.localize(injected, self.paths)

    def desired(self) -> Iterator[tuple[str, DesiredPod]]:
        """Every pod that should exist, by ``namespace/name`` (the system pods first)."""
        for w in self.workloads.workloads.values():
            ns_labels = dict(self.workloads.namespace(w.namespace).labels)
            if w.kind == "Pod":
                yield (
                    f"{w.namespace}/{w.name}",
                    DesiredPod(
                        self._pod_manifest(w, w.name, None), w.key, None, ns_labels, w.template_hash, 0
                    ),
                )
                continue
            owner = ("ReplicaSet", f"{w.name}-{w.template_hash}")
            for index in range(w.replicas):
                suffix = template_hash({"hash": w.template_hash, "index": index})[:5]
                name = f"{w.name}-{w.template_hash}-{suffix}"
                yield (
                    f"{w.namespace}/{name}",
                    DesiredPod(
                        self._pod_manifest(w, name, owner), w.key, owner, ns_labels, w.template_hash, index
                    ),
                )

    # -- reconcile -------------------------------------------------------------------------------------

    def _create(self, key: str, want: DesiredPod) -> None:
        pod = LocalPod(
            self.ctx,
            want.manifest,
            uid=str(uuid.uuid4()),
            namespace_labels=want.namespace_labels,
            owner=want.owner,
        )
        if time.monotonic() < self.retry_at.get(key, 0.0):
            return
        try:
            pod.create()
        except Exception as exc:  # one pod that cannot be made must not stop the others
            self.event(pod.ident, "FailedCreate", f"cannot create the pod: {exc}; retrying in 5s")
            self.retry_at[key] = time.monotonic() + 5.0
            try:
                self.node.delete_pod(pod.name, pod.namespace, force=True)
            except Exception as cleanup:  # the creation error is the one reported
                log.warning("cleanup after a failed pod creation failed", pod=key, error=str(cleanup))
            return
        self.retry_at.pop(key, None)
        self.pods[key] = pod
        self.desired_hash[key] = want.template_hash

    def _ensure_controller(self) -> bool:
        """The controller first (its IP is every sidecar's xDS address); True once it is ready."""
        key = "/".join(CONTROLLER)
        if key not in self.pods:
            self._create(key, DesiredPod(system.controller_manifest(self.paths), "system", None, {}, "", 0))
        return key in self.pods and self.pods[key].ready

    def reconcile(self) -> None:
        if not self._ensure_controller():
            return
        if self._wanted_for != (self.generation, self.controller_ip):
            try:
                self._wanted = dict(self.desired())
            except ValueError as exc:  # the injector made a pod this machine cannot run
                self.errors = [str(exc)]
                self.event("mesh", "Invalid", str(exc))
                return
            self._wanted_for = (self.generation, self.controller_ip)
        wanted = self._wanted
        system = {"/".join(CONTROLLER)}
        for key, want in wanted.items():
            if key not in self.pods:
                self._create(key, want)
        # Pods nobody wants: deleted at once if their workload is gone, else once the new ones are ready.
        by_workload: dict[str, list[str]] = {}
        for key, want in wanted.items():
            by_workload.setdefault(want.workload, []).append(key)
        for key, pod in list(self.pods.items()):
            if key in wanted or key in system or pod.deleting_since is not None:
                continue
            workload = self._workload_of(pod)
            if workload is not None and workload in by_workload:
                if not all(self.pods[k].ready for k in by_workload[workload] if k in self.pods):
                    continue  # the rollout's new pods are not ready yet: keep serving from the old ones
            pod.delete()
        for key, pod in list(self.pods.items()):
            if pod.gone:
                del self.pods[key]
                self.desired_hash.pop(key, None)

    def _workload_of(self, pod: LocalPod) -> str | None:
        if pod.owner is None:
            return f"Pod {pod.namespace}/{pod.name}"
        name = pod.owner[1].rsplit("-", 1)[0]
        return f"Deployment {pod.namespace}/{name}"

    # -- what others see -------------------------------------------------------------------------------

    def views(self) -> list[cluster.PodView]:
        out = []
        for pod in self.pods.values():
            if pod.ip is None:
                continue
            ports = tuple(
                (c.name, str(p.get("name") or ""), int(p["containerPort"]))
                for c in pod.containers
                for p in c.spec.get("ports") or ()
            )
            out.append(
                cluster.PodView(
                    name=pod.name,
                    namespace=pod.namespace,
                    uid=pod.uid,
                    ip=pod.ip,
                    labels=pod.labels,
                    annotations=pod.annotations,
                    service_account=pod.service_account,
                    ports=ports,
                    ready=pod.ready,
                    terminating=pod.deleting_since is not None,
                    owner=pod.owner,
                    node_name=socket.gethostname(),
                )
            )
        return out

    def _controller_restarts(self) -> int:
        pod = self.controller_pod
        return sum(c.restarts for c in pod.containers) if pod is not None else 0

    def _controller_versions(self) -> tuple[int, int]:
        """The controller's snapshot version and the version it has pushed to every proxy ((-1, -1) when
        it cannot say: any version it reaches later is past that)."""
        if not (self.controller_pod and self.controller_pod.ready):
            return -1, -1
        try:
            url = f"http://{self.controller_ip}:{DEBUG_PORT}/debug/configz"
            with urllib.request.urlopen(url, timeout=0.5) as response:
                state = json.loads(response.read())
            return int(state["version"]), int(state["pushed"])
        except (OSError, ValueError, KeyError):
            return -1, -1

    def publish(self) -> None:
        """cluster.yaml for the controller and /etc/hosts for the pods, when they change."""
        if not self.cluster_taken and self.last_cluster:
            if self._controller_restarts() != self.cluster_after_restarts:
                self.cluster_after = -1  # a new controller numbers its versions afresh, and read every file
            version, pushed = self._controller_versions()
            self.cluster_taken = version > self.cluster_after and pushed >= version
        # What the cluster objects and hosts files are made of: nothing else changes them (a pod's labels and
        # ports are fixed at creation), so a quiet turn costs a tuple, not a YAML dump.
        key = (
            self.generation,
            tuple(sorted(self.cluster_ips.items())),
            tuple(
                (k, p.ip, p.ready, p.deleting_since is not None, p.gone) for k, p in sorted(self.pods.items())
            ),
        )
        if key == self.published_key:
            return
        self.published_key = key
        views = self.views()
        namespaces = {*self.workloads.namespaces, *(p.namespace for p in views)}
        namespaces |= {s.namespace for s in self.workloads.services.values()}
        text = yaml.safe_dump_all(
            cluster.cluster_objects(self.workloads, namespaces, views, self.cluster_ips), sort_keys=True
        )
        if text != self.last_cluster:
            # The controller's version before it can see this write: once past it, it has read the file.
            self.cluster_after = self._controller_versions()[0]
            self.cluster_after_restarts = self._controller_restarts()
            self.cluster_taken = False
            tmp = self.paths.cluster_file.with_name(".cluster.yaml.tmp")
            tmp.write_text(text)
            os.replace(tmp, self.paths.cluster_file)  # whole files only: the source never reads half of one
            self.last_cluster = text
        endpoints: dict[str, list[str]] = {}
        for svc in self.workloads.services.values():
            endpoints[svc.key] = [
                v.ip
                for v in views
                if v.ready
                and v.ip
                and v.namespace == svc.namespace
                and cluster.selects(svc.selector, v.labels)
            ]
        for pod in self.pods.values():
            if pod.ip is None or pod.gone:
                continue
            content = cluster.hosts_file(
                pod.name, pod.namespace, pod.ip, self.workloads.services.values(), self.cluster_ips, endpoints
            )
            netns_name = self.node.netns_name(pod.name, pod.namespace)
            if self.hosts_written.get(netns_name) != content:
                write_hosts(netns_name, content)
                self.hosts_written[netns_name] = content

    def status(self) -> dict[str, Any]:
        gateways = [p for p in self.pods.values() if system.is_gateway(p.labels) and p.deleting_since is None]
        gateway = next((p for p in gateways if p.ready), gateways[0] if gateways else None)
        return {
            "apiVersion": STATUS_VERSION,
            "generation": self.generation,
            "errors": self.errors,
            "agent": {"pid": os.getpid()},
            "controller": {
                "ip": self.controller_ip,
                "xds": f"{self.controller_ip}:{XDS_PORT}" if self.controller_ip else None,
                "debug": f"{self.controller_ip}:{DEBUG_PORT}" if self.controller_ip else None,
                "ready": bool(self.controller_pod and self.controller_pod.ready),
                # The controller has read the latest pods and endpoints and pushed them to every proxy.
                "clusterSynced": self.cluster_taken,
            },
            "ingress": {
                "pod": f"{gateway.namespace}/{gateway.name}" if gateway else None,
                "ip": gateway.ip if gateway else None,
                "ready": bool(gateway and gateway.ready),
            },
            "workloads": self._workload_status(),
            "services": [
                {
                    "name": s.name,
                    "namespace": s.namespace,
                    "clusterIP": self.cluster_ips.get(s.key),
                    "ports": [{"name": p.name, "port": p.port, "targetPort": p.target_port} for p in s.ports],
                }
                for s in sorted(self.workloads.services.values(), key=lambda s: s.key)
            ],
            "pods": [
                {
                    **p.status(),
                    "meshed": inject_policy.STATUS in p.annotations,
                    "gateway": system.is_gateway(p.labels),
                }
                for _, p in sorted(self.pods.items())
            ],
        }

    def _workload_status(self) -> list[dict[str, Any]]:
        out = []
        for w in sorted(self.workloads.workloads.values(), key=lambda w: w.key):
            mine = [p for p in self.pods.values() if self._workload_of(p) == w.key]
            current = [p for p in mine if f"{p.namespace}/{p.name}" in self._wanted]
            out.append(
                {
                    "kind": w.kind,
                    "namespace": w.namespace,
                    "name": w.name,
                    "replicas": w.replicas,
                    "updated": len([p for p in current if p.deleting_since is None]),
                    "ready": len([p for p in current if p.ready]),
                    "old": len(mine) - len(current),
                }
            )
        return out

    def write_status(self) -> None:
        text = json.dumps(self.status(), indent=2, sort_keys=True)
        if text != self.last_status:
            tmp = self.paths.status_file.with_name(".status.json.tmp")
            tmp.write_text(text + "\n")
            os.replace(tmp, self.paths.status_file)
            self.last_status = text

    # -- the loop --------------------------------------------------------------------------------------

    def step(self) -> None:
        self._load()
        self.reconcile()
        now = time.monotonic()
        for pod in list(self.pods.values()):
            pod.tick(now)
        self.publish()
        self.write_status()

    def run(self) -> int:
        def stop(signum: int, frame: Any) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.event("mesh", "AgentStarted", f"pid {os.getpid()}")
        while not self.stopping:
            try:
                self.step()
            except Exception as exc:  # the loop must survive one bad turn; the error is in the log
                log.exception("agent step failed", error=str(exc))
                time.sleep(1.0)
            time.sleep(TICK)
        self.prober.shutdown(wait=False, cancel_futures=True)
        log.info("agent stopping; `mizzen local down` removes the pods")
        return 0
