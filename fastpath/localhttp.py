"""A small HTTP/1.1 server for the sidecar's own endpoints (admin, readiness, metrics), on our codec.

Not on the data path, so plain and simple: one handler per (method, path), a response per request,
keep-alive, and the codec's limits and errors for bad input. It saves the sidecar a web framework
(memory and start-up time that every pod would pay).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from fastpath import http1
from fastpath.headers import local_reply

# A handler gets the query parameters and returns (status, body, content type).
Reply = tuple[int, bytes, bytes]
Handler = Callable[[dict[str, str]], "Reply | Awaitable[Reply]"]


class Routes:
    def __init__(self) -> None:
        self.table: dict[tuple[bytes, bytes], Handler] = {}

    def get(self, path: str, handler: Handler) -> None:
        self.table[(b"GET", path.encode())] = handler
        self.table[(b"HEAD", path.encode())] = handler

    def post(self, path: str, handler: Handler) -> None:
        self.table[(b"POST", path.encode())] = handler


class _Conn(asyncio.Protocol):
    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self.parser = http1.RequestParser(16 * 1024)
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None
        self.gone = asyncio.Event()  # the client disconnected (ends a stream being served)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.worker = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        try:
            for event in self.parser.feed(data):
                if isinstance(event, http1.RequestHead):
                    self.queue.put_nowait(event)
        except http1.HttpParseError as exc:
            self.queue.put_nowait(exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.gone.set()
        self.queue.put_nowait(None)

    async def _serve(self) -> None:
        """Requests in order, one at a time (handlers may await)."""
        while True:
            item = await self.queue.get()
            t = self.transport
            if item is None or t is None or t.is_closing():
                return
            if isinstance(item, http1.HttpParseError):
                t.write(local_reply(item.status, b"", close=True))
                t.close()
                return
            head = item
            path, _, query = head.target.partition(b"?")
            handler = self.routes.table.get((head.method, path))
            if handler is None:
                known = any(p == path for _, p in self.routes.table)
                status, body, ctype = (
                    (405, b"method not allowed\n", b"text/plain")
                    if known
                    else (404, b"not found\n", b"text/plain")
                )
            else:
                params = dict(parse_qsl(query.decode("latin-1")))
                try:
                    result = handler(params)
                    if asyncio.iscoroutine(result):
                        result = await result
                    if hasattr(result, "__anext__"):  # a stream (the admin /tap): served until it ends
                        await self._stream(t, result)
                        return
                    status, body, ctype = result  # type: ignore[misc]
                except Exception as exc:  # an admin endpoint must not take the proxy down
                    status, body, ctype = 500, f"{type(exc).__name__}: {exc}\n".encode(), b"text/plain"
            close = not head.keep_alive
            head_only = head.method == b"HEAD"
            t.write(local_reply(status, body, close=close, content_type=ctype, head_only=head_only))
            if close:
                t.close()
                return

    async def _stream(self, t: asyncio.Transport, stream: Any) -> None:
        """Chunked JSON lines until the stream ends or the client goes away; either way the stream is
        closed, so whatever it holds (a tap session) is released."""
        t.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        gone = asyncio.ensure_future(self.gone.wait())
        try:
            while not t.is_closing():
                nxt = asyncio.ensure_future(stream.__anext__())
                await asyncio.wait({nxt, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    break
                try:
                    chunk = nxt.result()
                except StopAsyncIteration:
                    t.write(b"0\r\n\r\n")
                    break
                t.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        finally:
            gone.cancel()
            await stream.aclose()
            t.close()


async def serve(routes: Routes, host: str, port: int) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Conn(routes), host, port, reuse_address=True)
