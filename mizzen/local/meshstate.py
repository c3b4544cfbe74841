"""The local mesh's state directory, shared by the agent and the commands that talk to it.

Layout, under ``<node state>/mesh``::

    mesh.json             when and from what it was brought up; the agent's PID
    generation            bumped by every apply/delete; the agent acts on the latest
    applied/*.yaml        the applied Kubernetes objects, one file each (Deployments, Services...)
    controller/           the controller's files source: istio/*.yaml (the applied Istio objects, one
                          file each) and cluster.yaml (written by the agent: Namespaces, Services with their
                          ClusterIPs, EndpointSlices, Pods)
    ca/                   the controller's CA and the node's token signer
    pods/<ns>_<pod>/      per pod: logs/<container>.log, the sidecar's token, downward files, scratch
    status.json           the agent's view (pods, containers, services, workloads), rewritten on change
    events.jsonl          what happened, one JSON object a line (created, started, ready, back-off...)
    cluster-ips.json      the ClusterIPs given out, kept across changes
    agent.log             the agent's own log
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from mizzen.local import netns, procs
from mizzen.local.state import read_json

STATUS_VERSION = "local.mizzen.io/v1"


class MeshPaths:
    """Where the local mesh keeps its state, inside the node's state directory."""

    def __init__(self, node_state: Path) -> None:
        self.root = Path(node_state) / "mesh"

    applied = property(lambda self: self.root / "applied")  # Kubernetes objects, one file each
    source = property(lambda self: self.root / "controller")  # the controller's files source
    istio = property(lambda self: self.root / "controller" / "istio")  # Istio objects, one file each
    cluster_file = property(lambda self: self.root / "controller" / "cluster.yaml")
    ca = property(lambda self: self.root / "ca")
    pods = property(lambda self: self.root / "pods")
    status_file = property(lambda self: self.root / "status.json")
    events_file = property(lambda self: self.root / "events.jsonl")
    generation_file = property(lambda self: self.root / "generation")
    mesh_file = property(lambda self: self.root / "mesh.json")
    agent_log = property(lambda self: self.root / "agent.log")
    ips_file = property(lambda self: self.root / "cluster-ips.json")
    # The mesh config (ConfigMap mizzen-system/istio, as on Kubernetes), read by the controller's
    # --mesh-config; Istio's defaults until one is applied.
    mesh_config = property(lambda self: self.root / "mesh-config.yaml")

    def create(self) -> None:
        for directory in (self.applied, self.istio, self.ca, self.pods):
            directory.mkdir(parents=True, exist_ok=True)
        if not self.mesh_config.exists():
            self.mesh_config.write_text("{}\n")
        for directory in (self.root, self.pods):
            directory.chmod(0o755)  # sidecars (UID 1337) read their files under pods/

    @property
    def exists(self) -> bool:
        return self.mesh_file.exists()

    def generation(self) -> int:
        try:
            return int(self.generation_file.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def bump_generation(self) -> int:
        generation = self.generation() + 1
        tmp = self.generation_file.with_name(".generation.tmp")
        tmp.write_text(f"{generation}\n")
        os.replace(tmp, self.generation_file)
        return generation

    def applied_objects(self) -> list[dict[str, Any]]:
        objects: list[dict[str, Any]] = []
        for path in sorted(self.applied.glob("*.yaml")):
            objects.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
        return objects

    def istio_objects(self) -> list[dict[str, Any]]:
        objects: list[dict[str, Any]] = []
        for path in sorted(self.istio.glob("*.yaml")):
            objects.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
        return objects


def write_hosts(netns_name: str, content: str) -> None:
    """A pod's hosts file, rewritten in place: ``ip netns exec`` bind-mounted this very file into running
    processes, so a new file (a rename) would go unseen by them."""
    path = netns.ETC_NETNS_DIR / netns_name / "hosts"
    if not path.exists():
        netns.write_etc_file(netns_name, "hosts", content)
        return
    with open(path, "r+") as fh:
        fh.write(content)
        fh.truncate()


def spawn_agent(state_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start the agent detached from the caller (its own session; it outlives `mizzen local up`)."""
    out = open(log_path, "ab")
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mizzen",
                "--log-level",
                "info",
                "local",
                "--state-dir",
                str(state_dir),
                "agent",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "MIZZEN_LOG_FORMAT": "json"},
        )
    finally:
        out.close()


def agent_alive(paths: MeshPaths) -> bool:
    """Whether the agent recorded in ``mesh.json`` still runs (the same process, not a reused PID)."""
    settings = read_json(paths.mesh_file) or {}
    agent = settings.get("agent") or {}
    pid, started = agent.get("pid"), agent.get("startTime")
    return isinstance(pid, int) and procs.alive(pid, started)
