"""The plugin's kubeconfig, made from the agent's own service account.

The plugin runs on the host, outside any pod, so it cannot read a service-account
volume; the agent copies its credentials into a kubeconfig beside the CNI config.
Projected tokens rotate (about hourly), so the file is rewritten whenever the
rendered content differs. The CA is embedded and the file is JSON, which is valid
YAML and cheap for the plugin to parse.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cni.agent.fsutil import atomic_write, dump_json, read_bytes, remove

DEFAULT_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KUBECONFIG_MODE = 0o600


class KubeconfigError(RuntimeError):
    """A service account is mounted but a kubeconfig cannot be made from it."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the kubeconfig is made of."""

    server: str
    token: str
    ca_pem: bytes


def server_url(env: Mapping[str, str]) -> str:
    """``https://host:port`` of the API server from the in-cluster service variables."""
    host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = env.get("KUBERNETES_SERVICE_PORT", "").strip() or "443"
    if not host:
        raise KubeconfigError("KUBERNETES_SERVICE_HOST is not set")
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a DNS name
    return f"https://{host}:{port}"


def has_service_account(sa_dir: Path) -> bool:
    """Whether a service-account token is mounted (False in local mode and most tests)."""
    return (sa_dir / "token").is_file()


def read_credentials(sa_dir: Path, env: Mapping[str, str]) -> Credentials:
    """Token, CA and server, read fresh each time (the kubelet swaps the files on rotation)."""
    token = read_bytes(sa_dir / "token")
    ca = read_bytes(sa_dir / "ca.crt")
    if token is None:
        raise KubeconfigError(f"no token in {sa_dir}")
    if ca is None:
        raise KubeconfigError(f"no ca.crt in {sa_dir}")
    return Credentials(server=server_url(env), token=token.decode().strip(), ca_pem=ca)


def render(creds: Credentials) -> dict[str, Any]:
    """The kubeconfig document (pure)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": creds.server,
                    "certificate-authority-data": base64.b64encode(creds.ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "mizzen-cni", "user": {"token": creds.token}}],
        "contexts": [{"name": "mizzen-cni", "context": {"cluster": "local", "user": "mizzen-cni"}}],
        "current-context": "mizzen-cni",
    }


def ensure(path: Path, sa_dir: Path, env: Mapping[str, str]) -> bool:
    """Write the kubeconfig at ``path`` when missing or stale; True when it wrote."""
    data = dump_json(render(read_credentials(sa_dir, env)))
    if read_bytes(path) == data and (path.stat().st_mode & 0o777) == KUBECONFIG_MODE:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, KUBECONFIG_MODE)
    return True


def delete(path: Path) -> bool:
    """Remove the kubeconfig; True if it was there."""
    return remove(path)
