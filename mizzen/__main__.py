"""``python -m mizzen``: the same CLI as the ``mizzen`` console script."""

from mizzen.cli import main

raise SystemExit(main())
