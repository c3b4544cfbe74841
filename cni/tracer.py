"""A capture tracer: listens where the sidecar listens, reports every redirected connection, relays it.

It answers the question "is this pod's traffic captured, and where was it going?"
without a sidecar: on 15001 (outbound) and 15006 (inbound) it recovers each
connection's original destination with ``SO_ORIGINAL_DST``, prints one JSON line
per connection, and relays the bytes the way the sidecar would (outbound: to the
original destination; inbound: to the app, from 127.0.0.6 so the hop is not
captured again). Run it as UID 1337, like the sidecar:

    python -m cni.tracer [--outbound-port 15001] [--inbound-port 15006] [--events FILE]

The local demo and the capture tests use it; it is also a diagnostic for nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import socket
import sys
import time
from typing import IO

from fastpath.sockets import original_dst

INBOUND_PASSTHROUGH_V4 = "127.0.0.6"
INBOUND_PASSTHROUGH_V6 = "::6"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    total = 0
    try:
        while data := await reader.read(65536):
            total += len(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    return total


class Tracer:
    def __init__(self, events: IO[str], pod: str = "") -> None:
        self.events = events
        self.pod = pod

    def emit(self, **fields: object) -> None:
        self.events.write(json.dumps({"ts": round(time.time(), 6), "pod": self.pod, **fields}) + "\n")
        self.events.flush()

    async def handle(
        self, direction: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sock: socket.socket = writer.get_extra_info("socket")
        peer = writer.get_extra_info("peername")
        try:
            dst_ip, dst_port = original_dst(sock)
        except OSError as exc:  # reached directly, not through a REDIRECT rule
            self.emit(direction=direction, error=f"no original destination: {exc.strerror}", source=peer[0])
            writer.close()
            return
        event = {
            "direction": direction,
            "source": f"{peer[0]}:{peer[1]}",
            "original_dst": f"{dst_ip}:{dst_port}",
        }
        local: tuple[str, int] | None = None
        if direction == "inbound":
            local = (INBOUND_PASSTHROUGH_V6 if ":" in dst_ip else INBOUND_PASSTHROUGH_V4, 0)
        try:
            up_reader, up_writer = await asyncio.open_connection(dst_ip, dst_port, local_addr=local)
        except OSError as exc:
            self.emit(**event, error=f"upstream connect failed: {exc.strerror or exc}")
            writer.close()
            return
        self.emit(**event, relayed=True)
        sent, received = await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        for w in (writer, up_writer):
            w.close()
            with contextlib.suppress(OSError, ConnectionError):
                await w.wait_closed()
        self.emit(**event, closed=True, bytes_sent=sent, bytes_received=received)


async def serve(outbound_port: int, inbound_port: int, events: IO[str], pod: str = "") -> None:
    tracer = Tracer(events, pod)
    servers = []
    for direction, port in (("outbound", outbound_port), ("inbound", inbound_port)):
        handler = functools.partial(tracer.handle, direction)
        servers.append(await asyncio.start_server(handler, host="0.0.0.0", port=port, reuse_address=True))
    tracer.emit(direction="-", listening=[outbound_port, inbound_port], uid=os.getuid())
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cni.tracer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--outbound-port", type=int, default=15001)
    parser.add_argument("--inbound-port", type=int, default=15006)
    parser.add_argument("--events", help="append JSON lines here instead of stdout")
    parser.add_argument("--pod", default=os.environ.get("POD_NAME", ""))
    args = parser.parse_args(argv)
    events = open(args.events, "a", buffering=1) if args.events else sys.stdout
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.outbound_port, args.inbound_port, events, args.pod))
    return 0


if __name__ == "__main__":
    sys.exit(main())
