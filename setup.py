"""Build hook for the Cython fast path.

Every ``fastpath/*.pyx`` is compiled; the pure-Python twins beside them are what
runs when a module is not built or ``MIZZEN_NO_EXTENSIONS=1`` is set (at build time it skips the
compile, for quick development installs).
"""

import os
from pathlib import Path

from setuptools import setup

pyx = sorted(str(p) for p in Path("fastpath").glob("**/*.pyx"))
ext_modules = []
if pyx and os.environ.get("MIZZEN_NO_EXTENSIONS") != "1":
    from Cython.Build import cythonize

    ext_modules = cythonize(pyx, language_level=3, compiler_directives={"boundscheck": False})

setup(ext_modules=ext_modules)
