"""Primary CNI network configs as nodes carry them, for the node agent's tests."""

from __future__ import annotations

from typing import Any

# A single-plugin .conf, as a hand-made bridge network writes it.
BRIDGE: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "mynet",
    "type": "bridge",
    "bridge": "cni0",
    "ipam": {"type": "host-local"},
}
