"""The local node: pods as network namespaces, created through the real CNI chain.

This is the kubelet-and-runtime half of local mode. A pod is a named netns
``<prefix><namespace>-<name>`` whose ``eth0`` is attached by the conflist from
:mod:`mizzen.local.conflist` (bridge + host-local, then ``mizzen-cni``). The
pod's Kubernetes metadata reaches our plugin through the runtime ``args``::

    "args": {"mizzen": {"pod": {"metadata": {...}}, "namespace": {"metadata": {...}}}}

Every operation is idempotent, and :meth:`LocalNode.down` also cleans up after
a crash: it finds leftovers by name (netns, ``/etc/netns`` dirs, the bridge, our
FORWARD chain) even when the state files are gone.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from mizzen import logs
from mizzen.local import cnipath, firewall, netns, procs
from mizzen.local.cniexec import CniError, CniRuntime, RuntimeConf
from mizzen.local.conflist import build_conflist
from mizzen.local.state import PodRecord, ProcessRecord, StateDir, read_json, write_json

log = logs.get("local")

DEFAULT_STATE_DIR = Path("/run/mizzen/local")
DEFAULT_BRIDGE = "mzn0"
DEFAULT_SUBNET = "10.247.0.0/24"
DEFAULT_NETNS_PREFIX = "mzn-"
CONFLIST_FILE = "10-mizzen-local.conflist"

# Kubernetes object names as used here: DNS-1123 labels.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class NodeError(RuntimeError):
    """A local-node operation could not be done (bad input, missing pod, host command failed)."""


@dataclass(frozen=True)
class NodeConfig:
    """How a local node is set up; persisted in the state dir at bring-up."""

    state_dir: Path = DEFAULT_STATE_DIR
    bridge: str = DEFAULT_BRIDGE
    subnet: str = DEFAULT_SUBNET
    # False leaves mizzen-cni out of the chain: plain bridge networking.
    capture: bool = True
    netns_prefix: str = DEFAULT_NETNS_PREFIX
    cni_plugin: Path | None = None
    system_cni_dir: Path = cnipath.SYSTEM_CNI_DIR
    log_level: str = "info"
    service_cidr: str | None = None

    def validate(self) -> None:
        """Reject settings that could touch anything but our own private network."""
        if not _IFNAME.match(self.bridge):
            raise NodeError(f"bridge name {self.bridge!r} is not a valid interface name")
        for label, cidr in (("subnet", self.subnet), ("service CIDR", self.service_cidr)):
            if cidr is None:
                continue
            try:
                net = ipaddress.ip_network(cidr)
            except ValueError as exc:
                raise NodeError(f"{label} {cidr!r}: {exc}") from exc
            if net.version != 4 or not net.is_private:
                raise NodeError(f"{label} {cidr} must be a private IPv4 network")
        if not re.match(r"^[a-z0-9][-a-z0-9]*-$", self.netns_prefix):
            raise NodeError(f"netns prefix {self.netns_prefix!r} must be lowercase and end with '-'")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("state_dir", "cni_plugin", "system_cni_dir"):
            data[key] = str(data[key]) if data[key] is not None else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeConfig:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("state_dir", "cni_plugin", "system_cni_dir"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**values)


@dataclass(frozen=True)
class PodSpec:
    """The Kubernetes metadata a pod is created with."""

    name: str
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    namespace_annotations: Mapping[str, str] = field(default_factory=dict)


def runtime_args(pod: PodRecord) -> dict[str, Any]:
    """The ``args`` our plugin reads in local mode: the pod's and its namespace's metadata."""
    ns_labels = {"kubernetes.io/metadata.name": pod.namespace, **pod.namespace_labels}
    return {
        "mizzen": {
            "pod": {
                "metadata": {
                    "name": pod.name,
                    "namespace": pod.namespace,
                    "uid": pod.uid,
                    "labels": dict(pod.labels),
                    "annotations": dict(pod.annotations),
                }
            },
            "namespace": {
                "metadata": {
                    "name": pod.namespace,
                    "labels": ns_labels,
                    "annotations": dict(pod.namespace_annotations),
                }
            },
        }
    }


def runtime_conf(pod: PodRecord) -> RuntimeConf:
    """The attachment as a kubelet's runtime would describe it."""
    return RuntimeConf(
        container_id=pod.container_id,
        netns=str(netns.path(pod.netns)),
        ifname="eth0",
        cni_args=(
            ("K8S_POD_NAMESPACE", pod.namespace),
            ("K8S_POD_NAME", pod.name),
            ("K8S_POD_INFRA_CONTAINER_ID", pod.container_id),
            ("K8S_POD_UID", pod.uid),
        ),
        args=runtime_args(pod),
    )


def result_ip(result: Mapping[str, Any]) -> str | None:
    """The pod's first IPv4 address from a CNI 1.0 result, without its prefix length."""
    for entry in result.get("ips") or ():
        address = str(entry.get("address", ""))
        if address:
            iface = ipaddress.ip_interface(address)
            if iface.version == 4:
                return str(iface.ip)
    return None


def _link_exists(name: str) -> bool:
    return netns.run(["ip", "link", "show", "dev", name], check=False).returncode == 0


class LocalNode:
    """One local node; create with :meth:`open` to pick up the settings it was brought up with."""

    def __init__(self, config: NodeConfig) -> None:
        config.validate()
        self.config = config
        self.state = StateDir(config.state_dir)
        self.runtime = CniRuntime([self.state.bin_dir], cache_dir=self.state.root)

    @classmethod
    def open(cls, config: NodeConfig | None = None) -> LocalNode:
        """The node at ``config.state_dir``, with its saved settings if it is up, else with ``config``'s."""
        config = config or NodeConfig()
        saved = read_json(StateDir(config.state_dir).node_file)
        if isinstance(saved, dict):
            config = replace(NodeConfig.from_json(saved), state_dir=config.state_dir)
        return cls(config)

    # -- node ------------------------------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self.state.node_file.exists()

    @property
    def conflist(self) -> dict[str, Any]:
        return build_conflist(
            bridge=self.config.bridge,
            subnet=self.config.subnet,
            ipam_dir=self.state.ipam_dir,
            capture=self.config.capture,
            log_level=self.config.log_level,
            service_cidr=self.config.service_cidr,
        )

    def up(self) -> None:
        """Prepare the node (state dir, CNI_PATH, conflist, FORWARD accept); safe to repeat."""
        with self.state.locked():
            plugin = cnipath.find_capture_plugin(self.config.cni_plugin) if self.config.capture else None
            self.state.root.mkdir(parents=True, exist_ok=True)
            self.state.root.chmod(0o755)
            self.state.ipam_dir.mkdir(exist_ok=True)
            cnipath.populate(self.state.bin_dir, self.config.system_cni_dir, plugin)
            write_json(self.state.netd_dir / CONFLIST_FILE, self.conflist)
            firewall.ensure(self.config.bridge)
            if not self.is_up:
                log.info(
                    "node up",
                    bridge=self.config.bridge,
                    subnet=self.config.subnet,
                    capture=self.config.capture,
                    state_dir=str(self.state.root),
                )
            write_json(self.state.node_file, self.config.to_json())

    def down(self) -> None:
        """Tear everything down: pods, leftovers found by name, bridge, FORWARD chain, state dir."""
        with self.state.locked():
            for pod in self.state.pods():
                self._delete(pod, force=True)
            prefix = self.config.netns_prefix
            for name in netns.list_names(prefix):
                log.info("removing leftover netns", netns=name)
                procs.stop_all(name)
                netns.delete(name)
            for name in netns.list_etc_dirs(prefix):
                netns.remove_etc_dir(name)
            if _link_exists(self.config.bridge):
                netns.run(["ip", "link", "del", self.config.bridge])
            firewall.remove(self.config.bridge)
            shutil.rmtree(self.state.root, ignore_errors=True)
            log.info("node down", bridge=self.config.bridge, state_dir=str(self.state.root))

    # -- pods ------------------------------------------------------------------------------------------

    def netns_name(self, name: str, namespace: str = "default") -> str:
        for label, value in (("pod name", name), ("namespace", namespace)):
            if not _DNS_LABEL.match(value):
                raise NodeError(f"{label} {value!r} is not a DNS-1123 label")
        return f"{self.config.netns_prefix}{namespace}-{name}"

    def pods(self) -> list[PodRecord]:
        return self.state.pods()

    def get_pod(self, name: str, namespace: str = "default") -> PodRecord:
        pod = self.state.load_pod(self.netns_name(name, namespace))
        if pod is None or (pod.name, pod.namespace) != (name, namespace):
            raise NodeError(f"no pod {namespace}/{name} on this node")
        return pod

    def add_pod(self, spec: PodSpec) -> PodRecord:
        """Create the pod's netns and run ADD through the chain; an existing pod is returned as is."""
        ns_name = self.netns_name(spec.name, spec.namespace)
        if not self.is_up:
            self.up()
        with self.state.locked():
            existing = self.state.load_pod(ns_name)
            if existing is not None:
                if (existing.name, existing.namespace) != (spec.name, spec.namespace):
                    owner = f"{existing.namespace}/{existing.name}"
                    raise NodeError(f"netns {ns_name} already belongs to {owner}")
                if netns.exists(ns_name):
                    return existing
                # Its netns vanished (e.g. removed by hand): release what we can, then recreate.
                self._delete(existing, force=True)
            pod = PodRecord(
                name=spec.name,
                namespace=spec.namespace,
                netns=ns_name,
                container_id=secrets.token_hex(32),
                uid=str(uuid.uuid4()),
                labels=dict(spec.labels),
                annotations=dict(spec.annotations),
                namespace_labels=dict(spec.namespace_labels),
                namespace_annotations=dict(spec.namespace_annotations),
            )
            # Saved before ADD so that a crash mid-ADD still leaves down/del a container id to DEL with.
            self.state.save_pod(pod)
            try:
                netns.add(ns_name)
                result = self.runtime.add(self.conflist, runtime_conf(pod))
                pod.ip = result_ip(result)
                netns.write_etc_file(ns_name, "hosts", netns.hosts_file(pod.name, pod.ip))
                self.state.save_pod(pod)
            except BaseException:
                # As a runtime does after a failed ADD: DEL, so no plugin keeps half an attachment.
                try:
                    self._delete(pod, force=True)
                except Exception as cleanup_exc:  # the ADD failure is the one to report
                    log.warning("cleanup after failed ADD failed", netns=ns_name, error=str(cleanup_exc))
                raise
            log.info("pod added", pod=f"{pod.namespace}/{pod.name}", ip=pod.ip, netns=ns_name)
            return pod

    def check_pod(self, name: str, namespace: str = "default") -> None:
        """CHECK the pod's attachment through the chain; raises CniError when a plugin disagrees."""
        pod = self.get_pod(name, namespace)
        self.runtime.check(self.conflist, runtime_conf(pod))

    def delete_pod(self, name: str, namespace: str = "default", *, force: bool = False) -> bool:
        """Stop the pod's processes, DEL it through the chain and remove its netns; False if absent.

        Without ``force`` a failed DEL is raised and the pod record kept, so the
        delete can be retried (as a kubelet would); ``force`` logs it and goes on.
        """
        ns_name = self.netns_name(name, namespace)
        with self.state.locked():
            pod = self.state.load_pod(ns_name)
            if pod is None:
                # Not ours on record, but a leftover netns of that name is still removed.
                procs.stop_all(ns_name)
                netns.delete(ns_name)
                netns.remove_etc_dir(ns_name)
                return False
            self._delete(pod, force=force)
            return True

    def _delete(self, pod: PodRecord, *, force: bool) -> None:
        procs.stop_all(pod.netns)
        try:
            self.runtime.delete(self.conflist, runtime_conf(pod))
        except (CniError, OSError) as exc:
            if not force:
                raise
            log.warning(
                "CNI DEL failed; removing the pod anyway", pod=f"{pod.namespace}/{pod.name}", error=str(exc)
            )
        netns.delete(pod.netns)
        netns.remove_etc_dir(pod.netns)
        self.state.remove_pod(pod.netns)
        log.info("pod deleted", pod=f"{pod.namespace}/{pod.name}")

    # -- processes -------------------------------------------------------------------------------------

    def spawn(
        self,
        pod_name: str,
        argv: Sequence[str],
        *,
        namespace: str = "default",
        uid: int = 0,
        gid: int | None = None,
        env: Mapping[str, str] | None = None,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        cwd: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the pod as ``uid``/``gid`` and track its PID; the caller owns the Popen."""
        gid = uid if gid is None else gid
        with self.state.locked():
            pod = self.get_pod(pod_name, namespace)
            if not netns.exists(pod.netns):
                raise NodeError(f"pod {namespace}/{pod_name} has no netns {pod.netns}")
            proc = procs.spawn(
                pod.netns,
                argv,
                uid=uid,
                gid=gid,
                env=env,
                cwd=cwd,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
            )
            started = procs.start_time(proc.pid) or 0
            pod.processes = [p for p in pod.processes if procs.alive(p.pid, p.start_time)]
            pod.processes.append(
                ProcessRecord(pid=proc.pid, argv=list(argv), uid=uid, gid=gid, start_time=started)
            )
            self.state.save_pod(pod)
        log.debug("process started", pod=f"{namespace}/{pod_name}", pid=proc.pid, uid=uid, argv=list(argv))
        return proc

    def run(
        self,
        pod_name: str,
        argv: Sequence[str],
        *,
        namespace: str = "default",
        uid: int = 0,
        gid: int | None = None,
    ) -> int:
        """Run ``argv`` in the pod in the foreground with our stdio; returns its exit status."""
        proc = self.spawn(pod_name, argv, namespace=namespace, uid=uid, gid=gid)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            return proc.wait()
        finally:
            self._forget(pod_name, namespace, proc.pid)

    def _forget(self, pod_name: str, namespace: str, pid: int) -> None:
        with self.state.locked():
            pod = self.state.load_pod(self.netns_name(pod_name, namespace))
            if pod is not None:
                pod.processes = [p for p in pod.processes if p.pid != pid]
                self.state.save_pod(pod)

    # -- status ----------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What is up: node settings, pods with IPs and live processes, and leftovers not on record."""
        pods = self.state.pods()
        known = {p.netns for p in pods}
        return {
            "up": self.is_up,
            "config": self.config.to_json(),
            "bridge_present": _link_exists(self.config.bridge),
            "forward_accept": firewall.present(self.config.bridge),
            "pods": [
                {
                    "name": p.name,
                    "namespace": p.namespace,
                    "ip": p.ip,
                    "netns": p.netns,
                    "netns_present": netns.exists(p.netns),
                    "container_id": p.container_id,
                    "processes": [
                        {"pid": r.pid, "uid": r.uid, "argv": r.argv}
                        for r in p.processes
                        if procs.alive(r.pid, r.start_time)
                    ],
                }
                for p in pods
            ],
            "leftover_netns": [n for n in netns.list_names(self.config.netns_prefix) if n not in known],
        }
