"""The README's demo command, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

MIZZEN = str(Path(sys.executable).parent / "mizzen")


def test_demo_shows_capture_and_cleans_up() -> None:
    proc = subprocess.run([MIZZEN, "demo"], capture_output=True, text=True, timeout=180)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "client   :15001  outbound captured, original destination 10.247." in out
    assert "server   :15006  inbound captured from 10.247." in out
    assert "client as UID 1337 -> server: 0 outbound captures" in out
    assert "Capture works" in out
    # Nothing of the demo is left behind.
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "mzn-demo-" not in netns
