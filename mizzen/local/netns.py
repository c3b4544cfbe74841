"""Named network namespaces through ``ip netns``, and their ``/etc/netns`` files.

``ip netns exec NAME`` bind-mounts every file in ``/etc/netns/NAME/`` over its
namesake in ``/etc``; that is how a pod gets its own ``hosts`` file (and later
its service names) without a container image.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from mizzen import logs

log = logs.get("local.netns")

NETNS_RUN_DIR = Path("/run/netns")
ETC_NETNS_DIR = Path("/etc/netns")


class CommandError(RuntimeError):
    """A host command (ip, iptables) failed."""


def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a host tool, capturing its output; raise CommandError with its stderr on failure."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise CommandError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def path(name: str) -> Path:
    """The bind-mounted netns file a CNI runtime passes as CNI_NETNS."""
    return NETNS_RUN_DIR / name


def exists(name: str) -> bool:
    return path(name).exists()


def list_names(prefix: str = "") -> list[str]:
    """Named namespaces, optionally only those starting with ``prefix``."""
    out = run(["ip", "netns", "list"]).stdout
    # Lines look like "NAME" or "NAME (id: 3)".
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(prefix))


def add(name: str) -> None:
    """Create the namespace (if missing) with its loopback up."""
    if not exists(name):
        run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def delete(name: str) -> None:
    """Remove the namespace; missing is fine."""
    if exists(name):
        proc = run(["ip", "netns", "del", name], check=False)
        if proc.returncode != 0 and exists(name):
            raise CommandError(f"ip netns del {name}: {proc.stderr.strip()}")


def pids(name: str) -> list[int]:
    """Processes whose network namespace is ``name``."""
    if not exists(name):
        return []
    proc = run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` inside the namespace, with its /etc/netns files."""
    return ["ip", "netns", "exec", name, *argv]


def write_etc_file(name: str, filename: str, content: str) -> Path:
    """Write ``/etc/netns/NAME/FILENAME`` atomically."""
    directory = ETC_NETNS_DIR / name
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / filename
    tmp = directory / f".{filename}.tmp"
    tmp.write_text(content)
    tmp.chmod(0o644)
    tmp.replace(target)
    return target


def remove_etc_dir(name: str) -> None:
    shutil.rmtree(ETC_NETNS_DIR / name, ignore_errors=True)


def list_etc_dirs(prefix: str) -> list[str]:
    if not ETC_NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in ETC_NETNS_DIR.iterdir() if p.name.startswith(prefix))


def hosts_file(pod_name: str, ip: str | None) -> str:
    """A pod's /etc/hosts: localhost, and its own name on its own IP (as the kubelet writes it)."""
    lines = [
        "# Managed by mizzen local.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    if ip:
        lines.append(f"{ip}\t{pod_name}")
    return "\n".join(lines) + "\n"
