"""Raw JSON over HTTP to the Kubernetes API server.

kubernetes-asyncio provides what is fiddly and security-relevant: reading kubeconfig (contexts, client
certificates, exec and OIDC credential plugins) and the in-cluster service account (with its token
re-read as it rotates), TLS, proxies, and an aiohttp session. We call its ``ApiClient.call_api`` with
``_preload_content=False`` to get the raw aiohttp response, and decode bodies ourselves with orjson: its
generated model objects cost ~25x more per watch event than a plain dict, and the mesh reads raw dicts.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from mizzen import logs

from .listwatch import ApiError, StreamInterrupted, TransportError

log = logs.get("kubeclient")

Query = Sequence[tuple[str, str]]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
USER_AGENT = "mizzen-controller"


class KubeClient:
    """Requests to one API server; answers are decoded JSON, failures ``ApiError`` or ``TransportError``."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        request_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        refresher: asyncio.Task[None] | None = None,
    ) -> None:
        self._api = api_client
        self._api.user_agent = USER_AGENT
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self._refresher = refresher

    @classmethod
    async def connect(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        *,
        service_account_dir: Path = SERVICE_ACCOUNT_DIR,
        **options: float,
    ) -> KubeClient:
        """A client from ``kubeconfig`` (and ``context``), or, with no kubeconfig, from the pod's service
        account when running in a cluster, else from ``$KUBECONFIG`` or ``~/.kube/config`` (client-go's
        order)."""
        configuration = k8s_client.Configuration()
        refresher: asyncio.Task[None] | None = None
        if kubeconfig is None and context is None and _in_cluster(service_account_dir):
            # The token is re-read as the kubelet rotates it (kubernetes-asyncio's refresh hook).
            k8s_config.load_incluster_config(
                client_configuration=configuration,
                token_filename=str(service_account_dir / "token"),
                cert_filename=str(service_account_dir / "ca.crt"),
            )
            log.info("using the in-cluster service account", server=configuration.host)
        else:
            path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
            try:
                loader = await k8s_config.load_kube_config(
                    config_file=path,
                    context=context,
                    client_configuration=configuration,
                    persist_config=False,
                )
            except (OSError, k8s_config.ConfigException) as exc:
                where = f"kubeconfig {path}" + (f", context {context}" if context else "")
                raise ValueError(f"cannot load {where}: {exc}") from exc
            if loader.provider == "gcp" or "exec" in (loader._user or {}):
                # Credential plugins hand out short-lived tokens: keep them fresh in the background.
                refresher = asyncio.create_task(
                    k8s_config.refresh_token(loader, configuration), name="kubeconfig token refresh"
                )
            log.info("using kubeconfig", path=path, context=context or "(current)", server=configuration.host)
        return cls(k8s_client.ApiClient(configuration), refresher=refresher, **options)

    @property
    def host(self) -> str:
        return str(self._api.configuration.host)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await self._api.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """One request; the decoded JSON answer. ``request_timeout`` bounds each wait for data, not the
        whole answer: a large unpaged LIST may take longer than that to arrive, and that is fine."""
        timeout = aiohttp.ClientTimeout(sock_connect=self.connect_timeout, sock_read=self.request_timeout)
        response = await self._send(method, path, query, body, content_type, timeout)
        try:
            data = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransportError(f"{method} {path}: reading the answer failed: {_describe(exc)}") from exc
        finally:
            response.release()
        try:
            return orjson.loads(data) if data else None
        except orjson.JSONDecodeError as exc:
            raise TransportError(f"{method} {path}: the answer is not JSON: {exc}") from exc

    async def stream_lines(
        self, path: str, query: Query, *, read_timeout: float
    ) -> AsyncGenerator[bytes, None]:
        """The lines of a streaming GET (a watch). A connection that breaks, or stays silent for
        ``read_timeout`` seconds (half-open), raises ``StreamInterrupted``; a clean end just stops."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout, sock_read=read_timeout)
        response = await self._send("GET", path, query, None, "application/json", timeout)
        try:
            while True:
                try:
                    line = await response.content.readline()
                except (TimeoutError, aiohttp.ClientError) as exc:
                    raise StreamInterrupted(f"GET {path}: {_describe(exc)}") from exc
                if not line:
                    return
                if line.strip():
                    yield line
        finally:
            response.close()  # a watch connection cannot be reused mid-stream

    async def _send(
        self,
        method: str,
        path: str,
        query: Query,
        body: Any,
        content_type: str,
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        try:
            response: aiohttp.ClientResponse = await self._api.call_api(
                path,
                method,
                query_params=list(query),
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"{method} {path}: {_describe(exc)}") from exc
        if response.status >= 400:
            try:
                data = await response.read()
            except (TimeoutError, aiohttp.ClientError):
                data = b""
            finally:
                response.release()
            raise api_error(response.status, response.reason or "", response.headers.get("Retry-After"), data)
        return response


def api_error(code: int, reason: str, retry_after_header: str | None, body: bytes) -> ApiError:
    """An ``ApiError`` from an error answer: its Status body when it has one (it normally does)."""
    retry_after = _parse_retry_after(retry_after_header)
    try:
        status = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        status = None
    if isinstance(status, dict) and status.get("kind") == "Status":
        status.setdefault("code", code)
        return ApiError.from_status(status, retry_after)
    text = body.decode("utf-8", "replace").strip()[:200] or reason
    error = ApiError.synthetic(code, reason.replace(" ", ""), text)
    error.retry_after = retry_after
    return error


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # the HTTP-date form; the API server sends seconds


def _in_cluster(service_account_dir: Path) -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (service_account_dir / "token").exists()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
