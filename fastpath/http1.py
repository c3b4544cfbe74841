"""The HTTP/1.1 codec: the compiled ``_http1`` when it is built, else its pure-Python twin ``http1_py``.

``MIZZEN_NO_EXTENSIONS=1`` forces the twin. Both have the same API, events and errors.
"""

from __future__ import annotations

import os

if os.environ.get("MIZZEN_NO_EXTENSIONS") != "1":
    try:
        from fastpath._http1 import *  # noqa: F403
        from fastpath._http1 import __all__

        IMPLEMENTATION = "cython"
    except ImportError:  # not built (an sdist without a compiler, a development checkout)
        from fastpath.http1_py import *  # noqa: F403
        from fastpath.http1_py import __all__

        IMPLEMENTATION = "python"
else:
    from fastpath.http1_py import *  # noqa: F403
    from fastpath.http1_py import __all__  # noqa: F401

    IMPLEMENTATION = "python"
