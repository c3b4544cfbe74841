"""The kube source against the API test server: every kind, Istio versions as served, missing CRDs."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from support.kubeapi import CORE, KubeApiServer, istio_crds, running, status
from support.kubeapi.clock import FakeClock

from controller.informer.kubeclient import KubeClient
from controller.sources.base import KINDS, Change, IndexedSource, Source
from controller.sources.kube import KubeSource, KubeSourceOptions

Obj = dict[str, Any]


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[Change]] = []

    def __call__(self, batch: Sequence[Change]) -> None:
        self.batches.append(list(batch))

    def changes(self) -> list[tuple[str, str, str]]:
        return [(c.kind, c.key, c.type) for batch in self.batches for c in batch]


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def mesh_objects(istio_version: str = "v1", security_version: str = "v1") -> list[Obj]:
    net, sec = f"networking.istio.io/{istio_version}", f"security.istio.io/{security_version}"
    labels = {"app": "reviews", "version": "v1"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "reviews-v1-abc",
                "namespace": "shop",
                "labels": labels,
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
            "spec": {"serviceAccountName": "reviews", "containers": [{"name": "app", "image": "reviews"}]},
            "status": {"podIP": "10.0.0.7", "phase": "Running"},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "reviews-x1",
                "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "reviews"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": 9080}],
        },
        {
            "apiVersion": net,
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {"hosts": ["reviews"]},
        },
        {
            "apiVersion": net,
            "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {"host": "reviews"},
        },
        {
            "apiVersion": net,
            "kind": "Sidecar",
            "metadata": {"name": "default", "namespace": "shop"},
            "spec": {},
        },
        {
            "apiVersion": sec,
            "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "shop"},
            "spec": {"mtls": {"mode": "STRICT"}},
        },
    ]


@pytest.fixture
async def make_source(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    sources: list[KubeSource] = []

    async def make(api: KubeApiServer, **options: Any) -> KubeSource:
        client = await KubeClient.connect(str(api.write_kubeconfig(tmp_path / "kubeconfig")))
        source = KubeSource(client, KubeSourceOptions(**options), owns_client=True)
        sources.append(source)
        return source

    yield make
    for source in sources:
        await source.stop()


async def test_every_kind_synced_with_indexes_and_batches(make_source: Callable[..., Any]) -> None:
    async with running(CORE + istio_crds()) as api:
        for obj in mesh_objects():
            api.create(obj)
        source: KubeSource = await make_source(api)
        assert isinstance(source, Source) and isinstance(source, IndexedSource)
        seen = Recorder()
        source.subscribe(seen)
        await source.start()
        await asyncio.wait_for(source.wait_synced(), 10)
        assert source.has_synced()
        assert {kind for kind, _, kind_type in seen.changes() if kind_type == "ADDED"} == {
            "Namespace",
            "Pod",
            "Service",
            "EndpointSlice",
            "VirtualService",
            "DestinationRule",
            "Sidecar",
            "PeerAuthentication",
        }
        assert len(seen.batches) <= len(KINDS)  # coalesced, never one batch per object
        assert source.served["VirtualService"] is not None and source.served["VirtualService"].version == "v1"
        pod = source.get("Pod", "shop/reviews-v1-abc")
        assert pod is not None and pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
        assert pod["status"]["podIP"] == "10.0.0.7" and pod["spec"]["serviceAccountName"] == "reviews"
        assert "managedFields" not in pod["metadata"]
        namespace = source.get("Namespace", "shop")
        assert namespace is not None and namespace["metadata"]["labels"]["istio-injection"] == "enabled"
        slices = source.by_index("EndpointSlice", "service-name", "shop/reviews")
        assert [s["metadata"]["name"] for s in slices] == ["reviews-x1"]
        assert [p["metadata"]["name"] for p in source.select("Pod", {"app": "reviews"}, "shop")] == [
            "reviews-v1-abc"
        ]
        assert source.list("Gateway") == [] and source.list("AuthorizationPolicy") == []
        with pytest.raises(ValueError, match="unknown kind"):
            source.list("Deployment")

        # Changes flow as MODIFIED / DELETED with the right objects.
        seen.batches.clear()
        vs = source.get("VirtualService", "shop/reviews")
        assert vs is not None
        api.apply(
            {**vs, "metadata": {"name": "reviews", "namespace": "shop"}, "spec": {"hosts": ["reviews", "r"]}}
        )
        api.remove("DestinationRule", "reviews", "shop")
        await eventually(lambda: len(seen.changes()) == 2)
        deleted, modified = sorted((c for b in seen.batches for c in b), key=lambda c: c.type)
        assert (modified.kind, modified.type) == ("VirtualService", "MODIFIED")
        assert modified.obj["spec"]["hosts"] == ["reviews", "r"]
        assert (deleted.kind, deleted.key, deleted.type) == ("DestinationRule", "shop/reviews", "DELETED")
        assert deleted.obj["spec"] == {"host": "reviews"}


async def test_istio_served_as_v1beta1_only(make_source: Callable[..., Any]) -> None:
    older_istio = istio_crds(networking=("v1beta1", "v1alpha3"), security=("v1beta1",))
    async with running(CORE + older_istio) as api:
        for obj in mesh_objects("v1beta1", "v1beta1"):
            api.create(obj)
        source: KubeSource = await make_source(api)
        await source.start()
        await asyncio.wait_for(source.wait_synced(), 10)
        served = source.served["VirtualService"]
        assert served is not None and served.api_version == "networking.istio.io/v1beta1"
        vs = source.get("VirtualService", "shop/reviews")
        assert vs is not None and vs["apiVersion"] == "networking.istio.io/v1beta1"
        pa = source.get("PeerAuthentication", "shop/default")
        assert pa is not None and pa["spec"]["mtls"]["mode"] == "STRICT"
        await eventually(lambda: api.open_watches == len(KINDS))
        watched = {r.path for r in api.requests_for("watch")}
        assert "/apis/networking.istio.io/v1beta1/virtualservices" in watched
        assert not any("networking.istio.io/v1/" in path for path in watched)


async def test_missing_crd_is_empty_until_it_appears_and_deleted_when_it_goes(
    make_source: Callable[..., Any],
) -> None:
    crds = [crd for crd in istio_crds() if crd.kind not in ("Sidecar", "AuthorizationPolicy")]
    async with running(CORE + tuple(crds)) as api:
        for obj in mesh_objects():
            if obj["kind"] != "Sidecar":
                api.create(obj)
        source: KubeSource = await make_source(api)
        seen = Recorder()
        source.subscribe(seen)
        await source.start()
        await asyncio.wait_for(source.wait_synced(), 10)
        assert source.served["Sidecar"] is None and source.list("Sidecar") == []
        assert source.get("AuthorizationPolicy", "shop/x") is None
        seen.batches.clear()

        sidecar_crd = next(crd for crd in istio_crds() if crd.kind == "Sidecar")
        api.register(sidecar_crd)
        api.create(mesh_objects()[6])
        await source.rediscover()
        await eventually(lambda: ("Sidecar", "shop/default", "ADDED") in seen.changes())
        assert source.served["Sidecar"] is not None

        api.unregister("networking.istio.io", "sidecars")
        await source.rediscover()
        await eventually(lambda: ("Sidecar", "shop/default", "DELETED") in seen.changes())
        assert source.list("Sidecar") == []


async def test_periodic_rediscovery_picks_up_a_new_crd(make_source: Callable[..., Any]) -> None:
    crds = tuple(crd for crd in istio_crds() if crd.kind != "Gateway")
    async with running(CORE + crds) as api:
        api.create(mesh_objects()[0])
        source: KubeSource = await make_source(api, rediscovery_interval=0.05)
        await source.start()
        await asyncio.wait_for(source.wait_synced(), 10)
        api.register(next(crd for crd in istio_crds() if crd.kind == "Gateway"))
        api.create(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "Gateway",
                "metadata": {"name": "gw", "namespace": "shop"},
                "spec": {"selector": {"istio": "ingressgateway"}},
            }
        )
        await eventually(lambda: source.get("Gateway", "shop/gw") is not None)


async def test_pod_selectors_are_passed_to_the_server(make_source: Callable[..., Any]) -> None:
    async with running(CORE + istio_crds()) as api:
        for obj in mesh_objects()[:2]:
            api.create(obj)
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "job-done", "namespace": "shop"},
                "status": {"phase": "Succeeded"},
            }
        )
        source: KubeSource = await make_source(
            api, pod_field_selector="status.phase!=Succeeded,status.phase!=Failed"
        )
        await source.start()
        await asyncio.wait_for(source.wait_synced(), 10)
        assert [p["metadata"]["name"] for p in source.list("Pod")] == ["reviews-v1-abc"]
        pod_lists = api.requests_for("list", "pods")
        assert pod_lists[0].query["fieldSelector"] == "status.phase!=Succeeded,status.phase!=Failed"
        assert "fieldSelector" not in api.requests_for("list", "services")[0].query


async def test_discovery_failure_is_retried(make_source: Callable[..., Any]) -> None:
    async with running(CORE + istio_crds()) as api:
        api.create(mesh_objects()[0])
        api.inject(status.StatusError(status.status(503, "ServiceUnavailable", "starting")), verb="discovery")
        source: KubeSource = await make_source(api)
        source._clock = FakeClock()
        await source.start()
        await asyncio.wait_for(source.wait_synced(), 10)
        assert source.get("Namespace", "shop") is not None


async def test_connect_with_a_kubeconfig_context(tmp_path: Path) -> None:
    async with running(CORE) as api:
        path = api.write_kubeconfig(tmp_path / "kubeconfig", context="staging")
        source = await KubeSource.connect(str(path), "staging", rediscovery_interval=30.0)
        try:
            assert source.options.rediscovery_interval == 30.0
            await source.start()
            await asyncio.wait_for(source.wait_synced(), 10)
        finally:
            await source.stop()
        with pytest.raises(ValueError, match="context nope"):
            await KubeSource.connect(str(path), "nope")


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 (openssl), as a cluster's API server would have."""
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    rsa = ["-newkey", "rsa:2048", "-nodes", "-days", "1"]
    sign = ["-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-days", "1", "-extfile", ext]
    commands = [
        ["openssl", "req", "-x509", *rsa, "-subj", "/CN=test-ca", "-keyout", ca_key, "-out", ca_crt],
        ["openssl", "req", *rsa, "-subj", "/CN=kube-apiserver", "-keyout", key, "-out", csr],
        ["openssl", "x509", "-req", "-in", csr, *sign, "-out", crt],
    ]
    for command in commands:
        subprocess.run([str(part) for part in command], check=True, capture_output=True)
    return ca_crt, crt, key


async def test_in_cluster_service_account_over_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca_crt, crt, key = make_tls(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)
    async with running(CORE + istio_crds(), ssl_context=context, token="sa-token") as api:
        api.create(mesh_objects()[0])
        account = tmp_path / "serviceaccount"
        account.mkdir()
        (account / "token").write_text("sa-token")
        (account / "ca.crt").write_bytes(ca_crt.read_bytes())
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
        client = await KubeClient.connect(service_account_dir=account)
        assert client.host == api.url
        source = KubeSource(client, owns_client=True)
        try:
            await source.start()
            await asyncio.wait_for(source.wait_synced(), 10)
            assert source.get("Namespace", "shop") is not None
        finally:
            await source.stop()
