"""The CA on the Kubernetes source, against the API test server: the self-signed CA persisted in the Secret
``istio-ca-secret`` (and read back by the next start), a plug-in CA from ``cacerts`` preferred, the root
published to every namespace as ConfigMap ``istio-ca-root-cert``, and callers authenticated by TokenReview
with audience ``istio-ca``."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from support.kubeapi import CORE, running

from controller.ca import setup
from controller.ca.authority import CaMaterial
from controller.ca.store import RootPublisher
from controller.ca.tokens import AuthError, TokenReviewer


def _namespace(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


async def test_kube_ca_persists_publishes_and_reviews_tokens(tmp_path: Path) -> None:
    async with running(CORE) as api:
        for ns in ("istio-system", "shop", "default"):
            api.create(_namespace(ns))
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        first = await setup.kube_ca(str(kubeconfig), None)
        try:
            secret = api.get("Secret", "istio-ca-secret", "istio-system")
            assert secret is not None and secret["type"] == "istio.io/ca-root"
            assert base64.b64decode(secret["data"]["ca-cert.pem"]) == first.authority.material.cert
            assert first.publisher is not None
            assert await first.publisher.publish_all() == 3
            for ns in ("istio-system", "shop", "default"):
                cm = api.get("ConfigMap", "istio-ca-root-cert", ns)
                assert cm is not None and cm["data"]["root-cert.pem"] == first.authority.root_pem.decode()
            assert await first.publisher.publish_all() == 0  # already right: nothing written
            # A caller's token, reviewed by the API server for audience istio-ca.
            reviewer = first.service.authenticator
            assert isinstance(reviewer, TokenReviewer)
            good = api.issue_token("shop", "web", audiences=["istio-ca"], pod="web-1")
            caller = await reviewer.authenticate(good)
            assert (caller.namespace, caller.service_account, caller.pod) == ("shop", "web", "web-1")
            with pytest.raises(AuthError, match="did not authenticate the token: invalid bearer token"):
                await reviewer.authenticate("forged")
            other_audience = api.issue_token("shop", "web", audiences=["https://kubernetes.default.svc"])
            with pytest.raises(AuthError, match="audiences do not match"):
                await reviewer.authenticate(other_audience)
            not_a_pod = api.issue_token("shop", "web", audiences=["istio-ca"])
            api.service_account_tokens[not_a_pod][0]["username"] = "alice"
            with pytest.raises(AuthError, match="'alice' is not a service account"):
                await reviewer.authenticate(not_a_pod)
        finally:
            await first.stop()
        # The next start reads the same CA back.
        second = await setup.kube_ca(str(kubeconfig), None)
        try:
            assert second.authority.material == first.authority.material
        finally:
            await second.stop()


async def test_a_plug_in_ca_wins_and_a_changed_root_is_republished(tmp_path: Path) -> None:
    async with running(CORE) as api:
        for ns in ("istio-system", "default"):
            api.create(_namespace(ns))
        root = CaMaterial.self_signed()
        plugged = CaMaterial.intermediate(root, "plug-in")
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "cacerts", "namespace": "istio-system"},
                "data": {k: base64.b64encode(v).decode() for k, v in plugged.files().items()},
            }
        )
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        ca = await setup.kube_ca(str(kubeconfig), None)
        try:
            assert ca.authority.material == plugged
            assert api.get("Secret", "istio-ca-secret", "istio-system") is None
            assert ca.publisher is not None
            await ca.publisher.publish_all()
            assert (
                api.get("ConfigMap", "istio-ca-root-cert", "default")["data"]["root-cert.pem"]
                == root.root.decode()
            )
            # The root changes (a new plug-in CA): the ConfigMaps follow.
            newer = CaMaterial.self_signed()
            publisher = RootPublisher(ca.client, newer.root)
            assert await publisher.publish_all() == 2
            assert (
                api.get("ConfigMap", "istio-ca-root-cert", "default")["data"]["root-cert.pem"]
                == newer.root.decode()
            )
        finally:
            await ca.stop()
