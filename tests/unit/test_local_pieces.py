"""The local node's pure parts: conflist, settings, runtime args, CNI_PATH, process argv, CLI parsing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mizzen import cli
from mizzen.local import cnipath, netns, procs
from mizzen.local.conflist import build_conflist
from mizzen.local.node import LocalNode, NodeConfig, NodeError, PodSpec, result_ip, runtime_args, runtime_conf
from mizzen.local.state import PodRecord, ProcessRecord, StateDir


def test_conflist_with_and_without_capture(tmp_path: Path) -> None:
    full = build_conflist(
        bridge="mzn0", subnet="10.247.0.0/24", ipam_dir=tmp_path, capture=True, log_level="debug"
    )
    assert full["cniVersion"] == "1.0.0" and full["name"] == "mizzen-local"
    bridge, capture = full["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == "mzn0"
    assert bridge["isGateway"] is True and bridge["ipMasq"] is False
    assert bridge["ipam"] == {
        "type": "host-local",
        "dataDir": str(tmp_path),
        "ranges": [[{"subnet": "10.247.0.0/24"}]],
    }
    assert capture == {"type": "mizzen-cni", "log_level": "debug"}

    plain = build_conflist(
        bridge="b", subnet="10.248.1.0/24", ipam_dir=tmp_path, capture=False, service_cidr="10.96.0.0/16"
    )
    assert [p["type"] for p in plain["plugins"]] == ["bridge"]
    assert plain["plugins"][0]["ipam"]["routes"] == [{"dst": "10.96.0.0/16"}]


@pytest.mark.parametrize(
    "bad",
    [
        {"subnet": "8.8.8.0/24"},
        {"subnet": "fd00::/64"},
        {"subnet": "nonsense"},
        {"service_cidr": "1.0.0.0/8"},
        {"bridge": "a-name-that-is-too-long"},
        {"netns_prefix": "Upper-"},
        {"netns_prefix": "nodash"},
    ],
)
def test_config_rejects_anything_outside_a_private_network(bad: dict[str, str]) -> None:
    with pytest.raises(NodeError):
        NodeConfig(**bad).validate()  # type: ignore[arg-type]


def test_config_round_trips_through_json(tmp_path: Path) -> None:
    config = NodeConfig(state_dir=tmp_path, bridge="mzt1", capture=False, cni_plugin=tmp_path / "p")
    assert NodeConfig.from_json(config.to_json()) == config


def test_open_prefers_the_saved_settings(tmp_path: Path) -> None:
    saved = NodeConfig(state_dir=tmp_path / "s", bridge="mzt2", subnet="10.248.9.0/24", capture=False)
    StateDir(saved.state_dir).root.mkdir()
    (saved.state_dir / "node.json").write_text(__import__("json").dumps(saved.to_json()))
    node = LocalNode.open(NodeConfig(state_dir=tmp_path / "s", bridge="other0"))
    assert node.config == saved


def test_netns_names_are_validated(tmp_path: Path) -> None:
    node = LocalNode(NodeConfig(state_dir=tmp_path))
    assert node.netns_name("cart", "shop") == "mzn-shop-cart"
    for bad in ("Cart", "-x", "a_b", ""):
        with pytest.raises(NodeError):
            node.netns_name(bad)


def _pod() -> PodRecord:
    return PodRecord(
        name="cart",
        namespace="shop",
        netns="mzn-shop-cart",
        container_id="abc",
        uid="u-1",
        labels={"app": "cart"},
        annotations={"sidecar.istio.io/status": "{}"},
        namespace_labels={"istio-injection": "enabled"},
    )


def test_runtime_args_carry_pod_and_namespace_metadata() -> None:
    args = runtime_args(_pod())
    assert args == {
        "mizzen": {
            "pod": {
                "metadata": {
                    "name": "cart",
                    "namespace": "shop",
                    "uid": "u-1",
                    "labels": {"app": "cart"},
                    "annotations": {"sidecar.istio.io/status": "{}"},
                }
            },
            "namespace": {
                "metadata": {
                    "name": "shop",
                    "annotations": {},
                    "labels": {"kubernetes.io/metadata.name": "shop", "istio-injection": "enabled"},
                }
            },
        }
    }


def test_runtime_conf_is_what_a_kubelet_runtime_sends() -> None:
    rt = runtime_conf(_pod())
    assert rt.container_id == "abc"
    assert rt.netns == "/run/netns/mzn-shop-cart"
    assert rt.ifname == "eth0"
    assert dict(rt.cni_args) == {
        "K8S_POD_NAMESPACE": "shop",
        "K8S_POD_NAME": "cart",
        "K8S_POD_INFRA_CONTAINER_ID": "abc",
        "K8S_POD_UID": "u-1",
    }


def test_result_ip() -> None:
    result = {"ips": [{"address": "fd00::2/64"}, {"address": "10.247.0.7/24", "gateway": "10.247.0.1"}]}
    assert result_ip(result) == "10.247.0.7"
    assert result_ip({}) is None


def test_pod_record_round_trips() -> None:
    pod = _pod()
    pod.processes.append(ProcessRecord(pid=5, argv=["sleep", "1"], uid=1337, gid=1337, start_time=9))
    assert PodRecord.from_json(pod.to_json()) == pod


def test_threads_sharing_a_node_take_turns_with_its_state(tmp_path: Path) -> None:
    # A load generator thread and the test's main thread both start processes in one pod: each
    # read-modify-write of the pod record must see the other's, not walk in as if it were nested.
    state = StateDir(tmp_path / "state")
    state.save_pod(_pod())
    errors: list[BaseException] = []

    def add(first_pid: int) -> None:
        try:
            for pid in range(first_pid, first_pid + 200):
                with state.locked():
                    pod = state.load_pod("mzn-shop-cart")
                    assert pod is not None
                    with state.locked():  # re-entrant within one thread
                        record = ProcessRecord(pid=pid, argv=["true"], uid=0, gid=0, start_time=1)
                        pod.processes.append(record)
                        state.save_pod(pod)
        except BaseException as exc:  # reported below, with the thread's own traceback in exc
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(base,)) for base in (1000, 2000, 3000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    pod = state.load_pod("mzn-shop-cart")
    assert pod is not None
    expected = [*range(1000, 1200), *range(2000, 2200), *range(3000, 3200)]
    assert sorted(p.pid for p in pod.processes) == expected
    assert not list(state.pods_dir.glob(".*.tmp"))


def test_hosts_file_names_the_pod() -> None:
    text = netns.hosts_file("cart", "10.247.0.7")
    assert "127.0.0.1\tlocalhost" in text
    assert text.splitlines()[-1] == "10.247.0.7\tcart"


def test_pod_argv_drops_privileges_after_entering_the_netns() -> None:
    assert procs.pod_argv("n", ["id"], 0, 0) == ["ip", "netns", "exec", "n", "id"]
    assert procs.pod_argv("n", ["id", "-u"], 1337, 1337) == [
        "ip",
        "netns",
        "exec",
        "n",
        "setpriv",
        "--reuid=1337",
        "--regid=1337",
        "--clear-groups",
        "--",
        "id",
        "-u",
    ]


def test_cni_path_links_system_plugins_and_ours(tmp_path: Path) -> None:
    system = tmp_path / "system"
    system.mkdir()
    for name in ("bridge", "host-local"):
        (system / name).write_text("#!/bin/sh\n")
    ours = tmp_path / "mizzen-cni"
    ours.write_text("#!/bin/sh\n")
    ours.chmod(0o755)
    bin_dir = tmp_path / "bin"

    cnipath.populate(bin_dir, system, cnipath.find_capture_plugin(ours))
    assert {p.name: p.readlink() for p in bin_dir.iterdir()} == {
        "bridge": system / "bridge",
        "host-local": system / "host-local",
        "mizzen-cni": ours,
    }
    cnipath.populate(bin_dir, system, None)  # capture turned off: our link goes
    assert sorted(p.name for p in bin_dir.iterdir()) == ["bridge", "host-local"]


def test_find_capture_plugin_rejects_non_executables(tmp_path: Path) -> None:
    plain = tmp_path / "mizzen-cni"
    plain.write_text("")
    with pytest.raises(cnipath.PluginNotFound):
        cnipath.find_capture_plugin(plain)


def test_cli_exec_takes_everything_after_double_dash_as_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, object] = {}

    class FakeNode:
        def run(self, pod: str, argv: list[str], *, namespace: str, uid: int, gid: int | None) -> int:
            seen.update(pod=pod, argv=argv, namespace=namespace, uid=uid, gid=gid)
            return 3

    monkeypatch.setattr(cli, "_open_node", lambda args: FakeNode())
    rc = cli.main(
        ["local", "exec", "web", "-n", "shop", "--uid", "1337", "--", "sh", "-c", "exit 3", "--uid"]
    )
    assert rc == 3
    assert seen == {
        "pod": "web",
        "argv": ["sh", "-c", "exit 3", "--uid"],
        "namespace": "shop",
        "uid": 1337,
        "gid": None,
    }


def test_cli_inject_sets_what_the_capture_decision_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    specs: list[PodSpec] = []

    class FakeNode:
        def add_pod(self, spec: PodSpec) -> PodRecord:
            specs.append(spec)
            return _pod()

    monkeypatch.setattr(cli, "_open_node", lambda args: FakeNode())
    assert cli.main(["local", "pod", "add", "cart", "-n", "shop", "--inject", "-l", "app=cart"]) == 0
    (spec,) = specs
    assert spec.namespace_labels == {"istio-injection": "enabled"}
    assert "sidecar.istio.io/status" in spec.annotations
    assert spec.labels == {"app": "cart"}


def test_inject_options_satisfy_the_plugins_capture_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    pod_module = pytest.importorskip("cni.pod")
    specs: list[PodSpec] = []

    class FakeNode:
        def add_pod(self, spec: PodSpec) -> PodRecord:
            specs.append(spec)
            return _pod()

    monkeypatch.setattr(cli, "_open_node", lambda args: FakeNode())
    cli.main(["local", "pod", "add", "cart", "-n", "shop", "--inject"])
    cli.main(["local", "pod", "add", "plain", "-n", "shop"])
    injected, plain = (
        PodRecord(
            name=s.name,
            namespace=s.namespace,
            netns="n",
            container_id="c",
            uid="u",
            labels=dict(s.labels),
            annotations=dict(s.annotations),
            namespace_labels=dict(s.namespace_labels),
        )
        for s in specs
    )
    args = runtime_args(injected)["mizzen"]
    assert pod_module.capture_decision(args["pod"], args["namespace"])[0] is True
    args = runtime_args(plain)["mizzen"]
    assert pod_module.capture_decision(args["pod"], args["namespace"])[0] is False
