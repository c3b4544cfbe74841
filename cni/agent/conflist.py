"""CNI network configuration as data: which file is primary, and our entry in or out of it.

Pure functions over file names and parsed JSON, so that every edit the agent
makes to a node's configuration can be unit-tested without a file system.
Nothing here mutates its input; each edit returns a new dict.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PLUGIN_TYPE = "mizzen-cni"
KUBECONFIG_NAME = "mizzen-cni-kubeconfig"
# Set on a conflist we made from a single-plugin .conf: the .conf's file name, so that
# uninstall can put the original back. Top level, where libcni ignores unknown keys.
CONVERTED_FROM = "mizzen.io/converted-from"
# The extensions libcni reads, in the order of its directory scan (it sorts by name, not by type).
CONFIG_EXTENSIONS = (".conf", ".conflist", ".json")
# Files we create ourselves are never anybody's primary network.
OWN_PREFIX = "mizzen-cni"

Conf = dict[str, Any]


def candidate_names(names: Iterable[str]) -> list[str]:
    """File names that a runtime would consider as network configs, in the order it tries them."""
    # Hidden files count too (libcni does not skip them); our temporaries end in .tmp instead.
    return sorted(n for n in names if n.endswith(CONFIG_EXTENSIONS) and not n.startswith(OWN_PREFIX))


def is_list(conf: Mapping[str, Any]) -> bool:
    """A conflist has a ``plugins`` array; a single-plugin config has a ``type`` instead."""
    return isinstance(conf.get("plugins"), list)


def is_valid(conf: Any) -> bool:
    """Whether the runtime would accept this as a network config (it skips files that are not)."""
    if not isinstance(conf, dict):
        return False
    if is_list(conf):
        return bool(conf["plugins"]) and all(isinstance(p, dict) and p.get("type") for p in conf["plugins"])
    return isinstance(conf.get("type"), str) and bool(conf["type"])


def plugin_entry(
    *,
    log_level: str = "info",
    exclude_namespaces: Sequence[str] = ("kube-system",),
    kubeconfig: str | None = None,
) -> Conf:
    """Our entry in a conflist's ``plugins``; ``kubeconfig`` is a path as the runtime sees it."""
    entry: Conf = {
        "type": PLUGIN_TYPE,
        "log_level": log_level,
        "exclude_namespaces": list(exclude_namespaces),
    }
    if kubeconfig:
        entry["kubernetes"] = {"kubeconfig": kubeconfig}
    return entry


def _index(plugins: Sequence[Any]) -> int | None:
    for i, plugin in enumerate(plugins):
        if isinstance(plugin, dict) and plugin.get("type") == PLUGIN_TYPE:
            return i
    return None


def has_entry(conf: Mapping[str, Any], entry: Mapping[str, Any] | None = None) -> bool:
    """Whether ``conf`` is a conflist holding our plugin (exactly ``entry``, when given)."""
    if not is_list(conf):
        return False
    i = _index(conf["plugins"])
    if i is None:
        return False
    return entry is None or conf["plugins"][i] == entry


def with_entry(conflist: Mapping[str, Any], entry: Mapping[str, Any]) -> Conf:
    """``conflist`` with our entry appended, or replaced where it already is (idempotent)."""
    out = copy.deepcopy(dict(conflist))
    plugins: list[Any] = out["plugins"]
    i = _index(plugins)
    if i is None:
        # Last, so that the primary and any plugins chained after it have set up the
        # interface before we program rules inside the netns.
        plugins.append(dict(entry))
    else:
        plugins[i] = dict(entry)
    return out


def without_entry(conflist: Mapping[str, Any]) -> Conf:
    """``conflist`` with every entry of ours removed."""
    out = copy.deepcopy(dict(conflist))
    out["plugins"] = [p for p in out["plugins"] if not (isinstance(p, dict) and p.get("type") == PLUGIN_TYPE)]
    return out


def converted_name(conf_name: str) -> str:
    """The conflist file name that replaces a single-plugin config file."""
    stem = conf_name.rsplit(".", 1)[0]
    return stem + ".conflist"


def from_single(conf: Mapping[str, Any], conf_name: str, entry: Mapping[str, Any]) -> Conf:
    """A conflist made from a single-plugin config: ``[original, ours]``, remembering its origin.

    The original is kept whole as the first plugin (libcni overwrites ``name`` and
    ``cniVersion`` inside list entries at call time, so leaving them there is harmless)
    which lets :func:`original_single` give it back unchanged.
    """
    out: Conf = {
        "cniVersion": conf.get("cniVersion", "1.0.0"),
        "name": conf.get("name", conf_name.rsplit(".", 1)[0]),
        CONVERTED_FROM: conf_name,
        "plugins": [copy.deepcopy(dict(conf)), dict(entry)],
    }
    return out


def original_single(conflist: Mapping[str, Any]) -> tuple[str, Conf] | None:
    """``(file name, config)`` of the single-plugin config a conflist was made from, if it was."""
    name = conflist.get(CONVERTED_FROM)
    if not isinstance(name, str) or not is_list(conflist):
        return None
    rest = without_entry(conflist)["plugins"]
    if len(rest) != 1 or not isinstance(rest[0], dict):
        # Somebody edited the conversion: there is no single config to give back any more.
        return None
    return name, rest[0]
