"""A minimal HTTP/2 client (h2c with prior knowledge) on python-hyper's h2, for tests."""

from __future__ import annotations

import socket

import h2.config
import h2.connection
import h2.events


def h2_get(port: int, path: str) -> tuple[int, bytes]:
    """A plain HTTP/2 (h2c, prior knowledge) GET with the h2 library."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(
            sid,
            [(b":method", b"GET"), (b":scheme", b"http"), (b":path", path.encode()), (b":authority", b"web")],
            end_stream=True,
        )
        s.sendall(conn.data_to_send())
        status, body = 0, b""
        while True:
            data = s.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    return status, body
            s.sendall(conn.data_to_send())
    return status, body
