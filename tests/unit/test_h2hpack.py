"""HPACK (fastpath.h2hpack): RFC 7541's Appendix C examples verbatim, Huffman coding, errors, and the
encoder's output read back by python-hyper's decoder. Every case runs over the compiled module and its
twin."""

from __future__ import annotations

import random
from types import ModuleType

import hpack
import pytest
from support.impls import both

MODS = both("fastpath.h2hpack")


@pytest.fixture(params=MODS, ids=["compiled" if str(m.__file__).endswith(".so") else "python" for m in MODS])
def hp(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


def hexb(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


def entries(decoder: object) -> list[tuple[bytes, bytes]]:
    """The dynamic table, newest first (as the RFC prints it)."""
    return list(reversed(decoder.entries))  # type: ignore[attr-defined]


# RFC 7541 C.3 (requests, plain strings) and C.4 (the same requests, Huffman-coded).
REQUESTS = [
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"www.example.com")],
    [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"www.example.com"),
        (b"cache-control", b"no-cache"),
    ],
    [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":path", b"/index.html"),
        (b":authority", b"www.example.com"),
        (b"custom-key", b"custom-value"),
    ],
]
REQUEST_TABLES = [
    ([(b":authority", b"www.example.com")], 57),
    ([(b"cache-control", b"no-cache"), (b":authority", b"www.example.com")], 110),
    (
        [
            (b"custom-key", b"custom-value"),
            (b"cache-control", b"no-cache"),
            (b":authority", b"www.example.com"),
        ],
        164,
    ),
]
C3 = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
]
C4 = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
]

# RFC 7541 C.5 (responses, plain) and C.6 (Huffman), with a 256-byte table: entries are evicted.
DATE1 = b"Mon, 21 Oct 2013 20:13:21 GMT"
DATE2 = b"Mon, 21 Oct 2013 20:13:22 GMT"
LOC = b"https://www.example.com"
COOKIE = b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
RESPONSES = [
    [(b":status", b"302"), (b"cache-control", b"private"), (b"date", DATE1), (b"location", LOC)],
    [(b":status", b"307"), (b"cache-control", b"private"), (b"date", DATE1), (b"location", LOC)],
    [
        (b":status", b"200"),
        (b"cache-control", b"private"),
        (b"date", DATE2),
        (b"location", LOC),
        (b"content-encoding", b"gzip"),
        (b"set-cookie", COOKIE),
    ],
]
RESPONSE_TABLES = [
    ([(b"location", LOC), (b"date", DATE1), (b"cache-control", b"private"), (b":status", b"302")], 222),
    ([(b":status", b"307"), (b"location", LOC), (b"date", DATE1), (b"cache-control", b"private")], 222),
    ([(b"set-cookie", COOKIE), (b"content-encoding", b"gzip"), (b"date", DATE2)], 215),
]
C5 = [
    """4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
       2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d""",
    "4803 3330 37c1 c0bf",
    """88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
       54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
       5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31""",
]
C6 = [
    """4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
       2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3""",
    "4883 640e ffc1 c0bf",
    """88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
       77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
       9587 3160 65c0 03ed 4ee5 b106 3d50 07""",
]


def test_integers_c1(hp: ModuleType) -> None:
    assert hp.encode_integer(10, 5, 0) == hexb("0a")  # C.1.1
    assert hp.encode_integer(1337, 5, 0) == hexb("1f9a0a")  # C.1.2
    assert hp.encode_integer(42, 8, 0) == hexb("2a")  # C.1.3


def test_literal_fields_c2(hp: ModuleType) -> None:
    d = hp.Decoder()
    # C.2.1: literal with incremental indexing
    assert d.decode(hexb("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")) == [
        (b"custom-key", b"custom-header")
    ]
    assert entries(d) == [(b"custom-key", b"custom-header")] and d.size == 55
    d = hp.Decoder()
    # C.2.2: literal without indexing (indexed name); C.2.3: never indexed; C.2.4: indexed
    assert d.decode(hexb("040c 2f73 616d 706c 652f 7061 7468")) == [(b":path", b"/sample/path")]
    assert d.decode(hexb("1008 7061 7373 776f 7264 0673 6563 7265 74")) == [(b"password", b"secret")]
    assert d.decode(hexb("82")) == [(b":method", b"GET")]
    assert entries(d) == [] and d.size == 0


@pytest.mark.parametrize("blocks", [C3, C4], ids=["C.3", "C.4"])
def test_request_examples(hp: ModuleType, blocks: list[str]) -> None:
    d = hp.Decoder()
    for block, headers, (table, size) in zip(blocks, REQUESTS, REQUEST_TABLES, strict=True):
        assert d.decode(hexb(block)) == headers
        assert entries(d) == table and d.size == size


@pytest.mark.parametrize("blocks", [C5, C6], ids=["C.5", "C.6"])
def test_response_examples_with_eviction(hp: ModuleType, blocks: list[str]) -> None:
    d = hp.Decoder(max_table_size=256)
    for block, headers, (table, size) in zip(blocks, RESPONSES, RESPONSE_TABLES, strict=True):
        assert d.decode(hexb(block)) == headers
        assert entries(d) == table and d.size == size


def test_huffman_round_trip_every_byte(hp: ModuleType) -> None:
    data = bytes(range(256)) * 3
    assert hp.huffman_decode(hp.huffman_encode(data)) == data
    assert hp.huffman_encode(b"www.example.com") == hexb("f1e3 c2e5 f23a 6ba0 ab90 f4ff")  # C.4.1
    assert hp.huffman_decode(b"") == b""
    rng = random.Random(7)
    for _ in range(200):
        s = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        assert hp.huffman_decode(hp.huffman_encode(s)) == s
        assert hpack.huffman.HuffmanEncoder(
            hpack.huffman_constants.REQUEST_CODES, hpack.huffman_constants.REQUEST_CODES_LENGTH
        ).encode(s) == hp.huffman_encode(s)


def test_huffman_errors(hp: ModuleType) -> None:
    good = hp.huffman_encode(b"a")  # 'a' is 00011 (5 bits), padded with 111
    assert good == bytes([0b00011111])
    with pytest.raises(hp.HPACKError, match="padding"):
        hp.huffman_decode(bytes([0b00011000]))  # padding not made of ones
    with pytest.raises(hp.HPACKError, match="padding"):
        hp.huffman_decode(bytes([0b00011111, 0xFF]))  # 11 bits of padding
    with pytest.raises(hp.HPACKError, match="EOS"):
        hp.huffman_decode(b"\xff\xff\xff\xff")  # EOS (30 ones) decoded


@pytest.mark.parametrize(
    ("block", "error"),
    [
        ("be", "not in the table"),  # dynamic index 62 in an empty table
        ("80", "not in the table"),  # index 0
        ("ff", "truncated"),
        ("ff80808080808001", "too large"),
        ("400a 6375 73", "truncated"),
        ("3fe21f", "over the allowed"),  # size update to 4096 + 3 more... beyond SETTINGS_HEADER_TABLE_SIZE
        ("82 20", "after the first field"),
    ],
)
def test_decoder_errors(hp: ModuleType, block: str, error: str) -> None:
    with pytest.raises(hp.HPACKError, match=error):
        hp.Decoder().decode(hexb(block))


def test_size_update_evicts_and_header_list_limit(hp: ModuleType) -> None:
    d = hp.Decoder()
    d.decode(hexb(C3[0]))
    assert d.size == 57
    assert d.decode(hexb("20 82")) == [(b":method", b"GET")]  # size update to 0 empties the table
    assert d.entries == [] and d.max_size == 0
    small = hp.Decoder(max_header_list_size=100)
    with pytest.raises(hp.OversizedHeaderList):
        small.decode(hp.Encoder().encode([(b"x-a", b"v" * 80)]))


def test_encoder_indexes_what_repeats(hp: ModuleType) -> None:
    e = hp.Encoder()
    headers = [(b":method", b"GET"), (b":path", b"/api"), (b"user-agent", b"grpc-go"), (b"te", b"trailers")]
    first = e.encode(headers)
    second = e.encode(headers)
    assert len(second) == 4  # every field indexed, one byte each
    d = hp.Decoder()
    assert d.decode(first) == headers and d.decode(second) == headers
    ids = [(b"x-request-id", b"a"), (b"authorization", b"secret")]
    e.encode(ids)
    assert (b"x-request-id", b"a") not in e.full and (b"authorization", b"secret") not in e.full
    assert e.encode([(b"authorization", b"s")]) == hexb(
        "1f08 01 73"
    )  # never indexed, name from the static table


def test_encoder_read_by_hpack_through_table_changes(hp: ModuleType) -> None:
    rng = random.Random(11)
    ours = hp.Encoder()
    theirs = hpack.Decoder()
    names = [b"x-a", b"x-b", b"content-type", b":path", b"x-request-id", b"cookie", b"date", b"accept"]
    for round_ in range(300):
        if round_ % 50 == 25:
            size = rng.choice([0, 64, 256, 4096, 8192])
            ours.set_max_table_size(size)
            theirs.max_allowed_table_size = size  # the peer's SETTINGS_HEADER_TABLE_SIZE
        headers = [
            (
                rng.choice(names),
                bytes(
                    rng.choice(b"abcdef") for _ in range(rng.randrange(0, 300 if rng.random() < 0.1 else 12))
                ),
            )
            for _ in range(rng.randrange(1, 8))
        ]
        block = ours.encode(headers)
        assert theirs.decode(block, raw=True) == headers
        assert ours.size <= ours.max_size
