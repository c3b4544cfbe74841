"""The bundled plugin (``python -m cni.bundle``) runs where no Python is installed.

The bundle is built once per module. The no-Python test hides every Python the host has inside a private
mount namespace and gives the plugin an empty environment, the way a node without Python would look.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from support import cniplugin
from support.cniplugin import PREV_RESULT, call, nat, netconf, pod

from cni import bundle, rules, spec

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The CNI variables a runtime sets; the sandbox passes exactly these through ``env -i``.
CNI_VARS = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH", "CNI_ARGS")


def _build(dest: Path, *args: str) -> Path:
    proc = subprocess.run(
        [sys.executable, "-m", "cni.bundle", str(dest), "--check", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    exe = dest / bundle.NAME
    assert proc.stdout.strip() == str(exe)
    return exe


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default bundle, built once; its launcher's path."""
    missing = [tool for tool in ("gcc", "patchelf", "ldd") if shutil.which(tool) is None]
    if missing and not IN_CI:  # CI images carry the build tools: there a missing one must fail loudly
        pytest.skip(f"building the bundle needs {', '.join(missing)}")
    return _build(tmp_path_factory.mktemp("bundle"))


def _use(monkeypatch: pytest.MonkeyPatch, exe: Path) -> None:
    # cniplugin resolves MIZZEN_CNI_PLUGIN once, at import; tests that swap the executable patch the result.
    monkeypatch.setattr(cniplugin, "PLUGIN", str(exe))


def _version(exe: Path, cwd: Path | str = "/") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(exe)],
        env={"CNI_COMMAND": "VERSION"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version_prints_the_supported_versions(bundled: Path) -> None:
    proc = _version(bundled)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == spec.version_result()


def test_manifest_names_the_glibc_baseline(bundled: Path) -> None:
    manifest = json.loads((bundled.parent / bundle.DATA_DIR / "BUNDLE.json").read_text())
    assert manifest["tool"] == "python"
    assert manifest["python"] == sys.version.split()[0]
    major, minor = (int(part) for part in manifest["glibc_min"].split("."))
    built_with = os.confstr("CS_GNU_LIBC_VERSION") or ""
    assert (major, minor) <= tuple(int(part) for part in built_with.split()[-1].split(".")[:2])


def _hidden_pythons() -> tuple[list[str], list[str]]:
    """Directories and executables through which the host's Pythons, ours included, could be found."""
    dirs = {
        sysconfig.get_path("stdlib"),
        sysconfig.get_path("platstdlib"),
        *site.getsitepackages(),
        "/usr/lib/python3",
        "/usr/local/lib",
    }
    if sys.prefix != sys.base_prefix:  # a venv: hide all of it (never a system prefix such as /usr)
        dirs.add(sys.prefix)
    dirs.add(str(bundle._package_dir("cni").parent))  # the checkout, for an editable install
    files = {os.path.realpath(sys.executable), *map(str, Path("/usr/bin").glob("python3*"))}
    top: list[str] = []
    for d in sorted(dirs):  # a parent sorts before its children: mount over the parent only
        if Path(d).is_dir() and not any(d.startswith(t + "/") for t in top):
            top.append(d)
    return top, sorted(f for f in files if Path(f).is_file())


def _no_python_node(tmp_path: Path) -> Path:
    """A script that runs its arguments the way a node without Python would.

    It enters a private mount namespace, mounts an empty tmpfs over every directory a Python could come
    from, puts /dev/null over the interpreters, and execs the command with only the CNI variables set.
    """
    dirs, files = _hidden_pythons()
    hide = [f"mount -t tmpfs -o size=1m mizzen-test {shlex.quote(d)}" for d in dirs]
    hide += [f"mount --bind /dev/null {shlex.quote(f)}" for f in files]
    passed = " ".join(f'{v}="${v}"' for v in CNI_VARS)
    inner = " && ".join([*hide, f'exec env -i {passed} "$@"'])
    script = tmp_path / "no-python-node"
    script.write_text(
        "#!/bin/sh\n"
        f'exec unshare --mount --propagation private /bin/sh -c {shlex.quote(inner)} no-python-node "$@"\n'
    )
    script.chmod(0o755)
    return script


@pytest.mark.root
def test_add_and_del_on_a_node_without_python(
    bundled: Path, tmp_path: Path, netns_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs, files = _hidden_pythons()
    assert not any(str(bundled).startswith(d + "/") for d in dirs), "the bundle must not be hidden itself"
    node = _no_python_node(tmp_path)
    # The sandbox must really hide every Python, or this test proves nothing.
    gone = " && ".join(
        [
            *(f"[ ! -e {shlex.quote(d)}/os.py ]" for d in dirs),
            *(f"! {shlex.quote(f)} -c pass 2>/dev/null" for f in files),
        ]
    )
    probe = subprocess.run(
        [str(node), "/bin/sh", "-c", gone], capture_output=True, text=True, timeout=60, check=False
    )
    assert probe.returncode == 0, probe.stderr

    wrapper = tmp_path / "mizzen-cni"  # what the runtime executes: the bundle, on that node
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(str(node))} {shlex.quote(str(bundled))}\n")
    wrapper.chmod(0o755)
    _use(monkeypatch, wrapper)
    code, out = call("ADD", netns_path, netconf(pod()))
    assert (code, out) == (0, PREV_RESULT)
    added = nat(netns_path)
    assert ":ISTIO_OUTPUT - [0:0]" in added
    assert "-A OUTPUT -j ISTIO_OUTPUT" in added

    code, out = call("DEL", netns_path, netconf(pod()))
    assert code == 0, out
    assert [line for line in nat(netns_path) if "ISTIO_" in line] == []


def test_runs_through_a_symlink_from_any_cwd(
    bundled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    links = tmp_path / "opt-cni-bin"
    links.mkdir()
    link = links / "mizzen-cni"
    link.symlink_to(bundled)
    # A cwd full of modules that would break the plugin if the cwd ever reached sys.path.
    cwd = tmp_path / "cwd"
    (cwd / "cni").mkdir(parents=True)
    for poison in (cwd / "json.py", cwd / "cni" / "__init__.py"):
        poison.write_text("raise SystemExit('imported from the cwd')\n")

    proc = _version(link, cwd)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == spec.version_result()

    # argv and stdout pass through the launcher: the rules subcommand prints what the builder builds.
    annotation = "traffic.sidecar.istio.io/excludeOutboundPorts=5432"
    proc = subprocess.run(
        [str(link), "rules", "-a", annotation],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    key, value = annotation.split("=", 1)
    assert proc.stdout == rules.build(rules.config_from_annotations({key: value}), 4)

    # stdin and the exit code pass through too: bad JSON is a CNI decode error, exit status 1.
    monkeypatch.chdir(cwd)
    _use(monkeypatch, link)
    code, out = call("ADD", "/nonexistent", b"{not json")
    assert code == 1
    assert out["code"] == spec.DECODE_FAILURE


def test_a_copy_with_fresh_mtimes_runs_and_writes_nothing(bundled: Path, tmp_path: Path) -> None:
    # How a node agent installs it: a plain copy (mtimes not kept) into a directory of its choosing.
    dest = tmp_path / "host-cni-bin"
    dest.mkdir()
    subprocess.run(["cp", "-r", str(bundled), str(bundled.parent / bundle.DATA_DIR), str(dest)], check=True)
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    proc = _version(dest / bundle.NAME)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == spec.version_result()
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before


def test_a_launcher_without_its_bundle_reports_a_cni_error(bundled: Path, tmp_path: Path) -> None:
    alone = tmp_path / "mizzen-cni"
    shutil.copy2(bundled, alone)
    proc = _version(alone)
    assert proc.returncode == 127
    err = json.loads(proc.stdout)
    assert err["code"] == spec.IO_FAILURE
    assert str(tmp_path / bundle.DATA_DIR) in err["details"]


@pytest.mark.skipif(
    importlib.util.find_spec("PyInstaller") is None and not IN_CI, reason="needs the [build] extra"
)
def test_pyinstaller_fallback_builds_a_working_plugin(tmp_path: Path) -> None:
    exe = _build(tmp_path, "--tool", "pyinstaller")
    assert (tmp_path / bundle.DATA_DIR).is_dir()
    proc = _version(exe)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == spec.version_result()


def test_the_node_agent_installs_a_runnable_bundle(
    bundled: Path, tmp_path: Path, netns_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cni.agent.install import BinaryInstaller

    node_bin = tmp_path / "opt-cni-bin"
    installer = BinaryInstaller(bundled, node_bin)
    assert installer.ensure() is True and installer.is_installed()
    installed = node_bin / bundle.NAME
    assert _version(installed).returncode == 0
    _use(monkeypatch, installed)
    assert call("ADD", netns_path, netconf(pod())) == (0, PREV_RESULT)
    assert "-A OUTPUT -j ISTIO_OUTPUT" in nat(netns_path)
    assert installer.remove() is True and not any(node_bin.iterdir())
