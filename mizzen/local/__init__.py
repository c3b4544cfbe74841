"""Local mode's node: pods as network namespaces created through the real CNI chain.

The public face is :class:`LocalNode` (with :class:`NodeConfig` and
:class:`PodSpec`); :mod:`mizzen.local.cniexec` is the CNI runtime it drives.
"""

from mizzen.local.cniexec import CniError, CniRuntime, RuntimeConf
from mizzen.local.node import LocalNode, NodeConfig, NodeError, PodSpec

__all__ = ["CniError", "CniRuntime", "LocalNode", "NodeConfig", "NodeError", "PodSpec", "RuntimeConf"]
