"""Parsing what a runtime hands the plugin, and the error objects it gets back."""

from __future__ import annotations

import json

import pytest

from cni import spec
from cni.spec import CniError

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0"}
CONF = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "mizzen-cni"}


def test_parse_add() -> None:
    env = {
        **ENV,
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1",
        "CNI_PATH": "/opt/cni/bin",
    }
    inv = spec.parse(env, json.dumps({**CONF, "prevResult": {"ips": []}}).encode())
    assert inv.command == "ADD" and inv.netns == "/var/run/netns/x" and inv.path == "/opt/cni/bin"
    assert (inv.pod_namespace, inv.pod_name) == ("shop", "web-1")
    assert inv.prev_result == {"ips": []}
    assert inv.cni_version == "1.0.0"


def test_del_needs_no_netns() -> None:
    inv = spec.parse({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, json.dumps(CONF).encode())
    assert inv.netns == "" and inv.prev_result is None


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "2.0.0"])
def test_unsupported_versions(version: str) -> None:
    with pytest.raises(CniError) as err:
        spec.parse(ENV, json.dumps({**CONF, "cniVersion": version}).encode())
    assert err.value.code == spec.INCOMPATIBLE_VERSION and version in err.value.details


def test_malformed_cni_args() -> None:
    with pytest.raises(CniError) as err:
        spec.parse({**ENV, "CNI_ARGS": "K8S_POD_NAME"}, json.dumps(CONF).encode())
    assert err.value.code == spec.INVALID_ENV and "K8S_POD_NAME" in err.value.details


def test_error_object_shape() -> None:
    err = CniError(spec.TRY_AGAIN_LATER, "api down", "after 5 attempts")
    assert err.to_json("0.4.0") == {
        "cniVersion": "0.4.0",
        "code": 11,
        "msg": "api down",
        "details": "after 5 attempts",
    }
    assert "details" not in CniError(7, "bad").to_json()


def test_version_lists_what_a_chained_plugin_can_speak() -> None:
    result = spec.version_result()
    assert result["cniVersion"] == "1.0.0"
    assert "0.2.0" not in result["supportedVersions"] and "1.1.0" in result["supportedVersions"]
