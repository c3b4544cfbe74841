"""Installing, checking and removing capture rules inside a pod's netns.

Each address family is one ``iptables-restore --noflush`` transaction, so a
family is either fully programmed or untouched. When a later family fails, the
earlier ones are put back as they were, so a failed ADD leaves the netns as it
found it.
"""

from __future__ import annotations

import os

from cni import netns, rules
from cni.rules import CaptureConfig

TYPE_CHECKING = False  # see cni/spec.py: no typing at run time on the plugin's path
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from cni.rules import Family


class CaptureError(RuntimeError):
    """iptables refused a read or a write; ``details`` carries its stderr."""

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.msg = msg
        self.details = details


def _binary(name: str) -> str:
    """``name`` on PATH (what shutil.which does, without importing shutil), else /usr/sbin."""
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(directory, name)
        if directory and os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return f"/usr/sbin/{name}"


class _Tools:
    __slots__ = ("restore", "save")

    def __init__(self, save: str, restore: str) -> None:
        self.save = save
        self.restore = restore


def _tools(family: Family) -> _Tools:
    prefix = "iptables" if family == 4 else "ip6tables"
    return _Tools(save=_binary(f"{prefix}-save"), restore=_binary(f"{prefix}-restore"))


def read_nat(netns_path: str, family: Family = 4) -> list[str]:
    """The ``-A`` lines of the nat table in the netns, as iptables-save prints them."""
    proc = netns.run(netns_path, [_tools(family).save, "-t", "nat"])
    if proc.returncode != 0:
        raise CaptureError(
            f"{_tools(family).save} failed in {netns_path}", proc.stderr.decode(errors="replace")
        )
    return [line for line in proc.stdout.decode().splitlines() if line.startswith("-A ")]


def _restore(netns_path: str, family: Family, payload: str) -> None:
    tool = _tools(family).restore
    proc = netns.run(netns_path, [tool, "--noflush"], input=payload.encode())
    if proc.returncode != 0:
        raise CaptureError(f"{tool} failed in {netns_path}", proc.stderr.decode(errors="replace").strip())


def ours(lines: Iterable[str]) -> list[str]:
    return [line for line in lines if rules.is_ours(line)]


def _by_chain(lines: Iterable[str]) -> dict[str, list[str]]:
    """Group rules per chain; iptables-save orders chains its own way but keeps order within one."""
    out: dict[str, list[str]] = {}
    for line in lines:
        out.setdefault(line.split()[1], []).append(line)
    return out


def _builtin_jumps(lines: Iterable[str]) -> list[str]:
    return [line for line in ours(lines) if line.split()[1] not in rules.CHAINS]


def diff(current: Iterable[str], desired: Iterable[str]) -> list[str]:
    """Human-readable differences between our rules in a netns and the expected ones."""
    have, want = _by_chain(ours(current)), _by_chain(desired)
    problems: list[str] = []
    for chain in sorted(set(have) | set(want)):
        got, exp = have.get(chain, []), want.get(chain, [])
        if got == exp:
            continue
        problems += [f"missing: {line}" for line in exp if line not in got]
        problems += [f"unexpected: {line}" for line in got if line not in exp]
        if not any(line not in got for line in exp) and not any(line not in exp for line in got):
            problems.append(f"out of order: chain {chain}")
    return problems


def install(
    netns_path: str, cfg: CaptureConfig | Mapping[str, str] | None = None, families: Iterable[Family] = (4,)
) -> list[Family]:
    """Program capture for each family; returns the families that changed (empty when already right).

    ``cfg`` may be a :class:`CaptureConfig` or a pod's annotations. Idempotent: a netns that
    already holds exactly these rules is not touched.
    """
    if not isinstance(cfg, CaptureConfig):
        cfg = rules.config_from_annotations(cfg or {})
    netns.check_path(netns_path)
    changed: list[tuple[Family, list[str]]] = []
    try:
        for family in families:
            current = read_nat(netns_path, family)
            desired = rules.rule_lines(cfg, family)
            if not diff(current, desired):
                continue
            _restore(netns_path, family, rules.restore_payload(desired, delete=_builtin_jumps(current)))
            changed.append((family, ours(current)))
    except Exception:
        for family, previous in reversed(changed):
            _put_back(netns_path, family, previous)
        raise
    return [family for family, _ in changed]


def _put_back(netns_path: str, family: Family, previous: list[str]) -> None:
    """Best-effort return of one family to the rules it had before a failed install."""
    try:
        current = read_nat(netns_path, family)
        if previous:
            ordered = [line for chain in _by_chain(previous).values() for line in chain]
            _restore(netns_path, family, rules.restore_payload(ordered, delete=_builtin_jumps(current)))
        else:
            _restore(netns_path, family, rules.removal_payload(_builtin_jumps(current)))
    except (CaptureError, netns.NetnsError, OSError):
        pass


def remove(netns_path: str, families: Iterable[Family] = (4,)) -> bool:
    """Remove exactly our chains and our jumps into them; True when something was removed."""
    removed = False
    for family in families:
        current = read_nat(netns_path, family)
        present = ours(current)
        declared = any(line.split()[1] in rules.CHAINS for line in present)
        if not present and not declared and not _has_chains(netns_path, family):
            continue
        _restore(netns_path, family, rules.removal_payload(_builtin_jumps(current)))
        removed = True
    return removed


def _has_chains(netns_path: str, family: Family) -> bool:
    proc = netns.run(netns_path, [_tools(family).save, "-t", "nat"])
    return any(
        line.startswith(f":{chain} ") for line in proc.stdout.decode().splitlines() for chain in rules.CHAINS
    )


def check(
    netns_path: str, cfg: CaptureConfig | Mapping[str, str] | None, families: Iterable[Family] = (4,)
) -> list[str]:
    """Differences between what is installed and what should be; empty when capture is intact."""
    if not isinstance(cfg, CaptureConfig):
        cfg = rules.config_from_annotations(cfg or {})
    problems: list[str] = []
    for family in families:
        problems += [
            f"IPv{family} {p}" for p in diff(read_nat(netns_path, family), rules.rule_lines(cfg, family))
        ]
    return problems


def is_installed(netns_path: str, family: Family = 4) -> bool:
    """Whether our capture chains are present at all (what the node agent's repair looks for)."""
    return any(line.split()[1] == rules.OUTPUT for line in ours(read_nat(netns_path, family)))
