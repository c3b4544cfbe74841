"""The plugin's kubeconfig made from the agent's service account (cni.agent.kubeconfig)."""

from __future__ import annotations

import base64
import json
import ssl
import stat
from pathlib import Path

import pytest

from cni import kube as plugin_kube
from cni.agent import kubeconfig

ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def real_ca() -> bytes:
    """A PEM bundle that ssl accepts: the system's, since the plugin builds a real SSL context."""
    cafile = ssl.get_default_verify_paths().cafile
    if not cafile:
        pytest.skip("no system CA bundle to stand in for the cluster CA")
    with open(cafile, "rb") as fh:
        return fh.read()


@pytest.fixture
def sa_dir(tmp_path: Path) -> Path:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("token-one\n")
    (sa / "ca.crt").write_bytes(CA)
    return sa


@pytest.mark.parametrize(
    ("env", "url"),
    [
        (ENV, "https://10.96.0.1:443"),
        ({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}, "https://[fd00::1]:6443"),
        ({"KUBERNETES_SERVICE_HOST": "api.example"}, "https://api.example:443"),
    ],
)
def test_server_url(env: dict[str, str], url: str) -> None:
    assert kubeconfig.server_url(env) == url


def test_server_url_needs_host() -> None:
    with pytest.raises(kubeconfig.KubeconfigError):
        kubeconfig.server_url({})


def test_written_private_and_readable_by_the_plugin(tmp_path: Path, sa_dir: Path) -> None:
    path = tmp_path / "net.d" / "mizzen-cni-kubeconfig"
    assert kubeconfig.ensure(path, sa_dir, ENV) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    cluster = doc["clusters"][0]["cluster"]
    assert cluster["server"] == "https://10.96.0.1:443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == CA
    assert doc["users"][0]["user"]["token"] == "token-one"


def test_the_plugin_can_load_it(tmp_path: Path, sa_dir: Path) -> None:
    (sa_dir / "ca.crt").write_bytes(real_ca())
    path = tmp_path / "kubeconfig"
    kubeconfig.ensure(path, sa_dir, {"KUBERNETES_SERVICE_HOST": "fd00::1"})
    client = plugin_kube.client_from_kubeconfig(str(path))
    assert client.server == "https://[fd00::1]:443"
    assert client.headers["Authorization"] == "Bearer token-one"
    assert client.context is not None


def test_rewritten_only_when_token_or_ca_changes(tmp_path: Path, sa_dir: Path) -> None:
    path = tmp_path / "kubeconfig"
    kubeconfig.ensure(path, sa_dir, ENV)
    ino = path.stat().st_ino
    assert kubeconfig.ensure(path, sa_dir, ENV) is False
    assert path.stat().st_ino == ino

    (sa_dir / "token").write_text("token-two\n")
    assert kubeconfig.ensure(path, sa_dir, ENV) is True
    assert json.loads(path.read_text())["users"][0]["user"]["token"] == "token-two"

    (sa_dir / "ca.crt").write_bytes(CA + CA)
    assert kubeconfig.ensure(path, sa_dir, ENV) is True

    path.chmod(0o644)  # someone loosened it
    assert kubeconfig.ensure(path, sa_dir, ENV) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_service_account(tmp_path: Path, sa_dir: Path) -> None:
    assert kubeconfig.has_service_account(sa_dir)
    assert not kubeconfig.has_service_account(tmp_path / "missing")
    (sa_dir / "ca.crt").unlink()
    with pytest.raises(kubeconfig.KubeconfigError, match=r"ca\.crt"):
        kubeconfig.ensure(tmp_path / "k", sa_dir, ENV)
