"""An OTLP/HTTP trace receiver as a process (for a pod of a test mesh): ``python otlpserver.py PORT FILE``
appends every span it receives to FILE as a JSON line; prints "ready"."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from support.otlp import OtlpReceiver


def main() -> None:
    port, path = int(sys.argv[1]), Path(sys.argv[2])
    receiver = OtlpReceiver("0.0.0.0", port)
    print("ready", flush=True)
    written = 0
    while True:
        time.sleep(0.05)
        spans = list(receiver.spans)
        if len(spans) > written:
            with path.open("a") as out:
                for span in spans[written:]:
                    out.write(json.dumps(span) + "\n")
            written = len(spans)


if __name__ == "__main__":
    main()
