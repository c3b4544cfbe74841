"""The CNI runtime's requests (env, stdin, order, prevResult, cache) against a fake plugin."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mizzen.local.cniexec import (
    CniError,
    CniRuntime,
    RuntimeConf,
    build_request,
    cni_args_string,
)

# A plugin that appends what it received (env + stdin) to $FAKE_LOG and answers as its conf says:
# "fail": print that error object and exit 1; "garbage": exit 1 with non-JSON; otherwise a result that
# is prevResult (or a fresh one) with the plugin's name appended to "dns.search" as a trail.
FAKE_PLUGIN = """#!/usr/bin/env python3
import json, os, sys
conf = json.load(sys.stdin)
env = {k: v for k, v in os.environ.items() if k.startswith("CNI_")}
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps({"plugin": os.path.basename(sys.argv[0]), "env": env, "conf": conf}) + "\\n")
sys.stderr.write("fake plugin says hello\\n")
if env["CNI_COMMAND"] == "VERSION":
    print(json.dumps({"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}))
    sys.exit(0)
if conf.get("fail"):
    print(json.dumps(conf["fail"]))
    sys.exit(1)
if conf.get("garbage"):
    print("this is not json")
    sys.exit(1)
if conf.get("silent_failure"):
    sys.exit(3)
if env["CNI_COMMAND"] == "ADD":
    result = conf.get("prevResult") or {"cniVersion": "1.0.0", "ips": [{"address": "10.249.0.5/24"}]}
    result.setdefault("dns", {}).setdefault("search", []).append(conf["type"])
    print(json.dumps(result))
"""


@pytest.fixture
def cni_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("first", "second", "third"):
        plugin = bin_dir / name
        plugin.write_text(FAKE_PLUGIN)
        plugin.chmod(0o755)
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.jsonl"))
    return bin_dir


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def conflist(*plugins: dict[str, Any]) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "testnet", "plugins": list(plugins)}


RT = RuntimeConf(
    container_id="c0ffee",
    netns="/run/netns/test-pod",
    ifname="eth0",
    cni_args=(
        ("K8S_POD_NAMESPACE", "shop"),
        ("K8S_POD_NAME", "cart"),
        ("K8S_POD_INFRA_CONTAINER_ID", "c0ffee"),
    ),
    args={"mizzen": {"pod": {"metadata": {"name": "cart"}}}},
)


def test_cni_args_string_puts_ignore_unknown_first() -> None:
    assert (
        cni_args_string([("K8S_POD_NAME", "a"), ("IgnoreUnknown", "0")]) == "IgnoreUnknown=1;K8S_POD_NAME=a"
    )


def test_build_request_env_and_stdin() -> None:
    plugin = {"type": "bridge", "bridge": "br0", "args": {"cni": {"x": 1}}}
    req = build_request(
        "ADD",
        conflist(plugin),
        plugin,
        RT,
        [Path("/a"), Path("/b")],
        prev_result={"cniVersion": "1.0.0"},
        base_env={"PATH": "/usr/bin", "CNI_COMMAND": "stale"},
    )
    assert req.plugin == "bridge"
    assert req.env == {
        "PATH": "/usr/bin",
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c0ffee",
        "CNI_NETNS": "/run/netns/test-pod",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": (
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart;K8S_POD_INFRA_CONTAINER_ID=c0ffee"
        ),
        "CNI_PATH": "/a:/b",
    }
    conf = json.loads(req.stdin)
    assert conf["cniVersion"] == "1.0.0" and conf["name"] == "testnet"
    assert conf["prevResult"] == {"cniVersion": "1.0.0"}
    # The conf's own args are kept; the runtime's are merged in.
    assert conf["args"] == {"cni": {"x": 1}, "mizzen": {"pod": {"metadata": {"name": "cart"}}}}
    assert "runtimeConfig" not in conf


def test_build_request_first_plugin_has_no_prev_result_and_capabilities_filter() -> None:
    plugin = {"type": "portmap", "capabilities": {"portMappings": True}}
    rt = RuntimeConf(container_id="c", netns="/n", capability_args={"portMappings": [1], "bandwidth": {}})
    conf = json.loads(build_request("ADD", conflist(plugin), plugin, rt, [Path("/a")]).stdin)
    assert "prevResult" not in conf
    assert "args" not in conf
    assert conf["runtimeConfig"] == {"portMappings": [1]}


def test_add_runs_in_order_chaining_prev_result_and_caches(cni_dir: Path, tmp_path: Path) -> None:
    runtime = CniRuntime([tmp_path / "missing", cni_dir], cache_dir=tmp_path / "cache")
    net = conflist({"type": "first"}, {"type": "second", "extra": "x"}, {"type": "third"})
    result = runtime.add(net, RT)

    assert result["dns"]["search"] == ["first", "second", "third"]
    seen = calls(tmp_path)
    assert [c["plugin"] for c in seen] == ["first", "second", "third"]
    assert "prevResult" not in seen[0]["conf"]
    assert seen[1]["conf"]["prevResult"]["dns"]["search"] == ["first"]
    assert seen[2]["conf"]["prevResult"]["dns"]["search"] == ["first", "second"]
    assert seen[1]["conf"]["extra"] == "x"
    for call in seen:
        assert call["env"]["CNI_COMMAND"] == "ADD"
        assert call["env"]["CNI_CONTAINERID"] == "c0ffee"
        assert call["env"]["CNI_NETNS"] == "/run/netns/test-pod"
        assert call["env"]["CNI_IFNAME"] == "eth0"
        assert call["env"]["CNI_PATH"] == f"{tmp_path / 'missing'}:{cni_dir}"
        assert call["env"]["CNI_ARGS"].startswith("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;")
        assert call["conf"]["args"]["mizzen"]["pod"]["metadata"]["name"] == "cart"
        assert call["conf"]["name"] == "testnet"
    assert runtime.cached_result("testnet", RT) == result
    assert (tmp_path / "cache" / "results" / "testnet-c0ffee-eth0").is_file()


def test_del_runs_in_reverse_with_cached_result_then_forgets_it(cni_dir: Path, tmp_path: Path) -> None:
    runtime = CniRuntime([cni_dir], cache_dir=tmp_path / "cache")
    net = conflist({"type": "first"}, {"type": "second"})
    result = runtime.add(net, RT)
    (tmp_path / "calls.jsonl").unlink()

    runtime.delete(net, RT)

    seen = calls(tmp_path)
    assert [c["plugin"] for c in seen] == ["second", "first"]
    assert all(c["env"]["CNI_COMMAND"] == "DEL" for c in seen)
    assert all(c["conf"]["prevResult"] == result for c in seen)
    assert runtime.cached_result("testnet", RT) is None


def test_del_without_cache_sends_no_prev_result(cni_dir: Path, tmp_path: Path) -> None:
    runtime = CniRuntime([cni_dir], cache_dir=tmp_path / "cache")
    runtime.delete(conflist({"type": "first"}), RT)
    (call,) = calls(tmp_path)
    assert call["env"]["CNI_COMMAND"] == "DEL"
    assert "prevResult" not in call["conf"]


def test_check_runs_in_order_with_cached_result(cni_dir: Path, tmp_path: Path) -> None:
    runtime = CniRuntime([cni_dir], cache_dir=tmp_path / "cache")
    net = conflist({"type": "first"}, {"type": "second"})
    with pytest.raises(CniError, match="no cached result"):
        runtime.check(net, RT)
    result = runtime.add(net, RT)
    (tmp_path / "calls.jsonl").unlink()
    runtime.check(net, RT)
    seen = calls(tmp_path)
    assert [(c["plugin"], c["env"]["CNI_COMMAND"]) for c in seen] == [("first", "CHECK"), ("second", "CHECK")]
    assert all(c["conf"]["prevResult"] == result for c in seen)


def test_error_object_becomes_typed_error_and_stops_the_chain(cni_dir: Path, tmp_path: Path) -> None:
    runtime = CniRuntime([cni_dir], cache_dir=tmp_path / "cache")
    failure = {"cniVersion": "1.0.0", "code": 7, "msg": "invalid network config", "details": "no bridge"}
    net = conflist({"type": "first"}, {"type": "second", "fail": failure}, {"type": "third"})
    with pytest.raises(CniError) as info:
        runtime.add(net, RT)
    err = info.value
    assert (err.code, err.msg, err.details) == (7, "invalid network config", "no bridge")
    assert (err.plugin, err.command) == ("second", "ADD")
    assert "fake plugin says hello" in err.stderr
    assert [c["plugin"] for c in calls(tmp_path)] == ["first", "second"]
    assert runtime.cached_result("testnet", RT) is None


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"garbage": True}, "not JSON"),
        ({"silent_failure": True}, "exit status 3 and no error message"),
    ],
)
def test_failure_without_error_object(
    cni_dir: Path, tmp_path: Path, conf: dict[str, Any], message: str
) -> None:
    runtime = CniRuntime([cni_dir], cache_dir=tmp_path / "cache")
    with pytest.raises(CniError, match=message) as info:
        runtime.add(conflist({"type": "first", **conf}), RT)
    assert info.value.code is None


def test_missing_plugin_is_a_cni_error(cni_dir: Path, tmp_path: Path) -> None:
    runtime = CniRuntime([cni_dir], cache_dir=tmp_path / "cache")
    with pytest.raises(CniError, match="failed to find plugin 'nope'"):
        runtime.add(conflist({"type": "nope"}), RT)
    with pytest.raises(CniError, match="invalid plugin type"):
        runtime.add(conflist({"type": "../first"}), RT)


def test_version(cni_dir: Path, tmp_path: Path) -> None:
    runtime = CniRuntime([cni_dir], cache_dir=tmp_path / "cache")
    assert "1.0.0" in runtime.version("first")["supportedVersions"]
    (call,) = calls(tmp_path)
    assert call["env"]["CNI_COMMAND"] == "VERSION"
    assert "CNI_CONTAINERID" not in call["env"]


def test_plugin_env_is_inherited_without_stale_cni_vars(
    cni_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNI_IFNAME", "stale0")
    monkeypatch.setenv("CNI_STALE", "1")
    CniRuntime([cni_dir], cache_dir=tmp_path / "cache").add(conflist({"type": "first"}), RT)
    (call,) = calls(tmp_path)
    assert call["env"]["CNI_IFNAME"] == "eth0"
    assert "CNI_STALE" not in call["env"]
    assert os.environ["CNI_STALE"] == "1"
