"""The implementations a twin-tested module has: the pure-Python twin, and the compiled one.

The compiled module must be there (the test command builds it); only a development run with
``MIZZEN_NO_EXTENSIONS=1`` may leave it out, and then only the twin is tested.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def implementations(python: str, compiled: str) -> list[ModuleType]:
    mods = [importlib.import_module(python)]
    if os.environ.get("MIZZEN_NO_EXTENSIONS") != "1":
        mods.append(importlib.import_module(compiled))  # an ImportError here is a failed build
    return mods


def ids(mods: list[ModuleType]) -> list[str]:
    return ["python" if m.__name__.endswith("_py") else "cython" for m in mods]
