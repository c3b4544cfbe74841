"""The node agent's config edits as pure functions (cni.agent.conflist)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from support.cniconfigs import BRIDGE

from cni.agent import conflist

KINDNET: dict[str, Any] = {
    "cniVersion": "0.4.0",
    "name": "kindnet",
    "plugins": [{"type": "ptp", "ipam": {"type": "host-local"}}, {"type": "portmap"}],
}
OURS = conflist.plugin_entry(log_level="debug", exclude_namespaces=["kube-system", "infra"], kubeconfig="/k")


def test_plugin_entry_shape() -> None:
    assert OURS == {
        "type": "mizzen-cni",
        "log_level": "debug",
        "exclude_namespaces": ["kube-system", "infra"],
        "kubernetes": {"kubeconfig": "/k"},
    }
    assert "kubernetes" not in conflist.plugin_entry()
    assert conflist.plugin_entry()["exclude_namespaces"] == ["kube-system"]


def test_candidates_sorted_like_libcni_and_skip_ours_and_temporaries() -> None:
    names = [
        "20-b.conf",
        "10-a.conflist",
        "05-x.json",
        "mizzen-cni-kubeconfig",
        "mizzen-cni.conflist",
        ".mizzen-10-a.conflist.abc.tmp",
        ".hidden.conf",
        "README",
        "99-z.conf.bak",
    ]
    assert conflist.candidate_names(names) == [".hidden.conf", "05-x.json", "10-a.conflist", "20-b.conf"]


@pytest.mark.parametrize(
    ("conf", "valid"),
    [
        (KINDNET, True),
        (BRIDGE, True),
        ({"name": "x", "plugins": []}, False),
        ({"name": "x", "plugins": [{"name": "no-type"}]}, False),
        ({"name": "x"}, False),
        ([1, 2], False),
        (None, False),
    ],
)
def test_is_valid(conf: object, valid: bool) -> None:
    assert conflist.is_valid(conf) is valid


def test_with_entry_appends_last_and_leaves_input_alone() -> None:
    before = copy.deepcopy(KINDNET)
    out = conflist.with_entry(KINDNET, OURS)
    assert KINDNET == before
    assert [p["type"] for p in out["plugins"]] == ["ptp", "portmap", "mizzen-cni"]
    assert out["plugins"][-1] == OURS
    assert conflist.has_entry(out, OURS)
    assert not conflist.has_entry(KINDNET)


def test_with_entry_is_idempotent_and_replaces_in_place() -> None:
    once = conflist.with_entry(KINDNET, OURS)
    assert conflist.with_entry(once, OURS) == once
    # Our entry somewhere in the middle (an older install, a hand edit) is updated where it is.
    middle = copy.deepcopy(KINDNET)
    middle["plugins"].insert(1, {"type": "mizzen-cni", "log_level": "info"})
    out = conflist.with_entry(middle, OURS)
    assert [p["type"] for p in out["plugins"]] == ["ptp", "mizzen-cni", "portmap"]
    assert out["plugins"][1] == OURS
    assert conflist.has_entry(middle) and not conflist.has_entry(middle, OURS)


def test_without_entry_removes_every_copy() -> None:
    doubled = conflist.with_entry(KINDNET, OURS)
    doubled["plugins"].insert(0, dict(OURS))
    assert conflist.without_entry(doubled) == KINDNET


def test_single_conf_round_trip() -> None:
    made = conflist.from_single(BRIDGE, "10-bridge.conf", OURS)
    assert conflist.is_valid(made) and conflist.is_list(made)
    assert made["name"] == "mynet" and made["cniVersion"] == "1.0.0"
    assert made[conflist.CONVERTED_FROM] == "10-bridge.conf"
    assert made["plugins"] == [BRIDGE, OURS]
    assert conflist.original_single(made) == ("10-bridge.conf", BRIDGE)
    # Re-inserting into a converted list keeps it restorable.
    assert conflist.original_single(conflist.with_entry(made, conflist.plugin_entry())) == (
        "10-bridge.conf",
        BRIDGE,
    )


def test_original_single_refuses_edited_or_foreign_lists() -> None:
    assert conflist.original_single(KINDNET) is None
    made = conflist.from_single(BRIDGE, "10-bridge.conf", OURS)
    made["plugins"].insert(1, {"type": "portmap"})
    assert conflist.original_single(made) is None


@pytest.mark.parametrize(
    ("name", "converted"),
    [
        ("10-bridge.conf", "10-bridge.conflist"),
        ("87-podman.json", "87-podman.conflist"),
        ("a.b.conf", "a.b.conflist"),
    ],
)
def test_converted_name(name: str, converted: str) -> None:
    assert conflist.converted_name(name) == converted
