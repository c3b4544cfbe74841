"""``mizzen demo``: the local demo (placeholder until the mesh's parts are ready to show)."""

from __future__ import annotations


def run(argv: list[str] | None = None) -> int:
    """Run the demo; returns a process exit status."""
    print("mizzen demo: not written yet; see `mizzen local --help` for the local node.")
    return 1
