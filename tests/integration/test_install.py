"""``mizzen install``/``uninstall`` and the webhooks' certificates against the API test server."""

from __future__ import annotations

import asyncio
import base64
import ssl
import sys
from pathlib import Path

import aiohttp
import orjson
import structlog
from support.kubeapi import running
from support.kubeapi.cluster import INSTALL, make_ready, serve_crds

from controller.informer.kubeclient import KubeClient
from controller.webhooks import certs
from controller.webhooks.run import Webhooks
from controller.webhooks.server import WebhookOptions
from mizzen import cli
from mizzen.manifests import render, resolve


async def _run_cli(argv: list[str]) -> int:
    # The CLI runs its own event loop: off this one, in a thread.
    return await asyncio.to_thread(cli.main, argv)


async def test_install_applies_waits_and_uninstall_removes(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    async with running(INSTALL) as api:
        serve_crds(api)
        kubeconfig = str(api.write_kubeconfig(tmp_path / "kubeconfig"))
        objects = render(resolve())
        # Nothing becomes ready by itself here: install reports what is missing and fails.
        assert await _run_cli(["install", "--kubeconfig", kubeconfig, "--timeout", "1"]) == 1
        out = capsys.readouterr().out
        assert (
            "Not ready after 1s" in out and "Deployment mizzen-system/mizzen-controller: 0/2 available" in out
        )
        for obj in objects:
            meta = obj["metadata"]
            assert api.get(obj["kind"], meta["name"], meta.get("namespace")) is not None, obj["kind"]
        # The Istio kinds are served once their CRDs are applied.
        assert api.get("CustomResourceDefinition", "virtualservices.networking.istio.io", None)["status"]
        # A controller-owned field survives a re-install (server-side apply leaves others' fields alone).
        hook = api.get("MutatingWebhookConfiguration", "mizzen-sidecar-injector", None)
        hook["webhooks"][0]["clientConfig"]["caBundle"] = "Q0E="
        api.apply(hook)
        make_ready(api, "Deployment", "mizzen-controller", "mizzen-system")
        make_ready(api, "DaemonSet", "mizzen-cni-node", "mizzen-system")
        make_ready(api, "Deployment", "istio-ingressgateway", "mizzen-system")
        assert await _run_cli(["install", "--kubeconfig", kubeconfig, "--timeout", "20"]) == 0
        assert "Mizzen is installed" in capsys.readouterr().out
        hook = api.get("MutatingWebhookConfiguration", "mizzen-sidecar-injector", None)
        assert hook["webhooks"][0]["clientConfig"]["caBundle"] == "Q0E="
        assert any(m["manager"] == "mizzen" for m in hook["metadata"]["managedFields"])
        # A changed value converges; a value no longer applied is removed.
        assert (
            await _run_cli(
                ["install", "--kubeconfig", kubeconfig, "--no-wait", "--set", "controller.replicas=3"]
            )
            == 0
        )
        assert api.get("Deployment", "mizzen-controller", "mizzen-system")["spec"]["replicas"] == 3

        assert await _run_cli(["uninstall", "--kubeconfig", kubeconfig]) == 0
        for obj in objects:
            meta = obj["metadata"]
            live = api.get(obj["kind"], meta["name"], meta.get("namespace"))
            assert (live is not None) == (obj["kind"] == "CustomResourceDefinition"), obj["kind"]
        assert await _run_cli(["uninstall", "--kubeconfig", kubeconfig, "--purge"]) == 0
        assert api.get("CustomResourceDefinition", "virtualservices.networking.istio.io", None) is None


async def test_webhooks_issue_a_certificate_publish_its_ca_and_serve(tmp_path: Path) -> None:
    # The CLI test before this one set structlog up on pytest's captured stderr, closed since.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    async with running(INSTALL) as api:
        serve_crds(api)
        for obj in render(resolve()):
            if obj["kind"] in ("Namespace", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
                api.apply(obj)
        client = await KubeClient.connect(str(api.write_kubeconfig(tmp_path / "kubeconfig")))
        first = Webhooks(WebhookOptions(port=0, identity="replica-a"), client, host="127.0.0.1")
        second = Webhooks(WebhookOptions(port=0, identity="replica-b"), client, host="127.0.0.1")
        try:
            await first.start()
            await second.start()
            assert first.server is not None and second.server is not None
            for _ in range(200):
                hook = api.get("MutatingWebhookConfiguration", "mizzen-sidecar-injector", None)
                bundles = [w["clientConfig"].get("caBundle") for w in hook["webhooks"]]
                if all(bundles) and second.server.loaded.is_set() and first.server.loaded.is_set():
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the caBundle was never published")
            leaders = [w for w in (first, second) if w.elector is not None and w.elector.is_leader]
            assert len(leaders) == 1
            secret = api.get("Secret", "mizzen-webhook-certs", "mizzen-system")
            ca = base64.b64decode(secret["data"]["ca.crt"])
            assert base64.b64decode(bundles[0]) == ca
            validating = api.get("ValidatingWebhookConfiguration", "mizzen-validator", None)
            assert base64.b64decode(validating["webhooks"][0]["clientConfig"]["caBundle"]) == ca
            serving = base64.b64decode(secret["data"]["tls.crt"])
            assert certs.signed_by(serving, ca)
            # Both replicas serve the shared certificate; the API server's check: the caBundle and the name.
            context = ssl.create_default_context(cadata=ca.decode())
            review = {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "u1",
                    "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
                    "operation": "CREATE",
                    "namespace": "shop",
                    "object": {"metadata": {"name": "r", "namespace": "shop"}, "spec": {"hosts": [7]}},
                },
            }
            for hooks in (first, second):
                await hooks.server.loaded.wait()  # type: ignore[union-attr]
                for _ in range(100):
                    if hooks.server._runner is not None:  # type: ignore[union-attr]
                        break
                    await asyncio.sleep(0.05)
                connector = aiohttp.TCPConnector(ssl=context)
                async with aiohttp.ClientSession(connector=connector) as session:
                    url = f"https://127.0.0.1:{hooks.port}/validate"
                    headers = {"Host": "mizzen-controller.mizzen-system.svc"}
                    async with session.post(
                        url,
                        data=orjson.dumps(review),
                        server_hostname="mizzen-controller.mizzen-system.svc",
                        headers=headers,
                    ) as response:
                        answer = await response.json()
                assert answer["response"]["uid"] == "u1" and answer["response"]["allowed"] is False
                assert "hosts[0]" in answer["response"]["status"]["message"]
        finally:
            await first.stop()
            await second.stop()
            await client.close()
