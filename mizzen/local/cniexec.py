"""A small CNI runtime: runs a conflist's plugins the way libcni does.

The local node must exercise the same contract a kubelet's runtime does, so
this follows libcni's behaviour rather than inventing a shortcut:

* ADD runs each plugin in order; every plugin but the first gets the previous
  plugin's result as ``prevResult``. The final result is cached on disk.
* DEL runs the plugins in reverse order, each with the cached ADD result as
  ``prevResult``; the cache entry is removed afterwards.
* CHECK runs the plugins in order with the cached result.
* Each plugin's stdin is its own conf plus the list's ``cniVersion`` and
  ``name``, the runtime ``args`` and, for capability-aware plugins,
  ``runtimeConfig``.
* A non-zero exit is turned into :class:`CniError` carrying the plugin's error
  object (``code``, ``msg``, ``details``).

GC and STATUS are optional for a runtime and are not issued here.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mizzen import logs

log = logs.get("local.cni")

ADD = "ADD"
DEL = "DEL"
CHECK = "CHECK"
VERSION = "VERSION"

DEFAULT_TIMEOUT = 60.0


class CniError(Exception):
    """A plugin failed; carries the CNI error object it printed (``code`` is None if it printed none)."""

    def __init__(
        self,
        msg: str,
        *,
        code: int | None = None,
        details: str = "",
        plugin: str = "",
        command: str = "",
        stderr: str = "",
    ) -> None:
        self.code = code
        self.msg = msg
        self.details = details
        self.plugin = plugin
        self.command = command
        self.stderr = stderr
        text = f"{plugin} {command}: {msg}" if plugin else msg
        if code is not None:
            text += f" (code {code})"
        if details:
            text += f": {details}"
        super().__init__(text)


@dataclass(frozen=True)
class RuntimeConf:
    """What the runtime knows about one attachment (libcni's ``RuntimeConf``)."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    # CNI_ARGS pairs, in order; IgnoreUnknown=1 is prepended when building the env.
    cni_args: Sequence[tuple[str, str]] = ()
    # Injected as the ``args`` key of every plugin's conf (CNI conventions).
    args: Mapping[str, Any] | None = None
    # Capability values; a plugin receives those it declares in ``capabilities``.
    capability_args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PluginRequest:
    """One plugin invocation: its environment and its stdin."""

    plugin: str
    command: str
    env: dict[str, str]
    stdin: bytes


def cni_args_string(pairs: Sequence[tuple[str, str]]) -> str:
    """``IgnoreUnknown=1;K=V;...``: IgnoreUnknown first so plugins tolerate keys they do not know."""
    items = [("IgnoreUnknown", "1"), *[(k, v) for k, v in pairs if k != "IgnoreUnknown"]]
    return ";".join(f"{k}={v}" for k, v in items)


def plugin_conf(
    conflist: Mapping[str, Any],
    plugin: Mapping[str, Any],
    rt: RuntimeConf,
    prev_result: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The JSON a plugin reads on stdin: its conf with the list's name and version injected."""
    conf: dict[str, Any] = dict(plugin)
    conf["cniVersion"] = conflist["cniVersion"]
    conf["name"] = conflist["name"]
    if prev_result is not None:
        conf["prevResult"] = prev_result
    if rt.args:
        # Runtime args win over any the conf file carried, key by key.
        merged = dict(conf.get("args") or {})
        merged.update(rt.args)
        conf["args"] = merged
    caps = plugin.get("capabilities") or {}
    runtime_config = {k: v for k, v in rt.capability_args.items() if caps.get(k)}
    if runtime_config:
        conf["runtimeConfig"] = runtime_config
    return conf


def build_request(
    command: str,
    conflist: Mapping[str, Any],
    plugin: Mapping[str, Any],
    rt: RuntimeConf,
    cni_path: Sequence[Path],
    prev_result: Mapping[str, Any] | None = None,
    base_env: Mapping[str, str] | None = None,
) -> PluginRequest:
    """A pure function: the env and stdin for one plugin invocation.

    The plugin inherits the runtime's environment (it may need PATH, e.g. for
    iptables), minus any stale ``CNI_*`` variables, plus the CNI ones.
    """
    inherited = os.environ if base_env is None else base_env
    env = {k: v for k, v in inherited.items() if not k.startswith("CNI_")}
    env.update(
        CNI_COMMAND=command,
        CNI_CONTAINERID=rt.container_id,
        CNI_NETNS=rt.netns,
        CNI_IFNAME=rt.ifname,
        CNI_ARGS=cni_args_string(rt.cni_args),
        CNI_PATH=os.pathsep.join(str(p) for p in cni_path),
    )
    stdin = json.dumps(plugin_conf(conflist, plugin, rt, prev_result)).encode()
    return PluginRequest(plugin=str(plugin["type"]), command=command, env=env, stdin=stdin)


def find_plugin(name: str, cni_path: Sequence[Path]) -> Path:
    """The first executable called ``name`` on the CNI path, as libcni's FindInPath."""
    if not name or "/" in name:
        raise CniError(f"invalid plugin type {name!r}", plugin=name)
    for directory in cni_path:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(f"failed to find plugin {name!r} in path {[str(p) for p in cni_path]}", plugin=name)


def _error_from(request: PluginRequest, returncode: int, stdout: bytes, stderr: bytes) -> CniError:
    """Turn a failed run into a CniError, using the plugin's error object when it printed one."""
    err_text = stderr.decode(errors="replace").strip()

    def error(msg: str, code: int | None = None, details: str = "") -> CniError:
        return CniError(
            msg, code=code, details=details, plugin=request.plugin, command=request.command, stderr=err_text
        )

    if not stdout.strip():
        return error(f"plugin failed with exit status {returncode} and no error message")
    try:
        obj = json.loads(stdout)
    except ValueError:
        return error(f"plugin failed and its error is not JSON: {stdout[:500]!r}")
    if not isinstance(obj, dict):
        return error(f"plugin failed with a non-object error: {obj!r}")
    code = obj.get("code")
    details = str(obj.get("details", ""))
    return error(str(obj.get("msg", "")), code if isinstance(code, int) else None, details)


class CniRuntime:
    """Runs conflists against plugins found on ``cni_path``; caches ADD results under ``cache_dir``."""

    def __init__(self, cni_path: Sequence[Path], cache_dir: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.cni_path = [Path(p) for p in cni_path]
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout

    # -- the verbs -------------------------------------------------------------------------------------

    def add(self, conflist: Mapping[str, Any], rt: RuntimeConf) -> dict[str, Any]:
        """ADD every plugin in order; returns (and caches) the last plugin's result."""
        result: dict[str, Any] | None = None
        for plugin in conflist["plugins"]:
            request = build_request(ADD, conflist, plugin, rt, self.cni_path, prev_result=result)
            result = self._run(request)
            if result is None:
                raise CniError("plugin returned no result for ADD", plugin=request.plugin, command=ADD)
        assert result is not None, "a conflist has at least one plugin"
        self._write_cache(conflist, rt, result)
        return result

    def delete(self, conflist: Mapping[str, Any], rt: RuntimeConf) -> None:
        """DEL every plugin in reverse order with the cached ADD result; then forget the cache."""
        cached = self.cached_result(str(conflist["name"]), rt)
        for plugin in reversed(conflist["plugins"]):
            self._run(build_request(DEL, conflist, plugin, rt, self.cni_path, prev_result=cached))
        self._cache_path(str(conflist["name"]), rt).unlink(missing_ok=True)

    def check(self, conflist: Mapping[str, Any], rt: RuntimeConf) -> None:
        """CHECK every plugin in order against the cached ADD result."""
        cached = self.cached_result(str(conflist["name"]), rt)
        if cached is None:
            raise CniError(f"no cached result for {rt.container_id} to CHECK", command=CHECK)
        for plugin in conflist["plugins"]:
            self._run(build_request(CHECK, conflist, plugin, rt, self.cni_path, prev_result=cached))

    def version(self, plugin_type: str, cni_version: str = "1.0.0") -> dict[str, Any]:
        """Ask a plugin which spec versions it supports."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env["CNI_COMMAND"] = VERSION
        env["CNI_PATH"] = os.pathsep.join(str(p) for p in self.cni_path)
        stdin = json.dumps({"cniVersion": cni_version}).encode()
        result = self._run(PluginRequest(plugin=plugin_type, command=VERSION, env=env, stdin=stdin))
        return result or {}

    # -- the result cache ------------------------------------------------------------------------------

    def cached_result(self, network: str, rt: RuntimeConf) -> dict[str, Any] | None:
        """The result cached by the last successful ADD for this attachment, if any."""
        try:
            entry = json.loads(self._cache_path(network, rt).read_text())
        except (FileNotFoundError, ValueError):
            return None
        result = entry.get("result")
        return result if isinstance(result, dict) else None

    def _cache_path(self, network: str, rt: RuntimeConf) -> Path:
        # libcni's layout: results/<network>-<container id>-<ifname>
        return self.cache_dir / "results" / f"{network}-{rt.container_id}-{rt.ifname}"

    def _write_cache(self, conflist: Mapping[str, Any], rt: RuntimeConf, result: Mapping[str, Any]) -> None:
        path = self._cache_path(str(conflist["name"]), rt)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "kind": "cniCacheV1",
            "containerId": rt.container_id,
            "ifName": rt.ifname,
            "networkName": conflist["name"],
            "config": conflist,
            "cniArgs": [list(p) for p in rt.cni_args],
            "capabilityArgs": dict(rt.capability_args),
            "result": result,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entry))
        tmp.replace(path)

    # -- running a plugin ------------------------------------------------------------------------------

    def _run(self, request: PluginRequest) -> dict[str, Any] | None:
        binary = find_plugin(request.plugin, self.cni_path)
        log.debug(
            "cni exec",
            plugin=request.plugin,
            command=request.command,
            container=request.env.get("CNI_CONTAINERID"),
        )
        try:
            proc = subprocess.run(
                [str(binary)],
                input=request.stdin,
                env=request.env,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CniError(
                f"plugin timed out after {self.timeout}s", plugin=request.plugin, command=request.command
            ) from exc
        stderr = proc.stderr.decode(errors="replace").strip()
        if stderr:
            # Plugins log to stderr; keep it visible when debugging the chain.
            log.debug("cni plugin stderr", plugin=request.plugin, command=request.command, stderr=stderr)
        if proc.returncode != 0:
            raise _error_from(request, proc.returncode, proc.stdout, proc.stderr)
        if not proc.stdout.strip():
            return None
        try:
            result = json.loads(proc.stdout)
        except ValueError as exc:
            raise CniError(
                f"plugin printed a result that is not JSON: {proc.stdout[:500]!r}",
                plugin=request.plugin,
                command=request.command,
                stderr=stderr,
            ) from exc
        if not isinstance(result, dict):
            raise CniError(
                f"plugin printed a non-object result: {result!r}",
                plugin=request.plugin,
                command=request.command,
            )
        return result
