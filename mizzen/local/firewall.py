"""Letting pods on the node bridge reach each other through the host's FORWARD chain.

With ``br_netfilter`` loaded (``net.bridge.bridge-nf-call-iptables=1``), frames
switched between two ports of our bridge traverse the host's iptables FORWARD
chain; a DROP policy there (Docker sets one) would silently cut pod-to-pod
traffic. We keep our one ACCEPT in a chain of our own, jumped to from the top of
FORWARD, so that teardown removes exactly what we added. It only accepts traffic
that enters *and* leaves our bridge: it never opens forwarding to the outside.

We install it even while the policy is ACCEPT: the policy can turn to DROP
later (a Docker daemon starting), and a rule that matches nothing else is free.
"""

from __future__ import annotations

from mizzen import logs
from mizzen.local.netns import run

log = logs.get("local.firewall")

IPTABLES = "iptables"


def chain_name(bridge: str) -> str:
    """Our chain for a bridge; iptables chain names are at most 28 characters."""
    return f"MZN-FWD-{bridge}"[:28]


def _ipt(*args: str, check: bool = True) -> str:
    # -w: wait for the xtables lock instead of failing when another tool holds it.
    return run([IPTABLES, "-w", *args], check=check).stdout


def _chain_exists(chain: str) -> bool:
    return run([IPTABLES, "-w", "-n", "-L", chain], check=False).returncode == 0


def _jump_present(chain: str) -> bool:
    return run([IPTABLES, "-w", "-C", "FORWARD", "-j", chain], check=False).returncode == 0


def forward_policy() -> str:
    """The FORWARD chain's policy (ACCEPT or DROP)."""
    for line in _ipt("-S", "FORWARD").splitlines():
        parts = line.split()
        if parts[:2] == ["-P", "FORWARD"] and len(parts) > 2:
            return parts[2]
    return "ACCEPT"


def ensure(bridge: str) -> None:
    """Add (idempotently) our chain with the bridge ACCEPT and the jump to it from FORWARD."""
    chain = chain_name(bridge)
    if not _chain_exists(chain):
        _ipt("-N", chain)
    rule = ["-i", bridge, "-o", bridge, "-j", "ACCEPT"]
    if run([IPTABLES, "-w", "-C", chain, *rule], check=False).returncode != 0:
        _ipt("-A", chain, *rule)
    if not _jump_present(chain):
        _ipt("-I", "FORWARD", "1", "-j", chain)
    log.debug("forward accept in place", chain=chain, bridge=bridge, policy=forward_policy())


def remove(bridge: str) -> None:
    """Remove the jump and our chain; missing pieces are fine."""
    chain = chain_name(bridge)
    while _jump_present(chain):
        _ipt("-D", "FORWARD", "-j", chain)
    if _chain_exists(chain):
        _ipt("-F", chain)
        _ipt("-X", chain)


def present(bridge: str) -> bool:
    """Whether our chain or its jump is still there (for status and tests)."""
    chain = chain_name(bridge)
    return _chain_exists(chain) or _jump_present(chain)
