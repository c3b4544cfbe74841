"""This node's pods from the Kubernetes API: a :class:`~cni.agent.repair.PodSource` for clusters.

A few calls every repair interval do not justify a client library: the standard
library's urllib with the service-account token and CA is enough, and keeps the
agent's image small. The token is read for every request because projected
tokens rotate under a running process.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cni.agent import kubeconfig, procfs
from cni.agent.repair import LabelHook, PodRecord

# Pods in these phases have no running sandbox to repair.
_FINISHED = frozenset({"Succeeded", "Failed"})


class ApiError(RuntimeError):
    """An API request failed; the message names the request."""

    def __init__(self, msg: str, status: int | None = None) -> None:
        super().__init__(msg)
        self.status = status


class ApiClient:
    """Minimal JSON-over-HTTPS client authenticated by a bearer token file."""

    def __init__(self, server: str, token_file: Path, ca_file: Path | None, timeout: float = 10.0) -> None:
        self.server = server.rstrip("/")
        self.token_file = token_file
        self.ca_file = ca_file
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        self._ca_sig: tuple[int, int] | None = None

    @classmethod
    def in_cluster(cls, sa_dir: Path, env: Mapping[str, str], timeout: float = 10.0) -> ApiClient:
        """A client for the API server this pod runs under, as its service account."""
        return cls(kubeconfig.server_url(env), sa_dir / "token", sa_dir / "ca.crt", timeout)

    def _context(self) -> ssl.SSLContext | None:
        if not self.server.startswith("https") or self.ca_file is None:
            return None
        st = os.stat(self.ca_file)
        sig = (st.st_ino, st.st_mtime_ns)
        if self._ssl is None or sig != self._ca_sig:  # the CA bundle can be rotated too
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
            self._ca_sig = sig
        return self._ssl

    def request(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        """Send one request and return the decoded JSON answer; raises :class:`ApiError`."""
        headers = {"Accept": "application/json", "User-Agent": "mizzen-cni-agent"}
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise ApiError(f"{method} {path}: cannot read token: {exc}") from None
        headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type or "application/json"
        req = urllib.request.Request(self.server + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._context()) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise ApiError(f"{method} {path}: HTTP {exc.code} {exc.reason}", exc.code) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ApiError(f"{method} {path}: {getattr(exc, 'reason', exc)}") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def merge_patch(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("PATCH", path, body, "application/merge-patch+json")


class KubePodSource:
    """Pods scheduled on ``node_name``, with their namespace's labels and their netns from /proc."""

    def __init__(self, client: ApiClient, node_name: str, proc_root: Path = Path("/proc")) -> None:
        self.client = client
        self.node_name = node_name
        self.proc_root = proc_root

    def _fetch(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
        selector = urllib.parse.quote(f"spec.nodeName={self.node_name}", safe="")
        pods = self.client.get(f"/api/v1/pods?fieldSelector={selector}").get("items") or []
        namespaces = self.client.get("/api/v1/namespaces").get("items") or []
        ns_labels = {
            (ns.get("metadata") or {}).get("name", ""): (ns.get("metadata") or {}).get("labels") or {}
            for ns in namespaces
        }
        return pods, ns_labels

    def _labeller(self, namespace: str, name: str) -> LabelHook:
        quote = urllib.parse.quote
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}"

        async def set_label(key: str, value: str) -> None:
            await asyncio.to_thread(self.client.merge_patch, path, {"metadata": {"labels": {key: value}}})

        return set_label

    async def list_pods(self) -> list[PodRecord]:
        """This node's live pods; raises :class:`ApiError` when the API cannot be read."""
        pods, ns_labels = await asyncio.to_thread(self._fetch)
        netns_by_uid = await asyncio.to_thread(procfs.pod_netns_paths, self.proc_root)
        records = []
        for item in pods:
            meta = item.get("metadata") or {}
            spec = item.get("spec") or {}
            if (item.get("status") or {}).get("phase") in _FINISHED:
                continue
            namespace, name, uid = meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", "")
            records.append(
                PodRecord(
                    namespace=namespace,
                    name=name,
                    uid=uid,
                    labels=meta.get("labels") or {},
                    annotations=meta.get("annotations") or {},
                    # A host-network pod's "netns" is the node's: never a repair target.
                    netns=None if spec.get("hostNetwork") else netns_by_uid.get(uid),
                    namespace_labels=ns_labels.get(namespace, {}),
                    spec=spec,
                    set_label=self._labeller(namespace, name),
                )
            )
        return records
