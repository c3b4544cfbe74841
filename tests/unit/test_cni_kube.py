"""The plugin's kubeconfig reader and its retry policy."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from cni import kube


def kubeconfig(
    tmp_path: Path, user: dict[str, Any], server: str = "https://10.96.0.1:443", **cluster: Any
) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "current-context": "ctx",
                "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    return str(path)


def test_token_and_insecure(tmp_path: Path) -> None:
    client = kube.client_from_kubeconfig(
        kubeconfig(tmp_path, {"token": "abc"}, **{"insecure-skip-tls-verify": True})
    )
    assert client.server == "https://10.96.0.1:443"
    assert client.headers["Authorization"] == "Bearer abc"
    assert client.context is not None and not client.context.check_hostname


def test_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-file\n")
    client = kube.client_from_kubeconfig(
        kubeconfig(tmp_path, {"tokenFile": str(token)}, server="http://127.0.0.1:1")
    )
    assert client.headers["Authorization"] == "Bearer from-file" and client.context is None


def test_bad_ca_data_is_reported(tmp_path: Path) -> None:
    bad = base64.b64encode(b"not a certificate").decode()
    with pytest.raises(Exception):  # noqa: B017 - ssl raises its own error type for a bad CA
        kube.client_from_kubeconfig(
            kubeconfig(tmp_path, {"token": "t"}, **{"certificate-authority-data": bad})
        )


def test_yaml_kubeconfig(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(
        "current-context: a\nclusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:1'}\n"
        "users:\n- name: u\n  user: {token: yml}\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\n"
    )
    assert kube.client_from_kubeconfig(str(path)).headers["Authorization"] == "Bearer yml"


def test_missing_context_is_not_retriable(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    path.write_text(json.dumps({"current-context": "nope", "contexts": []}))
    with pytest.raises(kube.KubeError) as err:
        kube.client_from_kubeconfig(str(path))
    assert not err.value.retriable and "nope" in str(err.value)


class FlakyClient:
    def __init__(self, failures: list[kube.KubeError]) -> None:
        self.failures = failures
        self.calls: list[str] = []

    def get(self, path: str) -> dict[str, Any]:
        self.calls.append(path)
        if self.failures:
            raise self.failures.pop(0)
        return {"path": path}


def test_retries_what_may_pass() -> None:
    client = FlakyClient([kube.KubeError("refused", retriable=True), kube.KubeError("503", retriable=True)])
    sleeps: list[float] = []
    pod, ns = kube.fetch_pod_and_namespace(client, "a b", "p", attempts=3, delay=0.5, sleep=sleeps.append)  # type: ignore[arg-type]
    assert pod == {"path": "/api/v1/namespaces/a%20b/pods/p"} and ns == {"path": "/api/v1/namespaces/a%20b"}
    assert sleeps == [0.5, 0.5]


def test_gives_up_after_attempts_and_stops_on_404() -> None:
    client = FlakyClient([kube.KubeError("refused", retriable=True)] * 5)
    with pytest.raises(kube.KubeError) as err:
        kube.fetch_pod_and_namespace(client, "ns", "p", attempts=2, sleep=lambda _: None)  # type: ignore[arg-type]
    assert err.value.retriable and "after 2 attempts" in str(err.value) and len(client.calls) == 2
    client = FlakyClient([kube.KubeError("404", retriable=False)])
    with pytest.raises(kube.KubeError):
        kube.fetch_pod_and_namespace(client, "ns", "p", attempts=5, sleep=lambda _: None)  # type: ignore[arg-type]
    assert len(client.calls) == 1
