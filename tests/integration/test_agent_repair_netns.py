"""Repair against real network namespaces and iptables: a pod netns without capture gets it.

Needs root. Each test makes its own netns (``ip netns add``) and removes it in a
fixture finaliser, so a failing assertion leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from cni import capture
from cni.agent.kube import ApiClient, KubePodSource
from cni.agent.repair import Mode, PodRecord, Repairer
from mizzen import logs

pytestmark = [
    pytest.mark.root,
]

ANNOTATIONS = {
    "sidecar.istio.io/status": '{"containers":["istio-proxy"]}',
    "traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
}


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"mzagent-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


class OnePod:
    def __init__(self, pod: PodRecord) -> None:
        self.pod = pod

    async def list_pods(self) -> list[PodRecord]:
        return [self.pod]


def pod_in(netns_path: str) -> PodRecord:
    return PodRecord(
        namespace="shop",
        name="web",
        uid=str(uuid.uuid4()),
        labels={},
        annotations=ANNOTATIONS,
        netns=netns_path,
        namespace_labels={"istio-injection": "enabled"},
    )


async def test_apply_programs_capture_in_a_pod_netns(netns: str) -> None:
    path = f"/run/netns/{netns}"
    assert not capture.is_installed(path)
    repairer = Repairer(OnePod(pod_in(path)), Mode.APPLY, ["kube-system"], logs.get("test"))

    outcomes = await repairer.run_once()
    assert [o.action for o in outcomes] == ["applied"]
    assert capture.is_installed(path)
    assert capture.check(path, ANNOTATIONS) == []  # exactly the plugin's rules, annotations honoured

    before = capture.read_nat(path)
    fresh = Repairer(OnePod(pod_in(path)), Mode.APPLY, ["kube-system"], logs.get("test"))
    assert await fresh.run_once() == []  # already captured: nothing to do
    assert capture.read_nat(path) == before


async def test_label_mode_leaves_the_netns_alone(netns: str) -> None:
    path = f"/run/netns/{netns}"
    labelled: list[tuple[str, str]] = []

    async def set_label(key: str, value: str) -> None:
        labelled.append((key, value))

    pod = pod_in(path)
    pod = PodRecord(**{**{f: getattr(pod, f) for f in pod.__dataclass_fields__}, "set_label": set_label})
    outcomes = await Repairer(OnePod(pod), Mode.LABEL, ["kube-system"], logs.get("test")).run_once()
    assert [o.action for o in outcomes] == ["labelled"]
    assert labelled == [("cni.mizzen.io/uninitialized", "true")]
    assert not capture.is_installed(path)


# -- the whole path on a node: API pod list -> /proc cgroup scan -> netns -> rules -----------------


@contextlib.contextmanager
def pod_process(netns: str, uid: str) -> Iterator[int]:
    """A process in ``netns`` placed in a cgroup named like a pod's, as the kubelet would."""
    proc = subprocess.Popen(["ip", "netns", "exec", netns, "sleep", "300"])
    cgroup: Path | None = None
    try:
        target = os.stat(f"/run/netns/{netns}").st_ino
        deadline = time.monotonic() + 10
        while os.stat(f"/proc/{proc.pid}/ns/net").st_ino != target:  # until ip has entered the netns
            assert time.monotonic() < deadline, "process never entered the netns"
            time.sleep(0.01)
        for hierarchy in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
            candidate = Path(hierarchy) / f"mizzen-test-pod{uid}"
            try:
                candidate.mkdir()
            except OSError:
                continue
            try:
                (candidate / "cgroup.procs").write_text(str(proc.pid))
            except OSError:
                candidate.rmdir()
                continue
            cgroup = candidate
            break
        if cgroup is None:
            pytest.skip("no writable cgroup hierarchy to stand for the kubelet's")
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
        if cgroup is not None:
            deadline = time.monotonic() + 5
            while True:
                try:
                    cgroup.rmdir()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[str, list[dict]]]:
    pods: list[dict] = []

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/api/v1/pods":
            return web.json_response({"items": pods})
        if request.path == "/api/v1/namespaces":
            return web.json_response(
                {"items": [{"metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}}]}
            )
        return web.json_response({}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", pods
    finally:
        await runner.cleanup()


async def test_kube_source_finds_the_netns_through_proc_and_repairs_it(
    netns: str, api: tuple[str, list[dict]], tmp_path: Path
) -> None:
    url, pods = api
    uid = str(uuid.uuid4())
    pods.append(
        {
            "metadata": {"namespace": "shop", "name": "web", "uid": uid, "annotations": ANNOTATIONS},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app"}, {"name": "istio-proxy"}]},
            "status": {"phase": "Running"},
        }
    )
    token = tmp_path / "token"
    token.write_text("t")
    with pod_process(netns, uid) as pid:
        source = KubePodSource(ApiClient(url, token, None), "node-1")
        [record] = await source.list_pods()
        assert record.netns == f"/proc/{pid}/ns/net"
        outcomes = await Repairer(source, Mode.APPLY, ["kube-system"], logs.get("test")).run_once()
        assert [o.action for o in outcomes] == ["applied"]
        assert capture.is_installed(f"/run/netns/{netns}")
