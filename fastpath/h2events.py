"""What ``fastpath.h2codec`` reports and raises: its events, errors and the protocol's registered codes.

The names and attributes are those of python-hyper's ``h2`` that the sidecar used, so that code written
against one reads the same against the other. Headers are lists of ``(bytes, bytes)``.

Compiled in Cython's pure-Python mode (``h2events.pxd``); this file is also the twin.
"""

from __future__ import annotations

import enum
from typing import Any


class ErrorCodes(enum.IntEnum):
    """RFC 9113 7: the error codes of RST_STREAM and GOAWAY."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class SettingCodes(enum.IntEnum):
    """RFC 9113 6.5.2 (and RFC 8441's extended CONNECT): the settings' identifiers."""

    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6
    ENABLE_CONNECT_PROTOCOL = 0x8


def error_code(code: int) -> Any:
    """An error code as ``ErrorCodes`` when it is registered, else the number (codes are extensible)."""
    try:
        return ErrorCodes(code)
    except ValueError:
        return code


def setting_code(code: int) -> Any:
    try:
        return SettingCodes(code)
    except ValueError:
        return code


# -- errors ---------------------------------------------------------------------------------------


class ProtocolError(Exception):
    """The peer broke the protocol (a connection error: GOAWAY is queued), or a call the state forbids."""

    error_code: int = ErrorCodes.PROTOCOL_ERROR


class FlowControlError(ProtocolError):
    error_code = ErrorCodes.FLOW_CONTROL_ERROR


class FrameTooLargeError(ProtocolError):
    error_code = ErrorCodes.FRAME_SIZE_ERROR


class TooManyStreamsError(ProtocolError):
    """A new stream over the peer's SETTINGS_MAX_CONCURRENT_STREAMS (or after its GOAWAY)."""


class NoAvailableStreamIDError(ProtocolError):
    """Every stream ID of this connection has been used."""


class StreamClosedError(ProtocolError):
    """An action on a stream that is closed (or was never opened)."""

    error_code = ErrorCodes.STREAM_CLOSED

    def __init__(self, stream_id: int) -> None:
        super().__init__(f"stream {stream_id} is closed")
        self.stream_id = stream_id


# -- events ---------------------------------------------------------------------------------------


class StreamEnded:
    """The peer ended its side of a stream (END_STREAM)."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id

    def __repr__(self) -> str:
        return f"<StreamEnded stream_id:{self.stream_id}>"


class RequestReceived:
    """A request's headers (server side). ``stream_ended`` is the ``StreamEnded`` that follows, or None."""

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]], stream_ended: Any) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.stream_ended = stream_ended

    def __repr__(self) -> str:
        return f"<RequestReceived stream_id:{self.stream_id}, headers:{self.headers}>"


class ResponseReceived:
    """A final response's headers (client side)."""

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]], stream_ended: Any) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.stream_ended = stream_ended

    def __repr__(self) -> str:
        return f"<ResponseReceived stream_id:{self.stream_id}, headers:{self.headers}>"


class InformationalResponseReceived:
    """A 1xx response's headers (client side); the final response comes after."""

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.stream_id = stream_id
        self.headers = headers

    def __repr__(self) -> str:
        return f"<InformationalResponseReceived stream_id:{self.stream_id}, headers:{self.headers}>"


class TrailersReceived:
    """Trailing headers, which always end the stream."""

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]], stream_ended: Any) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.stream_ended = stream_ended

    def __repr__(self) -> str:
        return f"<TrailersReceived stream_id:{self.stream_id}, headers:{self.headers}>"


class DataReceived:
    """Body bytes. ``flow_controlled_length`` (padding included) is what to acknowledge once consumed."""

    def __init__(self, stream_id: int, data: bytes, flow_controlled_length: int, stream_ended: Any) -> None:
        self.stream_id = stream_id
        self.data = data
        self.flow_controlled_length = flow_controlled_length
        self.stream_ended = stream_ended

    def __repr__(self) -> str:
        return f"<DataReceived stream_id:{self.stream_id}, length:{len(self.data)}>"


class StreamReset:
    """A stream ended abnormally: reset by the peer (``remote_reset``) or by us for its error."""

    def __init__(self, stream_id: int, error_code: Any, remote_reset: bool) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.remote_reset = remote_reset

    def __repr__(self) -> str:
        return f"<StreamReset stream_id:{self.stream_id}, error_code:{self.error_code!r}>"


class WindowUpdated:
    """The peer opened a send window: the connection's (``stream_id`` 0) or a stream's."""

    def __init__(self, stream_id: int, delta: int) -> None:
        self.stream_id = stream_id
        self.delta = delta

    def __repr__(self) -> str:
        return f"<WindowUpdated stream_id:{self.stream_id}, delta:{self.delta}>"


class ChangedSetting:
    def __init__(self, setting: Any, original_value: Any, new_value: int) -> None:
        self.setting = setting
        self.original_value = original_value
        self.new_value = new_value

    def __repr__(self) -> str:
        return f"<ChangedSetting {self.setting!r}: {self.original_value} -> {self.new_value}>"


class RemoteSettingsChanged:
    """The peer's SETTINGS (already acknowledged): ``changed_settings`` maps each code to a ChangedSetting."""

    def __init__(self, changed_settings: dict[Any, ChangedSetting]) -> None:
        self.changed_settings = changed_settings

    def __repr__(self) -> str:
        return f"<RemoteSettingsChanged {list(self.changed_settings.values())}>"


class SettingsAcknowledged:
    """The peer acknowledged our SETTINGS, which now apply."""

    def __init__(self, changed_settings: dict[Any, ChangedSetting]) -> None:
        self.changed_settings = changed_settings

    def __repr__(self) -> str:
        return f"<SettingsAcknowledged {list(self.changed_settings.values())}>"


class PingReceived:
    """A PING from the peer (already answered)."""

    def __init__(self, ping_data: bytes) -> None:
        self.ping_data = ping_data


class PingAckReceived:
    """The answer to our PING."""

    def __init__(self, ping_data: bytes) -> None:
        self.ping_data = ping_data


class ConnectionTerminated:
    """The peer sent GOAWAY: no new streams; streams up to ``last_stream_id`` may still finish."""

    def __init__(self, error_code: Any, last_stream_id: int, additional_data: bytes) -> None:
        self.error_code = error_code
        self.last_stream_id = last_stream_id
        self.additional_data = additional_data

    def __repr__(self) -> str:
        return f"<ConnectionTerminated error_code:{self.error_code!r}, last_stream_id:{self.last_stream_id}>"
