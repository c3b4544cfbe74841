"""Capture for real: pods made through the CNI chain, real connections, a listener where the sidecar sits.

Pods a, b and c are in the mesh (c with exclusion annotations); d opts out. Tracers
(``cni.tracer``, UID 1337) sit on 15001/15006 in a, b and c and relay like a sidecar.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.traffic import Tracer, connect, start_server, wait_for

from cni import rules
from mizzen.local import LocalNode, NodeConfig, PodSpec

pytestmark = pytest.mark.root

MESH = {"istio-injection": "enabled"}
INJECTED = {"sidecar.istio.io/status": '{"containers":["istio-proxy"]}'}


class Mesh:
    def __init__(self, node: LocalNode) -> None:
        self.node = node
        self.ip: dict[str, str] = {}
        self.tracer: dict[str, Tracer] = {}

    def pod(
        self,
        name: str,
        *,
        annotations: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        tracer: bool = True,
    ) -> str:
        record = self.node.add_pod(
            PodSpec(
                name=name,
                namespace_labels=MESH,
                annotations={**INJECTED, **(annotations or {})},
                labels=labels or {},
            )
        )
        assert record.ip
        self.ip[name] = record.ip
        if tracer:
            self.tracer[name] = Tracer(self.node, name)
        return record.ip

    def nat(self, name: str) -> list[str]:
        out = subprocess.run(
            ["ip", "netns", "exec", self.node.get_pod(name).netns, "iptables-save", "-t", "nat"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [line for line in out.splitlines() if "ISTIO_" in line]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tag = secrets.token_hex(3)
    config = NodeConfig(
        state_dir=Path(tmp_path_factory.mktemp("node")) / "state",
        bridge=f"mzt{tag}",
        subnet=f"10.249.{secrets.randbelow(250) + 1}.0/24",
        netns_prefix=f"mzt{tag}-",
        capture=True,
    )
    node = LocalNode.open(config)
    try:
        node.up()
        m = Mesh(node)
        m.pod("a")
        m.pod("b")
        for pod_name in ("b",):
            start_server(node, pod_name, 8080)
            start_server(node, pod_name, 9090)
        m.pod("d", labels={"sidecar.istio.io/inject": "false"}, tracer=False)
        start_server(node, "d", 8080)
        start_server(node, "d", 9090)
        m.pod(
            "c",
            annotations={
                "traffic.sidecar.istio.io/excludeOutboundPorts": "9090",
                "traffic.sidecar.istio.io/excludeOutboundIPRanges": f"{m.ip['b']}/32",
            },
        )
        yield m
    finally:
        node.down()


def test_outbound_lands_on_15001_with_the_original_destination(mesh: Mesh) -> None:
    before = len(mesh.tracer["a"].relayed("outbound"))
    answer = connect(mesh.node, "a", mesh.ip["b"], 8080)
    outbound = mesh.tracer["a"].relayed("outbound")[before:]
    assert [e["original_dst"] for e in outbound] == [f"{mesh.ip['b']}:8080"]
    # The relayed hop entered b on 15006 and reached the app from 127.0.0.6, as through a sidecar.
    wait_for(
        lambda: any(e["original_dst"] == f"{mesh.ip['b']}:8080" for e in mesh.tracer["b"].relayed("inbound")),
        "b's inbound event",
    )
    inbound = [e for e in mesh.tracer["b"].relayed("inbound") if e["original_dst"] == f"{mesh.ip['b']}:8080"]
    assert inbound[-1]["source"].startswith(mesh.ip["a"] + ":")
    assert answer == "b saw 127.0.0.6"


def test_proxy_uid_is_not_captured(mesh: Mesh) -> None:
    before_a = len(mesh.tracer["a"].relayed("outbound"))
    before_b = len(mesh.tracer["b"].relayed("inbound"))
    answer = connect(mesh.node, "a", mesh.ip["b"], 8080, uid=1337)
    assert len(mesh.tracer["a"].relayed("outbound")) == before_a
    # Still captured inbound at b: inbound capture does not depend on who sent it.
    assert len(mesh.tracer["b"].relayed("inbound")) == before_b + 1
    assert answer == "b saw 127.0.0.6"


def test_pod_outside_the_mesh_has_no_rules_and_is_reached_directly(mesh: Mesh) -> None:
    assert mesh.nat("d") == []
    assert set(rules.rule_lines(rules.CaptureConfig())) <= set(mesh.nat("a"))
    answer = connect(mesh.node, "a", mesh.ip["d"], 8080)
    # a's own outbound is captured, and d, with no capture, sees a's address directly.
    assert mesh.tracer["a"].relayed("outbound")[-1]["original_dst"] == f"{mesh.ip['d']}:8080"
    assert answer == f"d saw {mesh.ip['a']}"


def test_excluded_port_bypasses_outbound_capture(mesh: Mesh) -> None:
    before = len(mesh.tracer["c"].relayed("outbound"))
    assert connect(mesh.node, "c", mesh.ip["d"], 9090) == f"d saw {mesh.ip['c']}"
    assert len(mesh.tracer["c"].relayed("outbound")) == before
    # The same pod to a port that is not excluded is captured.
    assert connect(mesh.node, "c", mesh.ip["d"], 8080) == f"d saw {mesh.ip['c']}"
    assert mesh.tracer["c"].relayed("outbound")[-1]["original_dst"] == f"{mesh.ip['d']}:8080"


def test_excluded_cidr_bypasses_outbound_capture(mesh: Mesh) -> None:
    before = len(mesh.tracer["c"].relayed("outbound"))
    assert connect(mesh.node, "c", mesh.ip["b"], 8080) == "b saw 127.0.0.6"
    assert len(mesh.tracer["c"].relayed("outbound")) == before


def test_health_ports_are_not_captured_inbound(mesh: Mesh) -> None:
    start_server(mesh.node, "b", 15021)
    before = len(mesh.tracer["b"].relayed("inbound"))
    assert connect(mesh.node, "d", mesh.ip["b"], 15021) == f"b saw {mesh.ip['d']}"
    assert len(mesh.tracer["b"].relayed("inbound")) == before


def test_check_through_the_chain_then_detects_a_deleted_rule(mesh: Mesh) -> None:
    from mizzen.local import CniError

    mesh.node.check_pod("c")
    netns = mesh.node.get_pod("c").netns
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "iptables",
            "-t",
            "nat",
            "-D",
            "ISTIO_OUTPUT",
            "-p",
            "tcp",
            "-m",
            "tcp",
            "--dport",
            "9090",
            "-j",
            "RETURN",
        ],
        check=True,
    )
    try:
        with pytest.raises(CniError) as err:
            mesh.node.check_pod("c")
        assert err.value.code == 103 and "--dport 9090" in err.value.details
    finally:  # put the rule back so the module's pods stay as the other tests expect
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                netns,
                "iptables",
                "-t",
                "nat",
                "-I",
                "ISTIO_OUTPUT",
                "1",
                "-p",
                "tcp",
                "-m",
                "tcp",
                "--dport",
                "9090",
                "-j",
                "RETURN",
            ],
            check=True,
        )
    mesh.node.check_pod("c")
