"""A packet capture on a Linux interface (AF_PACKET), for asserting what actually crossed the wire.

No tcpdump needed: a raw socket on the node's bridge sees every frame between the pods. Frames are parsed
as Ethernet / IPv4 / TCP; segments with payload are kept as (src, sport, dst, dport, payload).
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import NamedTuple

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1


class Segment(NamedTuple):
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


class Capture:
    def __init__(self, interface: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((interface, 0))
        # Promiscuous: a bridge passes up the frames it switches between its ports only then.
        mreq = struct.pack("iHH8s", socket.if_nametoindex(interface), PACKET_MR_PROMISC, 0, b"")
        self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        self.sock.settimeout(0.2)
        self.segments: list[Segment] = []
        self._stop = threading.Event()
        self._seen: set[tuple[str, int, str, int, int]] = set()  # (flow, seq): a bridge shows frames twice
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self._parse(frame)

    def _parse(self, frame: bytes) -> None:
        if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
            return
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6:  # TCP
            return
        total = struct.unpack("!H", ip[2:4])[0]
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        tcp = ip[ihl:total]
        if len(tcp) < 20:
            return
        sport, dport, seq = struct.unpack("!HHI", tcp[:8])
        payload = tcp[(tcp[12] >> 4) * 4 :]
        if not payload:
            return
        key = (src, sport, dst, dport, seq)
        if key in self._seen:
            return
        self._seen.add(key)
        self.segments.append(Segment(src, sport, dst, dport, bytes(payload)))

    def stop(self) -> list[Segment]:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        return self.segments

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.stop()


def streams(segments: list[Segment], a: str, b: str, port: int) -> dict[tuple[str, int, str, int], bytes]:
    """The bytes of each direction of each connection between ``a`` and ``b`` on ``port``, in order seen."""
    out: dict[tuple[str, int, str, int], bytes] = {}
    for s in segments:
        if {s.src, s.dst} == {a, b} and port in (s.sport, s.dport):
            key = (s.src, s.sport, s.dst, s.dport)
            out[key] = out.get(key, b"") + s.payload
    return out


def tls_records(data: bytes) -> list[int]:
    """The content types of the TLS records ``data`` consists of; raises ValueError if it is not TLS."""
    types = []
    i = 0
    while i < len(data):
        if i + 5 > len(data):
            break  # a record cut by the end of the capture
        kind, major = data[i], data[i + 1]
        if kind not in (20, 21, 22, 23) or major != 3:
            raise ValueError(f"not a TLS record at offset {i}: {data[i : i + 16]!r}")
        length = struct.unpack("!H", data[i + 3 : i + 5])[0]
        types.append(kind)
        i += 5 + length
    return types
