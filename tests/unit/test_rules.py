"""The rule builder against golden files: one per annotation, plus the defaults and IPv6.

Regenerate after an intended change with MIZZEN_UPDATE_GOLDENS=1 and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cni import rules
from cni.rules import AnnotationError, config_from_annotations

T = "traffic.sidecar.istio.io/"

CASES: dict[str, tuple[dict[str, str], int]] = {
    "default": ({}, 4),
    "default_ipv6": ({}, 6),
    "include_outbound_ranges": ({T + "includeOutboundIPRanges": "10.96.0.0/12,192.168.0.0/16"}, 4),
    "include_outbound_ranges_empty": ({T + "includeOutboundIPRanges": ""}, 4),
    "exclude_outbound_ranges": ({T + "excludeOutboundIPRanges": "169.254.169.254/32,10.1.0.0/16"}, 4),
    "mixed_ranges_ipv6": (
        {
            T + "includeOutboundIPRanges": "10.0.0.0/8,fd00:10::/64",
            T + "excludeOutboundIPRanges": "fd00:10::5/128",
        },
        6,
    ),
    "include_outbound_ports": (
        {T + "includeOutboundPorts": "8080,9090", T + "includeOutboundIPRanges": ""},
        4,
    ),
    "exclude_outbound_ports": ({T + "excludeOutboundPorts": "22,3306"}, 4),
    "include_inbound_ports": ({T + "includeInboundPorts": "8080,9080"}, 4),
    "include_inbound_ports_empty": ({T + "includeInboundPorts": ""}, 4),
    "exclude_inbound_ports": ({T + "excludeInboundPorts": "22,8443"}, 4),
    "exclude_interfaces": ({T + "excludeInterfaces": "eth1,net1"}, 4),
    "reroute_virtual_interfaces": ({"istio.io/reroute-virtual-interfaces": "tap0"}, 4),
    "status_port": ({"status.sidecar.istio.io/port": "15099"}, 4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, golden_dir: Path) -> None:
    annotations, family = CASES[case]
    got = rules.build(config_from_annotations(annotations), family)  # type: ignore[arg-type]
    path = golden_dir / "capture" / f"{case}.golden"
    if os.environ.get("MIZZEN_UPDATE_GOLDENS"):
        path.write_text(got)
    assert got == path.read_text()


def test_default_follows_istio_layout() -> None:
    lines = rules.rule_lines(rules.CaptureConfig())
    # Proxy traffic leaves uncaptured, by UID and by GID, before the catch-all redirect.
    uid = lines.index("-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN")
    gid = lines.index("-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN")
    catch_all = lines.index("-A ISTIO_OUTPUT -j ISTIO_REDIRECT")
    assert uid < gid < catch_all == len(lines) - 1
    assert "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in lines
    assert "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in lines
    for port in (15090, 15021, 15020):
        assert f"-A ISTIO_INBOUND -p tcp -m tcp --dport {port} -j RETURN" in lines


def test_exclusions_come_before_inclusions() -> None:
    cfg = config_from_annotations(
        {T + "excludeOutboundIPRanges": "10.0.0.0/8", T + "includeOutboundPorts": "8080"}
    )
    lines = rules.rule_lines(cfg)
    assert lines.index("-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN") < lines.index(
        "-A ISTIO_OUTPUT -p tcp -m tcp --dport 8080 -j ISTIO_REDIRECT"
    )


def test_ipv4_ranges_stay_out_of_ipv6_rules() -> None:
    cfg = config_from_annotations({T + "excludeOutboundIPRanges": "10.0.0.0/8,fd00::/8"})
    v4, v6 = rules.rule_lines(cfg, 4), rules.rule_lines(cfg, 6)
    assert any("10.0.0.0/8" in line for line in v4) and not any("fd00::/8" in line for line in v4)
    assert any("fd00::/8" in line for line in v6) and not any("10.0.0.0/8" in line for line in v6)
    assert "-A ISTIO_OUTPUT -d ::1/128 -j RETURN" in v6


def test_no_inbound_capture_means_no_prerouting_jump() -> None:
    cfg = config_from_annotations({T + "includeInboundPorts": ""})
    lines = rules.rule_lines(cfg)
    assert not any(line.startswith("-A PREROUTING") for line in lines)
    assert not any("ISTIO_IN_REDIRECT" in line and "owner" in line for line in lines)


def test_every_builtin_rule_is_a_jump_into_our_chains() -> None:
    cfg = config_from_annotations(
        {T + "excludeInterfaces": "eth1", "istio.io/reroute-virtual-interfaces": "tap0"}
    )
    for line in rules.rule_lines(cfg):
        assert rules.is_ours(line), line


@pytest.mark.parametrize(
    ("annotation", "value", "fragment"),
    [
        (T + "excludeOutboundPorts", "22,abc", "'abc' is not a port number"),
        (T + "includeInboundPorts", "70000", "'70000' is not a port number"),
        (T + "includeOutboundIPRanges", "10.0.0.0/33", "'10.0.0.0/33' is not a CIDR"),
        (T + "excludeOutboundIPRanges", "nope", "'nope' is not a CIDR"),
        (T + "excludeInterfaces", "eth0;rm -rf", "is not an interface name"),
        ("sidecar.istio.io/interceptionMode", "TPROXY", "only REDIRECT is supported"),
    ],
)
def test_invalid_annotation_is_named(annotation: str, value: str, fragment: str) -> None:
    with pytest.raises(AnnotationError) as err:
        config_from_annotations({annotation: value})
    assert err.value.annotation == annotation
    assert annotation in str(err.value) and fragment in str(err.value)


def test_removal_payload_deletes_jumps_then_chains() -> None:
    payload = rules.removal_payload(["-A OUTPUT -j ISTIO_OUTPUT"])
    lines = payload.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    assert lines.index("-D OUTPUT -j ISTIO_OUTPUT") < lines.index("-X ISTIO_OUTPUT")
    assert [line for line in lines if line.startswith("-X")] == [f"-X {c}" for c in rules.CHAINS]


def test_virtual_interfaces_are_rerouted_before_the_inbound_jump() -> None:
    lines = rules.rule_lines(config_from_annotations({"istio.io/reroute-virtual-interfaces": "tap0"}))
    prerouting = [line for line in lines if line.startswith("-A PREROUTING")]
    assert prerouting == [
        "-A PREROUTING -i tap0 -p tcp -j ISTIO_REDIRECT",
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
    ]
