"""The local node for real: network namespaces, the Debian bridge + host-local plugins, iptables.

Each test gets its own bridge, subnet, netns prefix and state dir, so tests never
touch a real local node (mzn0 / mzn-*) that may be running on the machine, and
traffic only goes between namespaces the test created.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mizzen.local import CniError, LocalNode, NodeConfig, PodSpec, firewall, netns, procs
from mizzen.local.conflist import NETWORK_NAME

pytestmark = [
    pytest.mark.root,
]

# Debian's interpreter: readable and executable by UID 1337 (a venv under /root may not be).
PYTHON = "/usr/bin/python3"
WAIT = 10.0


def unique_config(tmp_path: Path, **overrides: object) -> NodeConfig:
    tag = secrets.token_hex(3)
    values: dict[str, object] = {
        "state_dir": tmp_path / "state",
        "bridge": f"mzt{tag}",
        "subnet": f"10.248.{secrets.randbelow(250) + 1}.0/24",
        "netns_prefix": f"mzt{tag}-",
        "capture": False,
    }
    values.update(overrides)
    return NodeConfig(**values)  # type: ignore[arg-type]


def leftovers(config: NodeConfig) -> dict[str, object]:
    """Everything a node may leave on the host; all empty/False when it is fully gone."""
    link = subprocess.run(["ip", "link", "show", "dev", config.bridge], capture_output=True, check=False)
    return {
        "netns": netns.list_names(config.netns_prefix),
        "etc_netns": netns.list_etc_dirs(config.netns_prefix),
        "bridge": link.returncode == 0,
        "state_dir": config.state_dir.exists(),
        "forward_chain": firewall.present(config.bridge),
    }


NOTHING_LEFT = {"netns": [], "etc_netns": [], "bridge": False, "state_dir": False, "forward_chain": False}


def force_cleanup(config: NodeConfig) -> None:
    """Last-resort cleanup by name, independent of the code under test working."""
    for name in netns.list_names(config.netns_prefix):
        for pid in netns.pids(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", name], check=False)
    for name in netns.list_etc_dirs(config.netns_prefix):
        netns.remove_etc_dir(name)
    subprocess.run(["ip", "link", "del", config.bridge], capture_output=True, check=False)
    try:
        firewall.remove(config.bridge)
    except Exception:
        pass


@pytest.fixture
def config(tmp_path: Path) -> Iterator[NodeConfig]:
    cfg = unique_config(tmp_path)
    try:
        yield cfg
    finally:
        try:
            LocalNode.open(cfg).down()
        finally:
            force_cleanup(cfg)


@pytest.fixture
def node(config: NodeConfig) -> LocalNode:
    node = LocalNode(config)
    node.up()
    return node


@pytest.fixture
def popens() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Popen objects to reap at the end, so no zombie outlives a test."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WAIT)


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def read_line(proc: subprocess.Popen[bytes], timeout: float = WAIT) -> str:
    """One line from the process's stdout, with a bounded wait."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise AssertionError(f"no output from pid {proc.pid} within {timeout}s")
        return proc.stdout.readline().decode().strip()
    finally:
        sel.close()


LISTENER = textwrap.dedent("""
    import os, socket, sys
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", int(sys.argv[1])))
    srv.listen()
    print("ready", flush=True)
    while True:
        conn, peer = srv.accept()
        data = conn.recv(100)
        reply = b"uid=%d from=%s got=%s" % (os.getuid(), peer[0].encode(), data)
        if len(sys.argv) > 2:  # a tag tells which of several listeners answered
            reply += b" tag=" + sys.argv[2].encode()
        conn.sendall(reply)
        conn.close()
""")

CLIENT = textwrap.dedent("""
    import socket, sys
    conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    conn.sendall(b"hello")
    print(conn.recv(200).decode())
""")


def start_listener(
    node: LocalNode,
    pod: str,
    port: int,
    popens: list[subprocess.Popen[bytes]],
    uid: int = 1337,
    namespace: str = "default",
    tag: str | None = None,
) -> subprocess.Popen[bytes]:
    argv = [PYTHON, "-c", LISTENER, str(port), *([tag] if tag else [])]
    proc = node.spawn(pod, argv, uid=uid, namespace=namespace, stdout=subprocess.PIPE)
    popens.append(proc)
    assert read_line(proc) == "ready"
    return proc


def connect(
    node: LocalNode,
    pod: str,
    ip: str,
    port: int,
    timeout: float = 5.0,
    namespace: str = "default",
    uid: int = 0,
) -> subprocess.CompletedProcess[str]:
    """Connect from ``pod`` (a one-shot client, not tracked) and return what the listener answered."""
    pod_netns = node.get_pod(pod, namespace).netns
    argv = procs.pod_argv(pod_netns, [PYTHON, "-c", CLIENT, ip, str(port), str(timeout)], uid, uid)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout + WAIT, check=False)


def lease_file(node: LocalNode, ip: str) -> Path:
    # host-local keeps one file per leased address under dataDir/<network name>/.
    return node.state.ipam_dir / NETWORK_NAME / ip


# -- tests ---------------------------------------------------------------------------------------------------


def test_two_pods_get_addresses_and_talk_over_tcp(
    node: LocalNode, popens: list[subprocess.Popen[bytes]]
) -> None:
    a = node.add_pod(PodSpec(name="server"))
    b = node.add_pod(PodSpec(name="client", namespace="other"))
    assert a.ip and b.ip and a.ip != b.ip
    subnet = ipaddress.ip_network(node.config.subnet)
    assert ipaddress.ip_address(a.ip) in subnet and ipaddress.ip_address(b.ip) in subnet
    assert netns.exists(a.netns) and netns.exists(b.netns)

    start_listener(node, "server", 8080, popens)
    out = connect(node, "client", a.ip, 8080, namespace="other")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"uid=1337 from={b.ip} got=hello"


def test_pod_hosts_file_names_the_pod(node: LocalNode) -> None:
    pod = node.add_pod(PodSpec(name="web"))
    proc = node.spawn("web", ["cat", "/etc/hosts"], uid=1337, stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=WAIT)
    assert f"{pod.ip}\tweb" in out.decode().splitlines()
    assert "127.0.0.1\tlocalhost" in out.decode()


def test_process_runs_as_the_given_uid_and_gid_and_is_tracked(
    node: LocalNode, popens: list[subprocess.Popen[bytes]]
) -> None:
    node.add_pod(PodSpec(name="app"))
    proc = node.spawn("app", ["sleep", "60"], uid=1337)
    popens.append(proc)
    # The PID is the command's own once ip and setpriv have exec'd into it.
    assert wait_for(lambda: Path(f"/proc/{proc.pid}/comm").read_text().strip() == "sleep")
    status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
    fields = {line.split(":")[0]: line.split(":")[1].split() for line in status}
    assert fields["Uid"] == ["1337"] * 4
    assert fields["Gid"] == ["1337"] * 4
    assert fields["Groups"] == []
    assert os.readlink(f"/proc/{proc.pid}/ns/net") == os.readlink(
        f"/proc/{netns_pid_probe(node, 'app')}/ns/net"
    )
    (pod,) = node.status()["pods"]
    assert pod["processes"] == [{"pid": proc.pid, "uid": 1337, "argv": ["sleep", "60"]}]
    assert node.run("app", ["sh", "-c", "test $(id -u) = 4242 && exit 7"], uid=4242) == 7


def netns_pid_probe(node: LocalNode, pod: str) -> int:
    """Any process in the pod's netns (to compare namespaces by inode)."""
    (pid, *_) = netns.pids(node.get_pod(pod).netns)
    return pid


def test_check_passes_for_a_healthy_pod(node: LocalNode) -> None:
    node.add_pod(PodSpec(name="ok"))
    node.check_pod("ok")


def test_delete_stops_processes_releases_the_lease_and_the_netns(
    node: LocalNode, popens: list[subprocess.Popen[bytes]]
) -> None:
    pod = node.add_pod(PodSpec(name="gone"))
    assert pod.ip is not None
    assert lease_file(node, pod.ip).exists()
    proc = node.spawn("gone", ["sleep", "60"], uid=1337)
    popens.append(proc)
    # A process that ignores SIGTERM must still go.
    stubborn = node.spawn(
        "gone",
        [
            PYTHON,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, "
            "signal.SIG_IGN); print('x', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    popens.append(stubborn)
    assert read_line(stubborn) == "x"

    assert node.delete_pod("gone") is True

    assert wait_for(lambda: proc.poll() is not None and stubborn.poll() is not None)
    assert not lease_file(node, pod.ip).exists()
    assert not netns.exists(pod.netns)
    assert not Path("/etc/netns", pod.netns).exists()
    assert node.pods() == []
    assert not any((node.state.root / "results").iterdir())
    # The address is free again: the next pod may get it.
    assert node.delete_pod("gone") is False


def test_operations_are_idempotent(node: LocalNode, config: NodeConfig) -> None:
    first = node.add_pod(PodSpec(name="same"))
    again = node.add_pod(PodSpec(name="same"))
    assert again == first
    node.up()
    node.up()
    rules = subprocess.run(
        ["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True, check=True
    ).stdout
    assert rules.count(f"-j {firewall.chain_name(config.bridge)}") == 1
    node.down()
    node.down()
    assert leftovers(config) == NOTHING_LEFT


def test_down_removes_everything(
    node: LocalNode, config: NodeConfig, popens: list[subprocess.Popen[bytes]]
) -> None:
    node.add_pod(PodSpec(name="one"))
    node.add_pod(PodSpec(name="two", namespace="ns2"))
    sleepers = [
        node.spawn(p, ["sleep", "60"], uid=1337, namespace=ns)
        for p, ns in (("one", "default"), ("two", "ns2"))
    ]
    popens.extend(sleepers)
    assert leftovers(config)["bridge"] is True

    node.down()

    assert leftovers(config) == NOTHING_LEFT
    assert wait_for(lambda: all(p.poll() is not None for p in sleepers))


def test_bridge_traffic_survives_a_forward_drop(
    node: LocalNode, config: NodeConfig, popens: list[subprocess.Popen[bytes]]
) -> None:
    """A FORWARD DROP (as under Docker) must not cut pod-to-pod traffic; ours is the ACCEPT before it.

    The drop is scoped to this test's bridge so no other traffic on the machine is affected.
    """
    a = node.add_pod(PodSpec(name="srv"))
    node.add_pod(PodSpec(name="cli"))
    assert a.ip is not None
    start_listener(node, "srv", 9090, popens)
    drop = ["FORWARD", "-i", config.bridge, "-o", config.bridge, "-j", "DROP"]
    subprocess.run(["iptables", "-w", "-A", *drop], check=True)
    try:
        out = connect(node, "cli", a.ip, 9090)
        assert out.returncode == 0, out.stderr
        bridged_through_iptables = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
        if bridged_through_iptables.exists() and bridged_through_iptables.read_text().strip() == "1":
            # Without our chain the same connection is dropped: the test above is not vacuous.
            firewall.remove(config.bridge)
            out = connect(node, "cli", a.ip, 9090, timeout=1.0)
            assert out.returncode != 0
            firewall.ensure(config.bridge)
            assert connect(node, "cli", a.ip, 9090).returncode == 0
    finally:
        subprocess.run(["iptables", "-w", "-D", *drop], check=False)


CRASHING_OWNER = textwrap.dedent("""
    import json, subprocess, sys, time
    from mizzen import logs
    logs.setup()  # before mizzen.local binds its loggers: logs go to stderr, stdout is ours
    from mizzen.local import LocalNode, NodeConfig, PodSpec
    node = LocalNode(NodeConfig.from_json(json.loads(sys.argv[1])))
    node.up()
    node.add_pod(PodSpec(name="orphan"))
    node.add_pod(PodSpec(name="orphan2", namespace="x"))
    node.spawn("orphan", ["sleep", "300"], uid=1337, stdout=subprocess.DEVNULL)
    print("ready", flush=True)
    time.sleep(300)
""")


def crash_an_owner(config: NodeConfig, popens: list[subprocess.Popen[bytes]]) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", CRASHING_OWNER, json.dumps(config.to_json())],
        stdout=subprocess.PIPE,
        env={**os.environ, "MIZZEN_LOG_LEVEL": "warning"},
    )
    popens.append(owner)
    assert read_line(owner, timeout=30) == "ready"
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=WAIT)
    assert len(netns.list_names(config.netns_prefix)) == 2


@pytest.mark.parametrize("lose_state", [False, True], ids=["state-kept", "state-deleted"])
def test_down_after_a_crash_cleans_leftovers(
    config: NodeConfig, popens: list[subprocess.Popen[bytes]], lose_state: bool
) -> None:
    crash_an_owner(config, popens)
    (orphan_ns,) = [n for n in netns.list_names(config.netns_prefix) if n.endswith("-orphan")]
    sleepers = netns.pids(orphan_ns)
    assert sleepers
    if lose_state:
        for path in sorted(config.state_dir.rglob("*"), reverse=True):
            if path.is_file() or path.is_symlink():
                path.unlink()
        # Only the settings survive in the caller's hands, as with `mizzen local down --bridge ...`.
        assert not any(p.is_file() for p in config.state_dir.rglob("*"))

    node = LocalNode.open(config)
    status = node.status()
    if lose_state:
        assert sorted(status["leftover_netns"]) == netns.list_names(config.netns_prefix)
    else:
        assert {p["name"] for p in status["pods"]} == {"orphan", "orphan2"}
    node.down()

    assert leftovers(config) == NOTHING_LEFT
    assert wait_for(lambda: not any(procs.alive(pid) for pid in sleepers))


def test_a_failed_add_leaves_nothing_behind(tmp_path: Path, popens: list[subprocess.Popen[bytes]]) -> None:
    """A plugin error aborts the pod: netns, record and lease are all rolled back."""
    cfg = unique_config(tmp_path, capture=True, cni_plugin=tmp_path / "failing-cni")
    failing = tmp_path / "failing-cni"
    failing.write_text(
        '#!/bin/sh\ncat >/dev/null\n[ "$CNI_COMMAND" = ADD ] || exit 0\n'
        'echo \'{"cniVersion":"1.0.0","code":11,"msg":"nope","details":"on purpose"}\'\nexit 1\n'
    )
    failing.chmod(0o755)
    node = LocalNode(cfg)
    try:
        with pytest.raises(CniError) as info:
            node.add_pod(PodSpec(name="doomed"))
        assert (info.value.code, info.value.msg, info.value.plugin) == (11, "nope", "mizzen-cni")
        assert node.pods() == []
        assert netns.list_names(cfg.netns_prefix) == []
        assert not any((cfg.state_dir / "ipam").rglob("10.*"))
    finally:
        try:
            node.down()
        finally:
            force_cleanup(cfg)
    assert leftovers(cfg) == NOTHING_LEFT


# -- with our plugin in the chain ----------------------------------------------------------------------------

INJECTED = "sidecar.istio.io/status"
INJECT_STATUS = '{"containers":["istio-proxy"]}'


def nat_rules(node: LocalNode, pod: str, namespace: str = "default") -> str:
    argv = netns.exec_argv(node.get_pod(pod, namespace).netns, ["iptables-save", "-t", "nat"])
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def capture_config(tmp_path: Path) -> Iterator[NodeConfig]:
    from mizzen.local import cnipath

    try:
        cnipath.find_capture_plugin()
    except cnipath.PluginNotFound as exc:
        pytest.skip(str(exc))
    cfg = unique_config(tmp_path, capture=True, log_level="debug")
    try:
        yield cfg
    finally:
        try:
            LocalNode.open(cfg).down()
        finally:
            force_cleanup(cfg)


def test_captured_pods_through_the_full_chain(
    capture_config: NodeConfig, popens: list[subprocess.Popen[bytes]]
) -> None:
    """The default chain (bridge, then mizzen-cni): injected pods get capture, others do not."""
    node = LocalNode(capture_config)
    assert [p["type"] for p in node.conflist["plugins"]] == ["bridge", "mizzen-cni"]
    server = node.add_pod(PodSpec(name="server", namespace="plain"))
    # Selected the two ways Istio allows: the namespace label, or the pod's own inject label.
    client = node.add_pod(
        PodSpec(
            name="client",
            namespace="mesh",
            namespace_labels={"istio-injection": "enabled"},
            annotations={INJECTED: INJECT_STATUS},
        )
    )
    other = node.add_pod(
        PodSpec(
            name="other",
            namespace="plain",
            labels={"sidecar.istio.io/inject": "true"},
            annotations={INJECTED: INJECT_STATUS},
        )
    )
    assert server.ip and client.ip and other.ip
    assert ":ISTIO_OUTPUT" in nat_rules(node, "client", "mesh")
    assert ":ISTIO_OUTPUT" in nat_rules(node, "other", "plain")
    assert "ISTIO" not in nat_rules(node, "server", "plain")
    for name, ns in (("server", "plain"), ("client", "mesh"), ("other", "plain")):
        node.check_pod(name, ns)

    # The client's outbound connection lands on its own port 15001 (where the sidecar will listen)...
    start_listener(node, "server", 8080, popens, namespace="plain", tag="server")
    start_listener(node, "client", 15001, popens, namespace="mesh", tag="sidecar")
    out = connect(node, "client", server.ip, 8080, namespace="mesh")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("tag=sidecar")
    # ...except for the proxy's own traffic (UID 1337), which goes straight out.
    out = connect(node, "client", server.ip, 8080, namespace="mesh", uid=1337)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"uid=1337 from={client.ip} got=hello tag=server"

    node.down()
    assert leftovers(capture_config) == NOTHING_LEFT
