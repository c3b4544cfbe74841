"""The Kubernetes pod source against a small fake API server (real HTTP, stdlib client)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cni.agent.kube import ApiClient, ApiError, KubePodSource
from cni.agent.repair import UNINITIALIZED_LABEL

UID_WEB = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
UID_HOST = "11111111-2222-3333-4444-555555555555"


def pod(name: str, uid: str, *, phase: str = "Running", host_network: bool = False) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "shop",
            "name": name,
            "uid": uid,
            "labels": {"app": name},
            "annotations": {"sidecar.istio.io/status": "{}"},
        },
        "spec": {"nodeName": "node-1", "hostNetwork": host_network, "containers": [{"name": "istio-proxy"}]},
        "status": {"phase": phase},
    }


class FakeApi:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.fail_pods = False

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path_qs, dict(request.headers), body))
        if request.method == "GET" and request.path == "/api/v1/pods":
            if self.fail_pods:
                return web.json_response({"kind": "Status", "code": 403}, status=403)
            items = [
                pod("web", UID_WEB),
                pod("agent", UID_HOST, host_network=True),
                pod("job", "22222222-2222-2222-2222-222222222222", phase="Succeeded"),
            ]
            return web.json_response({"kind": "PodList", "items": items})
        if request.method == "GET" and request.path == "/api/v1/namespaces":
            items = [{"metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}}]
            return web.json_response({"kind": "NamespaceList", "items": items})
        if request.method == "PATCH":
            return web.json_response({"kind": "Pod"})
        return web.json_response({"kind": "Status", "code": 404}, status=404)


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeApi, str]]:
    fake = FakeApi()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def fake_proc(root: Path) -> Path:
    for pid, uid in ((1, None), (300, UID_WEB), (400, UID_HOST)):
        d = root / str(pid)
        (d / "ns").mkdir(parents=True)
        (d / "cgroup").write_text(f"0::/kubepods/pod{uid}/c\n" if uid else "0::/init.scope\n")
        (d / "ns" / "net").write_text(str(pid))
    return root


async def test_lists_this_nodes_pods_with_namespace_labels_and_netns(
    api: tuple[FakeApi, str], tmp_path: Path
) -> None:
    fake, url = api
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    source = KubePodSource(ApiClient(url, token, None), "node-1", fake_proc(tmp_path / "proc"))

    pods = {p.name: p for p in await source.list_pods()}
    assert set(pods) == {"web", "agent"}  # the finished pod is left out
    web_pod = pods["web"]
    assert web_pod.netns == str(tmp_path / "proc" / "300" / "ns" / "net")
    assert web_pod.namespace_labels == {"istio-injection": "enabled"}
    assert web_pod.labels == {"app": "web"} and web_pod.uid == UID_WEB
    assert pods["agent"].netns is None  # host network: never a repair target

    method, path, headers, _ = fake.requests[0]
    assert (method, path) == ("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1")
    assert headers["Authorization"] == "Bearer tok-1"

    token.write_text("tok-2\n")  # a rotated projected token is picked up on the next request
    assert web_pod.set_label is not None
    await web_pod.set_label(UNINITIALIZED_LABEL, "true")
    method, path, headers, body = fake.requests[-1]
    assert (method, path) == ("PATCH", "/api/v1/namespaces/shop/pods/web")
    assert headers["Content-Type"] == "application/merge-patch+json"
    assert headers["Authorization"] == "Bearer tok-2"
    assert body == {"metadata": {"labels": {UNINITIALIZED_LABEL: "true"}}}


async def test_api_errors_are_raised_with_the_request(api: tuple[FakeApi, str], tmp_path: Path) -> None:
    fake, url = api
    fake.fail_pods = True
    token = tmp_path / "token"
    token.write_text("tok")
    source = KubePodSource(ApiClient(url, token, None), "node-1", tmp_path)
    with pytest.raises(ApiError, match="HTTP 403") as err:
        await source.list_pods()
    assert err.value.status == 403


def test_unreachable_and_tokenless(tmp_path: Path) -> None:
    token = tmp_path / "token"
    with pytest.raises(ApiError, match="token"):
        ApiClient("http://127.0.0.1:9", token, None).get("/api")
    token.write_text("t")
    with pytest.raises(ApiError, match="GET /api"):
        ApiClient("http://127.0.0.1:9", token, None, timeout=2).get("/api")


def test_in_cluster_uses_service_env(tmp_path: Path) -> None:
    client = ApiClient.in_cluster(
        tmp_path, {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    )
    assert client.server == "https://[fd00::1]:6443"
    assert client.token_file == tmp_path / "token" and client.ca_file == tmp_path / "ca.crt"
