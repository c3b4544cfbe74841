"""The webhooks end to end: the API test server calls the controller's /inject and /validate as a real API
server does (the installed Mutating/ValidatingWebhookConfigurations, their selectors, TLS verified against
the caBundle the controller published), for pods and Istio resources written through the API."""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from support.kubeapi import KubeApiServer, istio_crds, running
from support.kubeapi.cluster import INSTALL

from controller.informer.kubeclient import KubeClient
from controller.informer.listwatch import ApiError
from controller.webhooks import certs
from controller.webhooks.run import Webhooks
from controller.webhooks.server import WebhookOptions
from mizzen.manifests import render, resolve

Obj = dict[str, Any]


@asynccontextmanager
async def cluster(
    tmp_path: Path, *, minor: str = "31"
) -> AsyncIterator[tuple[KubeApiServer, KubeClient, Webhooks]]:
    """An API server with Mizzen's webhook configurations installed, one controller replica serving them."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    async with running(INSTALL + istio_crds()) as api:
        api.version = {**api.version, "minor": minor, "gitVersion": f"v1.{minor}.0"}
        for obj in render(resolve()):
            if obj["kind"] in ("Namespace", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
                api.apply(obj)
        client = await KubeClient.connect(str(api.write_kubeconfig(tmp_path / "kubeconfig")))
        hooks = Webhooks(WebhookOptions(port=0, identity="replica-a"), client, host="127.0.0.1")
        await hooks.start()
        try:
            for _ in range(400):
                server = hooks.server
                hook = api.get("MutatingWebhookConfiguration", "mizzen-sidecar-injector", None)
                published = all(w["clientConfig"].get("caBundle") for w in hook["webhooks"])
                if published and server is not None and server.loaded.is_set() and hooks.port:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the webhooks never became ready (caBundle, serving certificate)")
            # The cluster network: the Service the configurations name reaches this replica.
            api.admission.services[("mizzen-system", "mizzen-controller", 443)] = ("127.0.0.1", hooks.port)
            for name, labels in (
                ("shop", {"istio-injection": "enabled"}),
                ("plain", {}),
                ("kube-system", {"istio-injection": "enabled"}),
            ):
                api.create(
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
                )
            yield api, client, hooks
        finally:
            await hooks.stop()
            await client.close()


def pod(namespace: str, labels: Obj | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "reviews-v1-",
            "namespace": namespace,
            "labels": labels or {"app": "reviews"},
        },
        "spec": {
            "containers": [
                {
                    "name": "reviews",
                    "image": "example/reviews:1",
                    "ports": [{"name": "http", "containerPort": 9080}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 9080}},
                }
            ]
        },
    }


async def create(client: KubeClient, obj: Obj) -> Obj:
    namespace = obj["metadata"]["namespace"]
    if obj["kind"] == "Pod":
        path = f"/api/v1/namespaces/{namespace}/pods"
    else:
        path = f"/apis/networking.istio.io/v1/namespaces/{namespace}/{obj['kind'].lower()}s"
    result: Obj = await client.request("POST", path, body=obj)
    return result


def sidecar(pod: Obj) -> Obj | None:
    spec = pod["spec"]
    return next(
        (c for c in [*spec.get("initContainers", ()), *spec["containers"]] if c["name"] == "istio-proxy"),
        None,
    )


async def test_pods_created_through_the_api_get_the_sidecar_by_istios_selection(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (api, client, _):
        injected = await create(client, pod("shop"))
        proxy = sidecar(injected)
        assert proxy is not None, injected["spec"]
        # Kubernetes 1.31: a native sidecar (a restartable init container), and no capture init container.
        assert proxy["restartPolicy"] == "Always" and proxy in injected["spec"]["initContainers"]
        assert [c["name"] for c in injected["spec"]["initContainers"]] == ["istio-proxy"]
        assert proxy["securityContext"]["runAsUser"] == 1337
        assert "sidecar.istio.io/status" in injected["metadata"]["annotations"]
        # The app's probe now goes through the sidecar's health port, which knows the original.
        probe = injected["spec"]["containers"][0]["readinessProbe"]["httpGet"]
        assert probe["port"] == 15020 and probe["path"] == "/app-health/reviews/readyz"
        # The name was generated after the injector ran (it saw only generateName), as on a real server.
        assert injected["metadata"]["name"].startswith("reviews-v1-")
        stored = api.get("Pod", injected["metadata"]["name"], "shop")
        assert sidecar(stored) is not None

        opted_out = await create(client, pod("shop", {"app": "reviews", "sidecar.istio.io/inject": "false"}))
        assert sidecar(opted_out) is None
        assert sidecar(await create(client, pod("plain"))) is None
        opted_in = await create(client, pod("plain", {"app": "reviews", "sidecar.istio.io/inject": "true"}))
        assert sidecar(opted_in) is not None
        # kube-system is never sent to the injector, whatever its labels say.
        assert sidecar(await create(client, pod("kube-system"))) is None
        calls = [name for name, op in api.admission.calls if op == "CREATE" and "sidecar-injector" in name]
        assert calls.count("namespace.sidecar-injector.mizzen.io") == 1  # shop's first pod only
        assert calls.count("object.sidecar-injector.mizzen.io") == 1  # plain's opted-in pod


async def test_classic_sidecar_before_native_sidecars(tmp_path: Path) -> None:
    async with cluster(tmp_path, minor="27") as (_, client, _hooks):
        injected = await create(client, pod("shop"))
        assert next(c["name"] for c in injected["spec"]["containers"]) == "istio-proxy"
        assert not injected["spec"].get("initContainers")


async def test_invalid_istio_resources_are_refused_with_the_field(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (api, client, _):
        good = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
        }
        created = await create(client, good)
        assert created["metadata"]["name"] == "reviews"
        bad = {**good, "metadata": {"name": "broken", "namespace": "shop"},
               "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"},
                                                                   "weight": -5}]}]}}  # fmt: skip
        with pytest.raises(ApiError) as denied:
            await create(client, bad)
        assert denied.value.code == 422  # the webhook's own code (Invalid), passed through
        message = str(denied.value)
        assert 'admission webhook "validation.mizzen.io" denied the request' in message
        assert "weight" in message
        assert api.get("VirtualService", "broken", "shop") is None
        # An update that breaks a stored resource is refused too, and the stored one is kept.
        path = "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/reviews"
        with pytest.raises(ApiError):
            await client.request(
                "PATCH",
                path,
                body={"spec": {"http": [{"route": [{"destination": {"host": "reviews"}, "weight": -1}]}]}},
                content_type="application/merge-patch+json",
            )
        assert api.get("VirtualService", "reviews", "shop")["spec"] == good["spec"]


async def test_failure_policies_when_the_controller_is_down(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (api, client, hooks):
        await hooks.stop()
        # Injection fails closed (Istio's default): no pod starts outside the mesh in a labelled namespace.
        with pytest.raises(ApiError) as failed:
            await create(client, pod("shop"))
        assert failed.value.code == 500 and "failed calling webhook" in str(failed.value)
        assert not [p for p in api.storage.current("pods").values() if p["metadata"]["namespace"] == "shop"]
        # Namespaces the injector does not select are not held up by it.
        assert sidecar(await create(client, pod("plain"))) is None
        # Validation fails open: Istio resources can still be written (the controller validates on read).
        vs = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "anyway", "namespace": "shop"},
            "spec": {"hosts": ["reviews"]},
        }
        assert (await create(client, vs))["metadata"]["name"] == "anyway"


async def test_a_webhook_answer_with_a_wrong_ca_is_a_failed_call(tmp_path: Path) -> None:
    """The API server checks the serving certificate against the caBundle: a foreign CA fails the call."""
    async with cluster(tmp_path) as (api, client, _):
        config = api.get("MutatingWebhookConfiguration", "mizzen-sidecar-injector", None)
        other = certs.make_ca("someone else")
        for hook in config["webhooks"]:
            hook["clientConfig"]["caBundle"] = base64.b64encode(other.cert).decode()
        api.apply(config)
        with pytest.raises(ApiError) as failed:
            await create(client, pod("shop"))
        assert "failed calling webhook" in str(failed.value) and "CERTIFICATE_VERIFY_FAILED" in str(
            failed.value
        )
