"""A TCP (or TLS) server for pods: each connection gets ``<name> saw <peer ip>`` after its first bytes.

``python echoserver.py PORT NAME [CERT KEY]`` (with a certificate and key it speaks TLS); prints "ready".
The name ``-`` makes a server that accepts and reads but never answers (a peer that hangs).
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading


def serve(port: int, name: str, cert: str | None, key: str | None) -> None:
    ctx = None
    if cert and key:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(128)
    print("ready", flush=True)

    def handle(conn: socket.socket, peer: str) -> None:
        try:
            conn.settimeout(10)
            if ctx is not None:
                conn = ctx.wrap_socket(conn, server_side=True)
            if name == "-":
                conn.settimeout(None)
                while conn.recv(65536):
                    pass
                return
            conn.recv(65536)
            conn.sendall(f"{name} saw {peer}".encode())
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    while True:
        conn, addr = srv.accept()
        threading.Thread(target=handle, args=(conn, addr[0]), daemon=True).start()


if __name__ == "__main__":
    args = sys.argv[1:]
    serve(int(args[0]), args[1], args[2] if len(args) > 2 else None, args[3] if len(args) > 3 else None)
