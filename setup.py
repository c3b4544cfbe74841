"""Build hook for the Cython fast path.

Two kinds of compiled modules, both under ``fastpath/``:

- ``*.pyx``: hand-written Cython (the HTTP/1.1 codec), with a pure-Python twin beside it;
- ``*.py`` with a ``.pxd`` beside it: Python compiled in Cython's pure-Python mode, the ``.pxd`` giving
  the C types. The ``.py`` is the twin: the same source runs uncompiled.

``MIZZEN_NO_EXTENSIONS=1`` at build time skips the compile (quick development installs); at run time it
makes the twins run even when the compiled modules are there.
"""

import os
from pathlib import Path

from setuptools import setup

sources = sorted(str(p) for p in Path("fastpath").glob("**/*.pyx"))
sources += sorted(str(p.with_suffix(".py")) for p in Path("fastpath").glob("**/*.pxd") if p.with_suffix(".py").exists())
ext_modules = []
if sources and os.environ.get("MIZZEN_NO_EXTENSIONS") != "1":
    from Cython.Build import cythonize

    ext_modules = cythonize(
        sources,
        language_level=3,
        # The .pxd files give the C types; annotations in the .py files are for readers and mypy. Bounds
        # checks and negative indexing stay on: the .py files are ordinary Python (the .pyx turns them
        # off itself, in its header, where it indexes raw buffers).
        compiler_directives={"annotation_typing": False},
    )

setup(ext_modules=ext_modules)
