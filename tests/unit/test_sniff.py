"""Listener filters: what the first bytes say (TLS ClientHello, HTTP/1, HTTP/2), and Envoy's filter chain
match over destination port, IP, server name, transport and application protocols."""

from __future__ import annotations

import ssl
from typing import Any

from support.envoy import addr, bootstrap, static_cluster, tcp_chain

from fastpath import bootstrap as boot
from fastpath import sniff
from fastpath.config import ConfigError


def client_hello(server_name: str | None, alpn: list[str] | None = None) -> bytes:
    """The ClientHello Python's ssl (OpenSSL) really sends."""
    ctx = ssl.create_default_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def test_tls_client_hello_gives_sni_and_alpn() -> None:
    hello = client_hello("reviews.default.svc.cluster.local", ["istio-http/1.1", "h2"])
    out = sniff.inspect_tls(hello)
    assert out == sniff.TlsHello(
        sniff.DONE, True, "reviews.default.svc.cluster.local", ("istio-http/1.1", "h2")
    )
    # Byte by byte it keeps asking for more, then answers the same.
    for n in (1, 3, 5, 50, len(hello) - 1):
        assert sniff.inspect_tls(hello[:n]).state == sniff.NEED_MORE
    assert sniff.inspect_tls(client_hello(None)).sni == ""


def test_not_tls() -> None:
    for data in (
        b"GET / HTTP/1.1\r\n",
        b"\x16\x02\x00",
        b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00",
        b"\x00",
    ):
        out = sniff.inspect_tls(data)
        assert out.state == sniff.DONE and not out.tls, data


def test_http_inspector() -> None:
    assert sniff.inspect_http(sniff.H2_PREFACE + b"rest") == (sniff.DONE, "h2c")
    assert sniff.inspect_http(sniff.H2_PREFACE[:10]) == (sniff.NEED_MORE, "")
    assert sniff.inspect_http(b"GET /x HTTP/1.1\r\nHost: a\r\n") == (sniff.DONE, "http/1.1")
    assert sniff.inspect_http(b"GE") == (sniff.NEED_MORE, "")
    assert sniff.inspect_http(b"GET /x HT") == (sniff.NEED_MORE, "")
    assert sniff.inspect_http(b"GET /x SMTP/1.0\r\n") == (sniff.DONE, "")
    assert sniff.inspect_http(b"\x00\x01binary") == (sniff.DONE, "")
    assert sniff.inspect_http(b"EHLO mail\r\n") == (sniff.DONE, "")


def chain(name: str, **match: Any) -> dict[str, Any]:
    c = tcp_chain(name)
    c["filter_chain_match"] = match
    return c


def listener(*chains: dict[str, Any], filters: tuple[str, ...] = ("tls_inspector",)) -> Any:
    lst = {
        "name": "l",
        "address": addr("0.0.0.0", 15006),
        "filter_chains": list(chains),
        "listener_filters": [{"name": f"envoy.filters.listener.{f}"} for f in filters],
    }
    names = {c["name"] for c in chains}
    cfg = boot.parse(bootstrap([lst], [static_cluster(n, ("10.0.0.1", 1)) for n in names])).static
    return cfg.listeners["l"]


def pick(
    lst: Any,
    ip: str = "10.1.2.3",
    port: int = 8080,
    sni: str = "",
    transport: str = "",
    alpn: tuple[str, ...] = (),
) -> str | None:
    c = lst.select_chain(ip, port, sni, transport, alpn)
    return c.name if c else None


def test_chain_match_levels() -> None:
    lst = listener(
        chain("port-any"),
        chain("port-8080", destination_port=8080),
        chain(
            "port-8080-ip",
            destination_port=8080,
            prefix_ranges=[{"address_prefix": "10.1.0.0", "prefix_len": 16}],
        ),
        chain("tls-exact", destination_port=9443, server_names=["api.example.com"]),
        chain("tls-wild", destination_port=9443, server_names=["*.example.com"]),
        chain("tls-none", destination_port=9443, transport_protocol="tls"),
        chain("plain", destination_port=9443, transport_protocol="raw_buffer"),
        chain(
            "mtls",
            destination_port=9000,
            transport_protocol="tls",
            application_protocols=["istio-peer-exchange", "istio"],
        ),
        chain("tls-other", destination_port=9000, transport_protocol="tls"),
    )
    assert pick(lst, port=1) == "port-any"
    assert pick(lst) == "port-8080-ip"  # the destination port first, then the longest prefix
    assert pick(lst, ip="10.9.9.9") == "port-8080"  # no range matches: the chain without ranges
    assert pick(lst, port=9443, sni="api.example.com", transport="tls") == "tls-exact"
    assert pick(lst, port=9443, sni="www.example.com", transport="tls") == "tls-wild"
    assert pick(lst, port=9443, sni="example.com", transport="tls") == "tls-none"  # "*." needs a label
    assert pick(lst, port=9443, transport="raw_buffer") == "plain"
    assert pick(lst, port=9000, transport="tls", alpn=("istio", "h2")) == "mtls"
    assert pick(lst, port=9000, transport="tls", alpn=("h2",)) == "tls-other"
    # The port level chose the 9000 chains; none takes plain text, so none at all (the default chain's turn).
    assert pick(lst, port=9000, transport="raw_buffer") is None


def test_tls_matching_needs_the_inspector() -> None:
    try:
        listener(chain("a", server_names=["x.com"]), filters=())
    except ConfigError as exc:
        assert "needs the tls_inspector" in str(exc)
    else:
        raise AssertionError("accepted server_names without a tls_inspector")
