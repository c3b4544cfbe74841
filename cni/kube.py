"""Reading a pod and its namespace from the Kubernetes API, for the plugin.

The plugin runs once per pod sandbox and must finish in tens of milliseconds,
so this uses the standard library (urllib + ssl) rather than a full client:
importing kubernetes-asyncio alone costs more than the whole ADD.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class KubeError(RuntimeError):
    """The API could not be reached or answered with an error; ``retriable`` says which."""

    def __init__(self, msg: str, *, retriable: bool) -> None:
        super().__init__(msg)
        self.retriable = retriable


@dataclass(frozen=True, slots=True)
class KubeClient:
    server: str
    context: ssl.SSLContext | None
    headers: Mapping[str, str]
    timeout: float = 5.0

    def get(self, path: str) -> dict[str, Any]:
        req = urllib.request.Request(self.server.rstrip("/") + path, headers=dict(self.headers))
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            retriable = exc.code == 429 or exc.code >= 500
            raise KubeError(f"GET {path}: HTTP {exc.code} {exc.reason}", retriable=retriable) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise KubeError(f"GET {path}: {reason}", retriable=True) from None


def _load(path: str) -> dict[str, Any]:
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        return json.loads(raw)
    except ValueError:
        import yaml  # kubeconfigs written by people are YAML; ours are JSON, which is faster to read

        return yaml.safe_load(raw)


def _named(items: list[dict[str, Any]], name: str, key: str) -> dict[str, Any]:
    for item in items or ():
        if item.get("name") == name:
            return item.get(key) or {}
    raise KubeError(f"kubeconfig has no {key} named {name!r}", retriable=False)


def _materialise(data_b64: str | None, path: str | None) -> str | None:
    """ssl wants files; inline *-data fields are written to a private temp file."""
    if path:
        return path
    if not data_b64:
        return None
    fd, tmp = tempfile.mkstemp(prefix="mizzen-cni-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64decode(data_b64))
    return tmp


def client_from_kubeconfig(path: str, timeout: float = 5.0) -> KubeClient:
    """A client for the kubeconfig's current context (token, token file, or client certificate)."""
    try:
        cfg = _load(path)
    except OSError as exc:
        raise KubeError(f"kubeconfig {path}: {exc.strerror}", retriable=False) from None
    ctx_name = cfg.get("current-context") or (cfg.get("contexts") or [{}])[0].get("name", "")
    context = _named(cfg.get("contexts", []), ctx_name, "context")
    cluster = _named(cfg.get("clusters", []), context.get("cluster", ""), "cluster")
    user = _named(cfg.get("users", []), context.get("user", ""), "user") if context.get("user") else {}

    server = cluster.get("server", "")
    headers = {"Accept": "application/json", "User-Agent": "mizzen-cni"}
    ssl_ctx: ssl.SSLContext | None = None
    if server.startswith("https"):
        ssl_ctx = ssl.create_default_context(
            cafile=_materialise(
                cluster.get("certificate-authority-data"), cluster.get("certificate-authority")
            )
        )
        if cluster.get("insecure-skip-tls-verify"):
            ssl_ctx.check_hostname = False
            ssl_ctx.verify_mode = ssl.CERT_NONE
        cert = _materialise(user.get("client-certificate-data"), user.get("client-certificate"))
        key = _materialise(user.get("client-key-data"), user.get("client-key"))
        if cert:
            ssl_ctx.load_cert_chain(cert, key)
    token = user.get("token")
    if not token and user.get("tokenFile"):
        with open(user["tokenFile"]) as fh:
            token = fh.read().strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return KubeClient(server=server, context=ssl_ctx, headers=headers, timeout=timeout)


def fetch_pod_and_namespace(
    client: KubeClient,
    namespace: str,
    name: str,
    *,
    attempts: int = 5,
    delay: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """GET the pod and its namespace, retrying what may pass (unreachable API, 5xx, 429)."""
    ns_q, name_q = urllib.parse.quote(namespace, safe=""), urllib.parse.quote(name, safe="")
    last: KubeError | None = None
    for attempt in range(max(1, attempts)):
        if attempt:
            sleep(delay)
        try:
            pod = client.get(f"/api/v1/namespaces/{ns_q}/pods/{name_q}")
            ns = client.get(f"/api/v1/namespaces/{ns_q}")
            return pod, ns
        except KubeError as exc:
            last = exc
            if not exc.retriable:
                raise
    assert last is not None
    raise KubeError(f"{last} (after {attempts} attempts)", retriable=True)
