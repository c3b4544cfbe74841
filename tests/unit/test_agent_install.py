"""Installing the plugin's executable and config entry on a node (temp dirs stand for the host's)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path, PurePosixPath

import pytest
from support.cniconfigs import BRIDGE

from cni.agent import conflist, install
from cni.agent.reconcile import Reconciler, Settings
from mizzen import logs

KINDNET = {"cniVersion": "0.4.0", "name": "kindnet", "plugins": [{"type": "ptp"}, {"type": "portmap"}]}
ENTRY = conflist.plugin_entry()


def write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


def read(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Path]:
    dirs = {"conf": tmp_path / "net.d", "bin": tmp_path / "bin", "src": tmp_path / "src"}
    for d in dirs.values():
        d.mkdir()
    plugin = dirs["src"] / "mizzen-cni"
    plugin.write_bytes(b"#!/bin/sh\necho plugin v1\n")
    dirs["plugin"] = plugin
    return dirs


# -- primary selection ------------------------------------------------------------------------------


def test_primary_is_lexically_first_valid_config(node: dict[str, Path]) -> None:
    conf = node["conf"]
    assert install.find_primary(conf) is None
    write(conf / "20-other.conflist", KINDNET)
    write(conf / "10-kindnet.conflist", KINDNET)
    (conf / "05-broken.conflist").write_text("{not json")
    write(conf / "mizzen-cni.conflist", KINDNET)  # ours: never primary
    (conf / "01-dir.conf").mkdir()
    primary = install.find_primary(conf)
    assert primary is not None and primary.path.name == "10-kindnet.conflist"
    assert install.find_primary(conf / "missing") is None


# -- conflist ----------------------------------------------------------------------------------------


def test_insert_into_conflist_then_idempotent(node: dict[str, Path]) -> None:
    path = write(node["conf"] / "10-kindnet.conflist", KINDNET)
    os.chmod(path, 0o600)
    result = install.ensure_entry(node["conf"], ENTRY)
    assert result == install.ConfigResult(path, "inserted")
    data = read(path)
    assert data["plugins"] == [*KINDNET["plugins"], ENTRY]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the primary's mode is kept

    before = path.stat()
    again = install.ensure_entry(node["conf"], ENTRY)
    assert again == install.ConfigResult(path, None)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # no rewrite at all

    changed = conflist.plugin_entry(log_level="debug")
    assert install.ensure_entry(node["conf"], changed).change == "updated"
    assert read(path)["plugins"] == [*KINDNET["plugins"], changed]
    assert [p.name for p in node["conf"].iterdir()] == ["10-kindnet.conflist"]  # no temporaries left


def test_conf_is_converted_and_restored(node: dict[str, Path]) -> None:
    conf = node["conf"]
    original = write(conf / "10-bridge.conf", BRIDGE)
    original_text = original.read_text()
    result = install.ensure_entry(conf, ENTRY)
    target = conf / "10-bridge.conflist"
    assert result == install.ConfigResult(target, "converted 10-bridge.conf")
    assert not original.exists()
    data = read(target)
    assert data["plugins"] == [BRIDGE, ENTRY]
    assert data[conflist.CONVERTED_FROM] == "10-bridge.conf"
    assert install.find_primary(conf).path == target  # type: ignore[union-attr]
    assert install.ensure_entry(conf, ENTRY).change is None

    assert install.remove_entries(conf) == ["restored 10-bridge.conf"]
    assert sorted(p.name for p in conf.iterdir()) == ["10-bridge.conf"]
    assert json.loads(original.read_text()) == json.loads(original_text)


def test_primary_rewriting_its_conf_is_converted_again(node: dict[str, Path]) -> None:
    conf = node["conf"]
    write(conf / "10-bridge.conf", BRIDGE)
    install.ensure_entry(conf, ENTRY)
    newer = {**BRIDGE, "bridge": "cni1"}
    write(conf / "10-bridge.conf", newer)  # the primary writes its file again
    result = install.ensure_entry(conf, ENTRY)
    assert result.change == "converted 10-bridge.conf"
    assert read(conf / "10-bridge.conflist")["plugins"][0] == newer
    install.remove_entries(conf)
    assert read(conf / "10-bridge.conf") == newer


def test_conversion_refuses_to_overwrite_a_foreign_conflist(node: dict[str, Path]) -> None:
    conf = node["conf"]
    write(conf / "10-bridge.conf", BRIDGE)
    foreign = write(conf / "10-bridge.conflist", KINDNET)
    with pytest.raises(install.ConfigError, match="not ours"):
        install.ensure_entry(conf, ENTRY)
    assert read(foreign) == KINDNET


def test_remove_entries_cleans_every_config(node: dict[str, Path]) -> None:
    conf = node["conf"]
    a = write(conf / "10-a.conflist", conflist.with_entry(KINDNET, ENTRY))
    b = write(conf / "20-b.conflist", conflist.with_entry(KINDNET, ENTRY))
    c = write(conf / "30-c.conflist", KINDNET)
    c_mtime = c.stat().st_mtime_ns
    assert sorted(install.remove_entries(conf)) == [
        "removed entry from 10-a.conflist",
        "removed entry from 20-b.conflist",
    ]
    assert read(a) == read(b) == KINDNET
    assert c.stat().st_mtime_ns == c_mtime
    assert install.remove_entries(conf) == []


# -- executable --------------------------------------------------------------------------------------


def test_binary_copied_with_mode_and_only_when_different(node: dict[str, Path]) -> None:
    binary = install.BinaryInstaller(node["plugin"], node["bin"])
    dest = node["bin"] / "mizzen-cni"
    assert not binary.is_installed()
    assert binary.ensure() is True
    assert dest.read_bytes() == node["plugin"].read_bytes()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    ino = dest.stat().st_ino
    assert binary.ensure() is False and dest.stat().st_ino == ino

    dest.write_bytes(b"something else")  # same inode, different content
    assert binary.ensure() is True
    assert dest.read_bytes() == node["plugin"].read_bytes()

    os.chmod(dest, 0o644)
    assert binary.ensure() is True and stat.S_IMODE(dest.stat().st_mode) == 0o755

    assert binary.remove() is True and not dest.exists()
    assert binary.remove() is False


def test_binary_never_removes_its_own_source(node: dict[str, Path]) -> None:
    node["plugin"].chmod(0o755)
    binary = install.BinaryInstaller(node["plugin"], node["plugin"].parent)
    assert binary.ensure() is False  # already there: it is the source
    assert binary.remove() is False and node["plugin"].exists()


def test_binary_source_must_exist(node: dict[str, Path]) -> None:
    with pytest.raises(FileNotFoundError):
        install.BinaryInstaller(node["src"] / "nope", node["bin"])


# -- one reconcile pass ------------------------------------------------------------------------------


def settings(node: dict[str, Path], **kw: object) -> Settings:
    base: dict = {
        "conf_dir": node["conf"],
        "bin_dir": node["bin"],
        "plugin_binary": node["plugin"],
        "host_conf_dir": PurePosixPath("/etc/cni/net.d"),
        "sa_dir": node["src"] / "no-sa",
    }
    return Settings(**{**base, **kw})  # type: ignore[arg-type]


def test_reconcile_waits_for_primary_then_installs(node: dict[str, Path]) -> None:
    rec = Reconciler(settings(node), logs.get("test"))
    status = rec.reconcile()
    assert not status.ready and "no primary" in status.reason
    assert not list(node["conf"].iterdir())  # never writes a config of its own
    assert (node["bin"] / "mizzen-cni").exists()  # the executable can go in early

    write(node["conf"] / "10-kindnet.conflist", KINDNET)
    status = rec.reconcile()
    assert status.ready and status.primary == node["conf"] / "10-kindnet.conflist"
    entry = read(node["conf"] / "10-kindnet.conflist")["plugins"][-1]
    assert entry == conflist.plugin_entry()  # no service account: no kubernetes key

    assert rec.uninstall() is True
    assert read(node["conf"] / "10-kindnet.conflist") == KINDNET
    assert not (node["bin"] / "mizzen-cni").exists()
    # After uninstall a late pass must not put anything back.
    assert not rec.reconcile().ready
    assert read(node["conf"] / "10-kindnet.conflist") == KINDNET


def test_reconcile_reports_unwritable_dir_as_not_ready(node: dict[str, Path]) -> None:
    rec = Reconciler(settings(node, bin_dir=node["plugin"] / "not-a-dir"), logs.get("test"))
    status = rec.reconcile()
    assert not status.ready and status.reason.startswith("install failed")


def _bundle(root: Path, version: str) -> Path:
    (root / "mizzen-cni.d" / "bin").mkdir(parents=True, exist_ok=True)
    (root / "mizzen-cni.d" / "lib").mkdir(exist_ok=True)
    (root / "mizzen-cni.d" / "bin" / "python3.11").write_text("interpreter")
    (root / "mizzen-cni.d" / "lib" / "plugin.py").write_text(f"VERSION = {version!r}")
    launcher = root / "mizzen-cni"
    launcher.write_text("launcher")
    return launcher


def test_bundle_directory_installed_beside_the_launcher(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    binary = install.BinaryInstaller(_bundle(tmp_path / "v1", "1"), bin_dir)
    assert not binary.is_installed()
    assert binary.ensure() is True and binary.is_installed()
    assert (bin_dir / "mizzen-cni.d" / "lib" / "plugin.py").read_text() == "VERSION = '1'"
    assert binary.ensure() is False

    # Damage inside the bundle that the marker cannot see is not checked every pass, but a
    # missing directory (or marker) is, and brings a full copy back.
    import shutil

    shutil.rmtree(bin_dir / "mizzen-cni.d")
    assert not binary.is_installed() and binary.ensure() is True
    assert (bin_dir / "mizzen-cni.d" / "bin" / "python3.11").read_text() == "interpreter"

    # An upgraded bundle replaces the old one whole, leaving no staging directories behind.
    upgraded = install.BinaryInstaller(_bundle(tmp_path / "v2", "2"), bin_dir)
    assert not upgraded.is_installed() and upgraded.ensure() is True
    assert (bin_dir / "mizzen-cni.d" / "lib" / "plugin.py").read_text() == "VERSION = '2'"
    assert sorted(p.name for p in bin_dir.iterdir()) == ["mizzen-cni", "mizzen-cni.d"]

    assert upgraded.remove() is True and list(bin_dir.iterdir()) == []
