"""``mizzen tap TARGET``: a line per live request through the target's sidecars, relayed by the controller.

The controller is reached at ``--controller-address`` (its debug port; the local mesh's is found by
itself) or through the API server's pod proxy to every controller replica (each relays the sidecars
connected to it). The filters (``--to``, ``--path``, ``--method``) are applied in the sidecars; the
session ends after ``--duration`` seconds, at most ``--rate`` lines a second per sidecar, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson


def add_parser(top: Any) -> None:
    p = top.add_parser("tap", help="stream the live requests of a workload's sidecars")
    p.add_argument("target", help="deploy/NAME, workload/NAME or pod/NAME (or NAME)")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("--to", default="", help="only requests to this service (name or host)")
    p.add_argument("--path", default="", help="only paths with this prefix")
    p.add_argument("--method", default="", help="only this HTTP method")
    p.add_argument("--rate", type=float, default=100.0, help="at most this many lines a second per sidecar")
    p.add_argument("--duration", type=float, default=300.0, help="stop after this many seconds (max 3600)")
    p.add_argument(
        "--controller-address", help="HOST:PORT of a controller's debug port (default: via the API)"
    )
    p.add_argument("--mesh-namespace", default="mizzen-system")
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--context", default=None)
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")


def query(args: argparse.Namespace) -> list[tuple[str, str]]:
    q = [("target", args.target), ("namespace", args.namespace)]
    for key in ("to", "path", "method"):
        value = getattr(args, key)
        if value:
            q.append((key, value))
    q += [("rate", f"{args.rate:g}"), ("duration", f"{args.duration:g}")]
    return q


def format_line(event: dict[str, Any]) -> str:
    """``time source → destination METHOD path status latency flags trace=…`` (one request)."""
    t = float(event.get("time") or 0.0)
    when = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1000):03d}"
    trace = event.get("trace_id") or "-"
    return (
        f"{when} {event.get('source') or '-'} → {event.get('destination') or '-'} "
        f"{event.get('method')} {event.get('path') or '-'} {event.get('status')} "
        f"{event.get('latency_ms')}ms {event.get('flags') or '-'} trace={trace}"
    )


async def _lines_direct(address: str, q: list[tuple[str, str]], timeout: float) -> AsyncIterator[bytes]:
    import aiohttp

    client_timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        async with session.get(f"http://{address}/debug/tap", params=q) as resp:
            if resp.status >= 400:
                body = await resp.json(content_type=None)
                raise LookupError((body or {}).get("error") or f"HTTP {resp.status}")
            async for line in resp.content:
                if line.strip():
                    yield line


async def _lines_kube(
    args: argparse.Namespace, q: list[tuple[str, str]], timeout: float
) -> AsyncIterator[bytes]:
    """Every controller replica's tap, merged (each relays the sidecars connected to it)."""
    from mizzen import kube

    client = await kube.connect(args.kubeconfig, args.context)
    try:
        pods = await client.request(
            "GET",
            f"/api/v1/namespaces/{args.mesh_namespace}/pods",
            query=[("labelSelector", "app=mizzen-controller")],
        )
        names = [
            p["metadata"]["name"]
            for p in pods.get("items") or ()
            if (p.get("status") or {}).get("phase") == "Running"
        ]
        if not names:
            raise LookupError(f"no running mizzen-controller pod in namespace {args.mesh_namespace}")
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()

        async def one(name: str) -> None:
            path = f"/api/v1/namespaces/{args.mesh_namespace}/pods/{name}:15014/proxy/debug/tap"
            try:
                async for line in client.stream_lines(path, tuple(q), read_timeout=timeout):
                    queue.put_nowait(line)
            except Exception as exc:  # a replica without sidecars of the target answers 404
                queue.put_nowait(exc)
            queue.put_nowait(None)

        tasks = [asyncio.create_task(one(n)) for n in names]
        running, errors, lines = len(tasks), [], 0
        try:
            while running:
                item = await queue.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    errors.append(str(item))
                else:
                    lines += 1
                    yield item
        finally:
            for task in tasks:
                task.cancel()
        if not lines and errors:
            raise LookupError("; ".join(errors))
    finally:
        await client.close()


async def stream(args: argparse.Namespace, emit: Callable[[dict[str, Any]], None]) -> int:
    q = query(args)
    timeout = args.duration + 60
    lines = (
        _lines_direct(args.controller_address, q, timeout)
        if args.controller_address
        else _lines_kube(args, q, timeout)
    )
    header_seen = False
    async for raw in lines:
        message = orjson.loads(raw)
        if "proxies" in message and not header_seen:
            header_seen = True
            print(f"tapping {len(message['proxies'])} sidecar(s) of {message['tap']}", file=sys.stderr)
            continue
        if "error" in message:
            print(f"mizzen tap: {message['error']}", file=sys.stderr)
            return 1
        emit(message)
    return 0


def run(args: argparse.Namespace) -> int:
    def emit(event: dict[str, Any]) -> None:
        if args.output == "json":
            sys.stdout.write(orjson.dumps(event).decode() + "\n")
        else:
            sys.stdout.write(format_line(event) + "\n")
        sys.stdout.flush()

    try:
        return asyncio.run(stream(args, emit))
    except KeyboardInterrupt:
        return 0
