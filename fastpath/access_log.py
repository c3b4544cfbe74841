"""Access logs: Envoy's format strings (``%COMMAND%``) compiled once, lines buffered off the hot path.

A line is formatted when a request completes (cheap: the format is a list of literals and getters) and
appended to a buffer that is written out every second or once it passes 64 KiB, as Envoy's
``access_log_flush_interval`` does, so a request never waits on a write.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

# Istio's default text format (meshConfig.accessLogFormat unset).
ISTIO_TEXT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    "%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" '
    '"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% '
    "%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)

FLUSH_BYTES = 64 * 1024
FLUSH_INTERVAL = 1.0


class LogRecord(Protocol):
    """What a finished request or connection offers to the formatter."""

    start_time: float  # wall clock, seconds
    response_code: int
    response_flags: str
    response_code_details: str
    bytes_received: int
    bytes_sent: int
    duration_ms: int
    upstream_host: str
    upstream_cluster: str
    upstream_local_address: str
    downstream_local_address: str
    downstream_remote_address: str
    route_name: str
    protocol: str
    upstream_service_time: int | None

    def request_header(self, name: str) -> str | None: ...

    def response_header(self, name: str) -> str | None: ...


Getter = Callable[[Any], "str | int | None"]


def _start_time(r: Any) -> str:
    t = r.start_time
    ms = int((t - int(t)) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ms:03d}Z"


def _attr(name: str) -> Getter:
    return lambda r: getattr(r, name)


_SIMPLE: dict[str, Getter] = {
    "START_TIME": _start_time,
    "PROTOCOL": _attr("protocol"),
    "RESPONSE_CODE": _attr("response_code"),
    "RESPONSE_FLAGS": _attr("response_flags"),
    "RESPONSE_CODE_DETAILS": _attr("response_code_details"),
    "CONNECTION_TERMINATION_DETAILS": lambda r: None,
    "UPSTREAM_TRANSPORT_FAILURE_REASON": lambda r: getattr(r, "upstream_failure", None),
    "BYTES_RECEIVED": _attr("bytes_received"),
    "BYTES_SENT": _attr("bytes_sent"),
    "DURATION": _attr("duration_ms"),
    "UPSTREAM_HOST": _attr("upstream_host"),
    "UPSTREAM_CLUSTER": _attr("upstream_cluster"),
    "UPSTREAM_CLUSTER_RAW": _attr("upstream_cluster"),
    "UPSTREAM_LOCAL_ADDRESS": _attr("upstream_local_address"),
    "DOWNSTREAM_LOCAL_ADDRESS": _attr("downstream_local_address"),
    "DOWNSTREAM_REMOTE_ADDRESS": _attr("downstream_remote_address"),
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": lambda r: r.downstream_remote_address.rsplit(":", 1)[0],
    "REQUESTED_SERVER_NAME": lambda r: None,
    "ROUTE_NAME": _attr("route_name"),
    "UPSTREAM_SERVICE_TIME": _attr("upstream_service_time"),
}

# gRPC status names as Envoy's %GRPC_STATUS% prints them (CAMEL_STRING, its default; SNAKE_STRING upper-cases
# with underscores; NUMBER the code).
_GRPC_NAMES = (
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
    "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented",
    "Internal", "Unavailable", "DataLoss", "Unauthenticated",
)  # fmt: skip
_GRPC_SNAKE = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)  # fmt: skip


def _grpc_status(form: str) -> Getter:
    def get(r: Any) -> str | int | None:
        code = getattr(r, "grpc_status", None)
        if code is None or form == "NUMBER":
            return code  # type: ignore[no-any-return]
        if not 0 <= code < len(_GRPC_NAMES):
            return str(code)
        return (_GRPC_NAMES if form == "CAMEL_STRING" else _GRPC_SNAKE)[code]

    return get


_COMMAND = re.compile(r"%([A-Z_0-9]+)(?:\(([^)]*)\))?(?::(\d+))?%")


class FormatError(ValueError):
    pass


def _header_getter(kind: str, spec: str) -> Getter:
    main, _, alt = spec.partition("?")
    names = [n.strip().lower() for n in (main, alt) if n.strip()]
    pseudo = {
        ":method": "method",
        ":path": "path",
        ":authority": "authority",
        ":scheme": "scheme",
        ":status": "status",
    }

    def get(r: Any) -> str | None:
        for name in names:
            value = (r.request_header if kind == "REQ" else r.response_header)(pseudo.get(name, name))
            if value is not None:
                return value  # type: ignore[no-any-return]
        return None

    return get


def compile_command(command: str, arg: str | None) -> Getter:
    if command in ("REQ", "RESP"):
        if not arg:
            raise FormatError(f"%{command}(...)% needs a header name")
        return _header_getter(command, arg)
    if command in _SIMPLE and arg is None:
        return _SIMPLE[command]
    if command == "GRPC_STATUS" and (arg or "CAMEL_STRING") in ("CAMEL_STRING", "SNAKE_STRING", "NUMBER"):
        return _grpc_status(arg or "CAMEL_STRING")
    if command == "GRPC_STATUS_NUMBER" and arg is None:
        return _grpc_status("NUMBER")
    raise FormatError(f"unsupported command %{command}{'(' + arg + ')' if arg else ''}%")


def _render(value: str | int | None, limit: int | None) -> str:
    text = "-" if value is None or value == "" else str(value)
    return text[:limit] if limit else text


class TextFormat:
    def __init__(self, fmt: str) -> None:
        parts: list[str | tuple[Getter, int | None]] = []
        pos = 0
        for m in _COMMAND.finditer(fmt):
            if m.start() > pos:
                parts.append(fmt[pos : m.start()])
            parts.append((compile_command(m.group(1), m.group(2)), int(m.group(3)) if m.group(3) else None))
            pos = m.end()
        if pos < len(fmt):
            parts.append(fmt[pos:])
        self.parts = parts

    def __call__(self, r: Any) -> str:
        return "".join(p if isinstance(p, str) else _render(p[0](r), p[1]) for p in self.parts)


class JsonFormat:
    def __init__(self, fields: dict[str, str]) -> None:
        self.fields: list[tuple[str, Getter | str]] = []
        for key, value in fields.items():
            m = _COMMAND.fullmatch(value)
            self.fields.append((key, compile_command(m.group(1), m.group(2)) if m else value))

    def __call__(self, r: Any) -> str:
        out = {k: (v if isinstance(v, str) else v(r)) for k, v in self.fields}
        return json.dumps(out, separators=(",", ":")) + "\n"


class AccessLog:
    """One configured access log: a format and a destination (a file path, or stdout/stderr)."""

    def __init__(self, path: str, fmt: Callable[[Any], str]) -> None:
        self.path = path
        self.format = fmt
        self._buffer: list[str] = []
        self._size = 0
        self._file: IO[str] | None = None
        self._flush_handle: asyncio.TimerHandle | None = None

    def log(self, record: Any) -> None:
        line = self.format(record)
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()
        elif self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_handle = loop.call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._buffer:
            return
        data = "".join(self._buffer)
        self._buffer.clear()
        self._size = 0
        try:
            out = self._open()
            out.write(data)
            out.flush()
        except OSError as exc:  # a full disk must not take the proxy down
            print(f"mizzen-proxy: access log {self.path}: {exc}", file=sys.stderr)

    def _open(self) -> IO[str]:
        if self.path in ("/dev/stdout", "stdout"):
            return sys.stdout
        if self.path in ("/dev/stderr", "stderr"):
            return sys.stderr
        if self._file is None:
            self._file = open(self.path, "a", buffering=1)
        return self._file

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


def open_log(path: str, text: str | None = None, json_fields: dict[str, str] | None = None) -> AccessLog:
    """An access log writing ``text`` format lines (Istio's default when neither is given) or JSON."""
    fmt: Callable[[Any], str] = (
        JsonFormat(json_fields) if json_fields else TextFormat(text or ISTIO_TEXT_FORMAT)
    )
    if path not in ("/dev/stdout", "/dev/stderr") and not os.path.isdir(os.path.dirname(path) or "."):
        raise FormatError(f"{path}: the directory does not exist")
    return AccessLog(path, fmt)
