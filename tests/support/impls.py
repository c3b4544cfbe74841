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


def twin(module: str) -> ModuleType:
    """The pure-Python twin of a module compiled in Cython's pure-Python mode: the same ``.py`` source,
    loaded as a separate module so that it does not replace the compiled one."""
    import importlib.util
    from pathlib import Path

    compiled = importlib.import_module(module)
    source = Path(compiled.__file__ or "").parent / (module.rsplit(".", 1)[-1] + ".py")
    spec = importlib.util.spec_from_file_location(module + "_twin", source)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def both(module: str) -> list[ModuleType]:
    """The compiled module and its twin (only the twin when extensions are switched off)."""
    compiled = importlib.import_module(module)
    if os.environ.get("MIZZEN_NO_EXTENSIONS") == "1":
        return [compiled]
    assert str(compiled.__file__).endswith(".so"), f"{module} is not compiled: {compiled.__file__}"
    return [compiled, twin(module)]
