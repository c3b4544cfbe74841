"""mizzen-proxy: the sidecar, with its Cython hot path.

``MIZZEN_NO_EXTENSIONS=1`` runs the pure-Python twins even where compiled modules are installed: the
import system prefers an extension module to a ``.py`` of the same name, so a finder steps in for the
modules that have both.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

_HERE = Path(__file__).parent


class _PurePythonFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("fastpath."):
            return None
        rel = Path(*fullname.split(".")[1:])
        source = _HERE / rel.with_suffix(".py")
        if source.exists() and source.with_suffix(".pxd").exists():
            return importlib.util.spec_from_file_location(fullname, source)
        return None


if os.environ.get("MIZZEN_NO_EXTENSIONS") == "1":
    sys.meta_path.insert(0, _PurePythonFinder())


def compiled() -> dict[str, bool]:
    """Which accelerated modules run compiled in this process (for the admin page and tests).

    Asked of the import system rather than of ``sys.modules``: some modules (the HTTP/2 codec) are only
    imported when a connection needs them, and the answer is about what they would be when it does."""
    names = ["fastpath._http1"] + [
        f"fastpath.{p.stem}" for p in sorted(_HERE.glob("*.pxd")) if p.with_suffix(".py").exists()
    ]
    out = {}
    for name in names:
        mod = sys.modules.get(name)
        if mod is not None:
            origin = str(getattr(mod, "__file__", ""))
        elif os.environ.get("MIZZEN_NO_EXTENSIONS") == "1":
            origin = ""  # the twins run; _http1's twin has a name of its own
        else:
            spec = importlib.util.find_spec(name)
            origin = str(spec.origin if spec is not None else "")
        out[name] = origin.endswith(".so")
    return out
