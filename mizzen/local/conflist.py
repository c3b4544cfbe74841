"""The local node's CNI network config: a pure function of the node's settings.

The chain is what a kubelet node with Mizzen installed would have: the Debian
``bridge`` plugin with ``host-local`` IPAM as the primary plugin, then our
chained ``mizzen-cni`` that programs capture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

NETWORK_NAME = "mizzen-local"
CNI_VERSION = "1.0.0"
CAPTURE_PLUGIN = "mizzen-cni"


def build_conflist(
    *,
    bridge: str,
    subnet: str,
    ipam_dir: Path,
    capture: bool,
    log_level: str = "info",
    service_cidr: str | None = None,
) -> dict[str, Any]:
    """The conflist for a node; ``capture=False`` leaves our plugin out (bridge networking only).

    Pods get no default route: a packet to an address outside the node has
    nowhere to go. ``service_cidr`` adds a route for virtual service IPs, which
    the kernel needs before the sidecar's capture rules ever see the packet.
    """
    ipam: dict[str, Any] = {
        "type": "host-local",
        "dataDir": str(ipam_dir),
        "ranges": [[{"subnet": subnet}]],
    }
    if service_cidr:
        ipam["routes"] = [{"dst": service_cidr}]
    plugins: list[dict[str, Any]] = [
        {
            "type": "bridge",
            "bridge": bridge,
            "isGateway": True,
            # Pods only talk to each other and to the host; never NAT them anywhere.
            "ipMasq": False,
            "ipam": ipam,
        }
    ]
    if capture:
        plugins.append({"type": CAPTURE_PLUGIN, "log_level": log_level})
    return {"cniVersion": CNI_VERSION, "name": NETWORK_NAME, "plugins": plugins}
