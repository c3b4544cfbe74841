"""Socket facts the sidecar needs: where a redirected connection was going; TCP keepalive upstream."""

from __future__ import annotations

import socket
import struct

SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv4.h>; IP6T_SO_ORIGINAL_DST has the same number at SOL_IPV6


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """The destination a REDIRECTed connection had before netfilter rewrote it (IPv4 and IPv6).

    Raises OSError (ENOENT) for a connection that was not redirected.
    """
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack_from("!H", raw, 2)[0]
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    return socket.inet_ntoa(raw[4:8]), struct.unpack_from("!H", raw, 2)[0]


def set_keepalive(sock: socket.socket | None, probes: int, idle: int, interval: int) -> None:
    """SO_KEEPALIVE on, with the probe count, idle time and probe interval given (0: the system's)."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if probes:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, probes)
    if idle:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    if interval:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
