"""Access-log command operators on a record: the gRPC status forms, headers, defaults and errors."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fastpath.access_log import FormatError, TextFormat


@dataclass
class Record:
    grpc_status: int | None = None
    protocol: str = "HTTP/2"
    response_code: int = 200

    def request_header(self, name: str) -> str | None:
        return {"x-user": "jason", "path": "/p"}.get(name)

    def response_header(self, name: str) -> str | None:
        return None


@pytest.mark.parametrize(
    ("code", "expected"),
    [(0, "OK OK 0 0"), (4, "DeadlineExceeded DEADLINE_EXCEEDED 4 4"), (1, "Canceled CANCELLED 1 1"),
     (None, "- - - -"), (42, "42 42 42 42")],
)  # fmt: skip
def test_grpc_status_forms(code: int | None, expected: str) -> None:
    fmt = TextFormat("%GRPC_STATUS% %GRPC_STATUS(SNAKE_STRING)% %GRPC_STATUS(NUMBER)% %GRPC_STATUS_NUMBER%")
    assert fmt(Record(grpc_status=code)) == expected


def test_headers_truncation_and_plain_operators() -> None:
    fmt = TextFormat('"%REQ(X-USER)%" %REQ(X-MISSING?:PATH)% %PROTOCOL% %RESPONSE_CODE% %REQ(X-USER):2%')
    assert fmt(Record()) == '"jason" /p HTTP/2 200 ja'


@pytest.mark.parametrize("bad", ["%GRPC_STATUS(SHOUTING)%", "%NO_SUCH_THING%", "%REQ()%"])
def test_unknown_operators_are_refused(bad: str) -> None:
    with pytest.raises(FormatError):
        TextFormat(bad)


def test_a_tcp_connection_in_istios_default_format() -> None:
    import time

    from fastpath.access_log import ISTIO_TEXT_FORMAT
    from fastpath.tcp_proxy import TcpRecord, TcpSession

    session = TcpSession({"cluster": "outbound|5432||db.default.svc.cluster.local"}, lambda s: None)
    session.info.update(upstream="10.0.0.7:5432", original_dst="10.96.0.5:5432", peer="10.0.0.3:41000")
    session.downstream.received, session.upstream.received = 12, 345
    session.started, session.ended = time.monotonic() - 2.5, time.monotonic()
    line = TextFormat(ISTIO_TEXT_FORMAT)(TcpRecord(session))
    # As Envoy prints a TCP proxy's line: no method, path or protocol, code 0, the bytes and the peers.
    assert '] "- - -" 0 - - - "-" 12 345 25' in line, line
    assert (
        ' "10.0.0.7:5432" outbound|5432||db.default.svc.cluster.local - 10.96.0.5:5432 10.0.0.3:41000 - -'
        in line
    )
