"""HPACK (RFC 7541): the header compression of HTTP/2, for ``fastpath.h2codec``.

The decoder is complete: static and dynamic tables, table size updates and eviction, integers, string
literals plain and Huffman-coded (a table-driven decoder that consumes four bits per step). The encoder
indexes what repeats (full matches in either table, names otherwise) and adds a header to its dynamic
table when it is likely to come again; it writes strings without Huffman coding, which costs a few bytes
on the wire and saves the CPU that coding them would take. Headers are ``(bytes, bytes)`` pairs.

Compiled in Cython's pure-Python mode (``h2hpack.pxd`` gives the types); this file is also the twin.
"""

from __future__ import annotations

# RFC 7541 Appendix A.
STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = (
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
)
STATIC_COUNT = 61
DEFAULT_TABLE_SIZE = 4096
ENTRY_OVERHEAD = 32  # RFC 7541 4.1: an entry's size is its name and value lengths plus 32

# RFC 7541 Appendix B, as the code length of each symbol (0-255, then EOS): the code is canonical (codes
# are assigned in order of length, then symbol), so the lengths alone determine every code.
HUFFMAN_LENGTHS = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5,
    6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6,
    7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23,
    23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22,
    23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22,
    22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27,
    24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
)  # fmt: skip
EOS = 256

# Huffman decoding tables, indexed by state * 16 + the next four bits. A state is an inner node of the
# code tree (0 the root); four bits complete at most one code (the shortest is five bits long).
HUF_EMIT = 1  # a symbol (_HUF_SYM) was completed
HUF_ACCEPT = 2  # the string may end here: in the root, or within at most 7 bits of EOS's leading ones
HUF_FAIL = 4  # EOS was decoded: an error


class HPACKError(Exception):
    """A header block that cannot be decoded (a COMPRESSION_ERROR of the connection)."""


class OversizedHeaderList(HPACKError):
    """A header list over the decoder's size limit (decoded to the end all the same)."""


def huffman_codes() -> list[int]:
    """The code of each symbol, from the canonical code lengths."""
    order = sorted(range(257), key=lambda s: (HUFFMAN_LENGTHS[s], s))
    codes = [0] * 257
    code = 0
    prev = HUFFMAN_LENGTHS[order[0]]
    for i, sym in enumerate(order):
        if i:
            code = (code + 1) << (HUFFMAN_LENGTHS[sym] - prev)
        prev = HUFFMAN_LENGTHS[sym]
        codes[sym] = code
    return codes


def _huffman_tables() -> tuple[bytes, bytes, bytes]:
    # The code tree: node 0 the root; children[n] = [zero, one], a child is a node or -1 - symbol.
    children: list[list[int]] = [[0, 0]]
    for sym, code in enumerate(huffman_codes()):
        node = 0
        length = HUFFMAN_LENGTHS[sym]
        for i in range(length - 1, -1, -1):
            bit = (code >> i) & 1
            if i == 0:
                children[node][bit] = -1 - sym
            else:
                if children[node][bit] == 0:
                    children.append([0, 0])
                    children[node][bit] = len(children) - 1
                node = children[node][bit]
    # A node reached from the root by ones only, at most 7 deep, may end a string (EOS padding).
    ones_depth = {0: 0}
    node, depth = 0, 0
    while depth < 7:
        node, depth = children[node][1], depth + 1
        ones_depth[node] = depth
    nxt, sym_out, flags = (
        bytearray(len(children) * 16),
        bytearray(len(children) * 16),
        bytearray(len(children) * 16),
    )
    for state in range(len(children)):
        for nibble in range(16):
            node, flag, emitted = state, 0, 0
            for i in (3, 2, 1, 0):
                child = children[node][(nibble >> i) & 1]
                if child < 0:
                    if -1 - child == EOS:
                        flag |= HUF_FAIL
                    emitted = (-1 - child) & 0xFF
                    flag |= HUF_EMIT
                    node = 0
                else:
                    node = child
            if node in ones_depth:
                flag |= HUF_ACCEPT
            i = state * 16 + nibble
            nxt[i], sym_out[i], flags[i] = node, emitted, flag
    return bytes(nxt), bytes(sym_out), bytes(flags)


_HUF_NEXT, _HUF_SYM, _HUF_FLAGS = _huffman_tables()


def huffman_decode(data: bytes) -> bytes:
    """A Huffman-coded string literal (RFC 7541 5.2), checked for EOS and for bad padding."""
    out = bytearray()
    nxt = _HUF_NEXT
    sym = _HUF_SYM
    flags = _HUF_FLAGS
    emit = HUF_EMIT  # locals: C ints when compiled, not module lookups per byte
    fail = HUF_FAIL
    accept = HUF_ACCEPT
    state = 0
    flag = accept
    for byte in data:
        i = state * 16 + (byte >> 4)
        flag = flags[i]
        if flag & emit:
            if flag & fail:
                raise HPACKError("EOS in a Huffman-coded string")
            out.append(sym[i])
        state = nxt[i]
        i = state * 16 + (byte & 15)
        flag = flags[i]
        if flag & emit:
            if flag & fail:
                raise HPACKError("EOS in a Huffman-coded string")
            out.append(sym[i])
        state = nxt[i]
    if not flag & accept:
        raise HPACKError("bad padding in a Huffman-coded string")
    return bytes(out)


def huffman_encode(data: bytes) -> bytes:
    """Huffman coding of a string (for tests and for peers' examples; the encoder sends strings plain)."""
    codes = huffman_codes()
    acc = 0
    bits = 0
    for byte in data:
        acc = (acc << HUFFMAN_LENGTHS[byte]) | codes[byte]
        bits += HUFFMAN_LENGTHS[byte]
    pad = -bits % 8
    acc = (acc << pad) | ((1 << pad) - 1)
    return acc.to_bytes((bits + pad) // 8, "big")


def encode_integer(value: int, prefix_bits: int, first: int) -> bytes:
    """An integer with an N-bit prefix (RFC 7541 5.1); ``first`` holds the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


class Decoder:
    """Decodes header blocks, keeping the dynamic table the peer's encoder builds."""

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE, max_header_list_size: int = 1 << 16) -> None:
        self.entries: list[tuple[bytes, bytes]] = []  # newest last
        self.size = 0
        self.max_size = max_table_size  # the size the encoder last set (at most max_allowed)
        self.max_allowed = max_table_size  # our SETTINGS_HEADER_TABLE_SIZE
        self.max_header_list_size = max_header_list_size
        self.pos = 0
        self.data = b""

    def set_max_allowed(self, size: int) -> None:
        """Our SETTINGS_HEADER_TABLE_SIZE, acknowledged: the peer's encoder must fit its table in it."""
        self.max_allowed = size
        if self.max_size > size:
            self.max_size = size  # the peer shrinks its table too, and says so at its next block
            self._evict()

    def _integer(self, prefix_mask: int) -> int:
        data = self.data
        pos = self.pos
        if pos >= len(data):
            raise HPACKError("header block truncated in an integer")
        value = data[pos] & prefix_mask
        pos += 1
        if value == prefix_mask:
            shift = 0
            while True:
                if pos >= len(data):
                    raise HPACKError("header block truncated in an integer")
                byte = data[pos]
                pos += 1
                value += (byte & 127) << shift
                shift += 7
                if not byte & 128:
                    break
                if shift > 28:
                    raise HPACKError("integer too large in a header block")
        self.pos = pos
        return value

    def _string(self) -> bytes:
        data = self.data
        if self.pos >= len(data):
            raise HPACKError("header block truncated in a string")
        huffman = data[self.pos] & 128
        length = self._integer(127)
        start = self.pos
        end = start + length
        if end > len(data):
            raise HPACKError("header block truncated in a string")
        self.pos = end
        if huffman:
            return huffman_decode(data[start:end])
        return data[start:end]

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= STATIC_COUNT:
            return STATIC_TABLE[index - 1]
        dyn = index - STATIC_COUNT
        if index <= 0 or dyn > len(self.entries):
            raise HPACKError(f"header index {index} is not in the table")
        return self.entries[len(self.entries) - dyn]

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + ENTRY_OVERHEAD
        if size > self.max_size:
            self.entries.clear()  # RFC 7541 4.4: an entry larger than the table empties it
            self.size = 0
            return
        self.size += size
        self.entries.append((name, value))
        self._evict()

    def _evict(self) -> None:
        entries = self.entries
        drop = 0
        while self.size > self.max_size:
            name, value = entries[drop]
            self.size -= len(name) + len(value) + ENTRY_OVERHEAD
            drop += 1
        if drop:
            del entries[:drop]

    def decode(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The header list of one complete header block."""
        self.data = data
        self.pos = 0
        headers: list[tuple[bytes, bytes]] = []
        end = len(data)
        list_size = 0
        first = True
        while self.pos < end:
            byte = data[self.pos]
            if byte & 128:  # indexed field
                header = self._entry(self._integer(127))
            elif byte & 64:  # literal with incremental indexing
                index = self._integer(63)
                name = self._entry(index)[0] if index else self._string()
                header = (name, self._string())
                self._add(name, header[1])
            elif byte & 32:  # dynamic table size update: only at the start of a block
                if not first:
                    raise HPACKError("table size update after the first field of a header block")
                size = self._integer(31)
                if size > self.max_allowed:
                    raise HPACKError(f"table size update to {size} over the allowed {self.max_allowed}")
                self.max_size = size
                self._evict()
                continue
            else:  # literal without indexing (0000) or never indexed (0001)
                index = self._integer(15)
                name = self._entry(index)[0] if index else self._string()
                header = (name, self._string())
            first = False
            list_size += len(header[0]) + len(header[1]) + ENTRY_OVERHEAD
            headers.append(header)
        self.data = b""
        if list_size > self.max_header_list_size:
            raise OversizedHeaderList(f"header list of {list_size} bytes over {self.max_header_list_size}")
        return headers


# Headers whose values are unique per message (ids, trace contexts) or churn: never added to the table.
_NOT_INDEXED = frozenset(
    (
        b"x-request-id",
        b"traceparent",
        b"tracestate",
        b"x-b3-traceid",
        b"x-b3-spanid",
        b"x-b3-parentspanid",
        b"x-client-trace-id",
        b"x-envoy-expected-rq-timeout-ms",
        b"date",
        b"etag",
        b"last-modified",
        b"if-modified-since",
        b"if-none-match",
        b"location",
    )
)
# Credentials: "never indexed" (RFC 7541 7.1.3), so that no intermediary compresses them either.
_SENSITIVE = frozenset((b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"))
_MAX_INDEXED_ENTRY = 512  # larger entries would evict too much of a 4 KiB table


def _static_maps() -> tuple[dict[tuple[bytes, bytes], int], dict[bytes, int]]:
    full: dict[tuple[bytes, bytes], int] = {}
    names: dict[bytes, int] = {}
    for i, (name, value) in enumerate(STATIC_TABLE, 1):
        full.setdefault((name, value), i)
        names.setdefault(name, i)
    return full, names


_STATIC_FULL, _STATIC_NAMES = _static_maps()


class Encoder:
    """Encodes header lists, keeping its own dynamic table (which the peer's decoder mirrors)."""

    def __init__(self) -> None:
        self.entries: list[tuple[bytes, bytes]] = []  # newest last
        self.full: dict[tuple[bytes, bytes], int] = {}  # entry -> its insertion number
        self.names: dict[bytes, int] = {}  # name -> insertion number of its newest entry
        self.inserted = 0
        self.size = 0
        self.max_size = DEFAULT_TABLE_SIZE
        self.pending_size: int = -1  # a table size to announce at the start of the next block

    def set_max_table_size(self, size: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE: our table stays within it (and within 4 KiB)."""
        size = min(size, DEFAULT_TABLE_SIZE)
        if size != self.max_size:
            self.max_size = size
            self.pending_size = size if self.pending_size < 0 else min(self.pending_size, size)
            self._evict()

    def _evict(self) -> None:
        entries = self.entries
        drop = 0
        while self.size > self.max_size:
            name, value = entries[drop]
            self.size -= len(name) + len(value) + ENTRY_OVERHEAD
            number = self.inserted - len(entries) + drop
            if self.full.get((name, value)) == number:
                del self.full[(name, value)]
            if self.names.get(name) == number:
                del self.names[name]
            drop += 1
        if drop:
            del entries[:drop]

    def encode(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """One header block for ``headers`` (names already lower-case, as HTTP/2 requires)."""
        out: list[bytes] = []
        if self.pending_size >= 0:
            out.append(encode_integer(self.pending_size, 5, 32))
            if self.pending_size != self.max_size:
                out.append(encode_integer(self.max_size, 5, 32))
            self.pending_size = -1
        full = self.full
        for header in headers:
            index = _STATIC_FULL.get(header, 0)
            if index:
                out.append(encode_integer(index, 7, 128))
                continue
            number = full.get(header, -1)
            if number >= 0:
                out.append(encode_integer(self.inserted - number + STATIC_COUNT, 7, 128))
                continue
            out.append(self._literal(header[0], header[1]))
        return b"".join(out)

    def _literal(self, name: bytes, value: bytes) -> bytes:
        index = _STATIC_NAMES.get(name, 0)
        if not index:
            number = self.names.get(name, -1)
            if number >= 0:
                index = self.inserted - number + STATIC_COUNT
        size = len(name) + len(value) + ENTRY_OVERHEAD
        if name in _SENSITIVE:
            first, prefix = 16, 4  # never indexed
        elif name in _NOT_INDEXED or size > _MAX_INDEXED_ENTRY or size > self.max_size:
            first, prefix = 0, 4  # without indexing
        else:
            first, prefix = 64, 6  # with incremental indexing: the next one is a single byte
        head = encode_integer(index, prefix, first)
        if first == 64:
            self.entries.append((name, value))
            self.full[(name, value)] = self.inserted
            self.names[name] = self.inserted
            self.inserted += 1
            self.size += size
            self._evict()
        vlen = encode_integer(len(value), 7, 0)
        if index:
            return head + vlen + value
        return head + encode_integer(len(name), 7, 0) + name + vlen + value
