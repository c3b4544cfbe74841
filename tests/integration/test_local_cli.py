"""`mizzen local ...` end to end, as a user types it (the console script, as root)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mizzen.local import firewall, netns

pytestmark = [
    pytest.mark.root,
]

MIZZEN = str(Path(sys.executable).parent / "mizzen")


@pytest.fixture
def node_args(tmp_path: Path) -> Iterator[list[str]]:
    tag = secrets.token_hex(3)
    args = [
        "--state-dir", str(tmp_path / "state"),
        "--bridge", f"mzt{tag}",
        "--subnet", f"10.248.{secrets.randbelow(250) + 1}.0/24",
        "--netns-prefix", f"mzt{tag}-",
        "--no-capture",
    ]  # fmt: skip
    yield args
    subprocess.run([MIZZEN, "local", *args, "down"], capture_output=True, check=False)
    for name in netns.list_names(f"mzt{tag}-"):
        subprocess.run(["ip", "netns", "del", name], check=False)
    subprocess.run(["ip", "link", "del", f"mzt{tag}"], capture_output=True, check=False)
    firewall.remove(f"mzt{tag}")


def mizzen(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MIZZEN, *argv], capture_output=True, text=True, timeout=60, check=False)


def test_pod_lifecycle_from_the_command_line(node_args: list[str]) -> None:
    added = mizzen("local", *node_args, "pod", "add", "web", "-n", "shop", "--label", "app=web", "--inject")
    assert added.returncode == 0, added.stderr
    name, ip, ns_name = added.stdout.split()
    assert name == "shop/web" and netns.exists(ns_name)

    out = mizzen("local", *node_args, "exec", "web", "-n", "shop", "--uid", "1337", "--", "id", "-u")
    assert (out.returncode, out.stdout.strip()) == (0, "1337")
    out = mizzen("local", *node_args, "exec", "web", "-n", "shop", "--", "sh", "-c", "exit 4")
    assert out.returncode == 4

    status = mizzen("local", *node_args, "status", "-o", "json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    (pod,) = data["pods"]
    assert (pod["name"], pod["namespace"], pod["ip"], pod["processes"]) == ("web", "shop", ip, [])
    assert data["up"] is True and data["config"]["capture"] is False

    assert mizzen("local", *node_args, "pod", "del", "web", "-n", "shop").returncode == 0
    assert not netns.exists(ns_name)
    assert mizzen("local", *node_args, "pod", "del", "web", "-n", "shop").returncode == 0  # idempotent

    assert mizzen("local", *node_args, "down").returncode == 0
    state_dir = Path(node_args[node_args.index("--state-dir") + 1])
    assert not state_dir.exists()


def test_errors_are_reported_not_raised(node_args: list[str]) -> None:
    out = mizzen("local", *node_args, "exec", "missing", "--", "true")
    assert out.returncode == 1
    assert "no pod default/missing" in out.stderr
    public = [*node_args]
    public[public.index("--subnet") + 1] = "8.8.8.0/24"
    bad = mizzen("local", *public, "status")
    assert bad.returncode == 1 and "private" in bad.stderr


def test_python_dash_m_runs_the_same_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mizzen", "--version"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and out.stdout.startswith("mizzen ")
