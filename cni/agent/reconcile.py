"""One pass of "make this node match": executable, kubeconfig, entry in the primary config.

Each pass is idempotent and cheap when nothing changed (stat and read, no
writes), so the agent simply runs it on an interval; whatever was lost since the
last pass (a primary plugin rewriting its conflist, a cleaned bin dir, a rotated
token) is put back and logged. The result doubles as the readiness answer.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cni.agent import conflist, install, kubeconfig

DEFAULT_HOST_CONF_DIR = PurePosixPath("/etc/cni/net.d")


@dataclass(frozen=True, slots=True)
class Settings:
    """Where things go on the node, and what our conflist entry says."""

    conf_dir: Path
    bin_dir: Path
    plugin_binary: Path
    # The conf dir as the runtime on the host sees it; paths written into configs use it.
    host_conf_dir: PurePosixPath = DEFAULT_HOST_CONF_DIR
    sa_dir: Path = kubeconfig.DEFAULT_SA_DIR
    plugin_log_level: str = "info"
    exclude_namespaces: Sequence[str] = ("kube-system",)
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Status:
    """The outcome of a pass: ready only with the executable in place and our entry in the primary."""

    ready: bool
    reason: str
    primary: Path | None = None


class Reconciler:
    """Installs, checks and repairs the plugin on this node; removes it again on :meth:`uninstall`."""

    def __init__(self, settings: Settings, log: Any) -> None:
        self.settings = settings
        self.log = log
        self.binary = install.BinaryInstaller(settings.plugin_binary, settings.bin_dir)
        self.kubeconfig_path = settings.conf_dir / conflist.KUBECONFIG_NAME
        # What has been in place at least once: a later write to it is a repair, not an install.
        self._seen: set[str] = set()
        self._waiting_logged = False
        self._last_error: str | None = None  # a lasting failure is logged once, not every interval
        # Passes run in a worker thread; the lock lets uninstall wait for one in flight,
        # and ``_closed`` keeps a late pass from putting back what uninstall removed.
        self._lock = threading.Lock()
        self._closed = False

    def _changed(self, what: str, **details: Any) -> None:
        event = "repaired" if what in self._seen else "installed"
        self.log.info(event, what=what, **details)

    def _entry(self, with_kubeconfig: bool) -> dict[str, Any]:
        host_path = self.settings.host_conf_dir / conflist.KUBECONFIG_NAME
        return conflist.plugin_entry(
            log_level=self.settings.plugin_log_level,
            exclude_namespaces=self.settings.exclude_namespaces,
            kubeconfig=str(host_path) if with_kubeconfig else None,
        )

    def reconcile(self) -> Status:
        """One pass; never raises for node-side trouble, which is reported as not ready instead."""
        with self._lock:
            if self._closed:
                return Status(False, "shutting down")
            return self._reconcile()

    def _reconcile(self) -> Status:
        s = self.settings
        try:
            if self.binary.ensure():
                self._changed("executable", path=str(self.binary.dest))
            self._seen.add("executable")

            with_kubeconfig = kubeconfig.has_service_account(s.sa_dir)
            if with_kubeconfig:
                if kubeconfig.ensure(self.kubeconfig_path, s.sa_dir, s.env):
                    self._changed("kubeconfig", path=str(self.kubeconfig_path))
                self._seen.add("kubeconfig")

            result = install.ensure_entry(s.conf_dir, self._entry(with_kubeconfig))
        except (OSError, install.ConfigError, kubeconfig.KubeconfigError) as exc:
            if str(exc) != self._last_error:
                self.log.error("install failed", error=str(exc))
                self._last_error = str(exc)
            return Status(False, f"install failed: {exc}")
        self._last_error = None

        if result.path is None:
            if not self._waiting_logged:
                self.log.info("waiting for a primary CNI network config", conf_dir=str(s.conf_dir))
                self._waiting_logged = True
            return Status(False, f"no primary CNI network config in {s.conf_dir} yet")
        self._waiting_logged = False
        if result.change:
            self._changed("conflist entry", path=str(result.path), change=result.change)
        self._seen.add("conflist entry")
        return Status(True, f"chained in {result.path.name}", result.path)

    def uninstall(self) -> bool:
        """Remove everything we installed, config first so no runtime is left pointing at a missing
        executable; True when all of it went. No pass runs after this."""
        with self._lock:
            self._closed = True
            return self._uninstall()

    def close(self) -> None:
        """Stop passes without removing anything (``--keep-on-exit``)."""
        with self._lock:
            self._closed = True

    def _uninstall(self) -> bool:
        ok = True
        for what, step in (
            ("conflist entry", lambda: install.remove_entries(self.settings.conf_dir)),
            ("kubeconfig", lambda: kubeconfig.delete(self.kubeconfig_path)),
            ("executable", self.binary.remove),
        ):
            try:
                done = step()
            except OSError as exc:
                self.log.error("uninstall failed", what=what, error=str(exc))
                ok = False
                continue
            if isinstance(done, list):
                for detail in done:
                    self.log.info("uninstalled", what=what, detail=detail)
            elif done:
                self.log.info("uninstalled", what=what)
        return ok
