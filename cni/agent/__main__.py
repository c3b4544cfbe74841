"""``python -m cni.agent``: the node agent without the ``mizzen-cni`` launcher."""

import sys

from cni.agent import main

sys.exit(main(sys.argv[1:]))
