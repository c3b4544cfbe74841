"""The node agent that the CNI DaemonSet runs: install, watch, repair.

``main(argv)`` is ``mizzen-cni agent``. The parts, one job each:
:mod:`~cni.agent.conflist` (config edits as pure functions),
:mod:`~cni.agent.install` (executable and config files),
:mod:`~cni.agent.kubeconfig` (the plugin's credentials),
:mod:`~cni.agent.reconcile` (one install/repair pass),
:mod:`~cni.agent.health` (probes), :mod:`~cni.agent.repair` with
:mod:`~cni.agent.kube` and :mod:`~cni.agent.procfs` (pods that missed capture),
:mod:`~cni.agent.daemon` (the lifetime) and :mod:`~cni.agent.cli`.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """Run the node agent with command-line arguments ``argv`` (without the ``agent`` word)."""
    # Imported on call: ``mizzen-cni`` as a CNI plugin imports this package's parent and
    # must not pay for aiohttp on every pod ADD.
    from cni.agent.cli import main as cli_main

    return cli_main(argv)


__all__ = ["main"]
