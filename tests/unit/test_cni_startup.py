"""The plugin runs once per pod: what it imports on ADD is part of its latency."""

from __future__ import annotations

from cni import fastjson


def test_plugin_add_path_stays_lean() -> None:
    """The modules that made ADD miss its ~50 ms budget stay out of a default pod's start-up."""
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(fastjson.__file__).parent.parent)
    code = (
        "import sys\n"
        "from cni import plugin, rules, spec\n"
        "rules.config_from_annotations({'sidecar.istio.io/status': '{}'})\n"
        "spec.parse({'CNI_COMMAND': 'VERSION'}, b'')\n"
        "heavy = {'typing', 're', 'json', 'subprocess', 'ipaddress', 'dataclasses', 'shutil', 'structlog'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path[:0] = [{root!r}]\n{code}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
