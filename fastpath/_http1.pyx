# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""HTTP/1.1 codec, compiled: the proxy's hot path.

``fastpath.http1_py`` is the specification: this module has the same API, gives the same events and
raises the same errors for every input (the unit tests run every case over both, and a fuzz test checks
that they agree). What differs is cost: lines are scanned in C over the caller's buffer, a head that
arrives in one read is kept as a slice of it (often the buffer itself), and the header list is only
built when something asks for it. Per request the parser allocates the head, its target and host, and
nothing else in the common case.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memchr, memcpy

from fastpath.http1_py import (
    DEFAULT_MAX_HEADER_BYTES,
    HOP_BY_HOP,
    MAX_CHUNK_LINE_BYTES,
    MAX_HEADERS,
    MESSAGE_END,
    Body,
    HttpParseError,
    Tunnel,
    _codings,
    _is_token,
    _parse_content_length,
    serialize_headers,
    serialize_request_head,
    serialize_response_head,
)

__all__ = [
    "BODY",
    "DEFAULT_MAX_HEADER_BYTES",
    "END",
    "HEAD",
    "MAX_CHUNK_LINE_BYTES",
    "MAX_HEADERS",
    "MESSAGE_END",
    "NEED_DATA",
    "TUNNEL",
    "Body",
    "request_id",
    "HttpParseError",
    "RequestHead",
    "RequestParser",
    "ResponseHead",
    "ResponseParser",
    "Tunnel",
    "serialize_headers",
    "serialize_request_head",
    "serialize_response_head",
]

NEED_DATA = 0
HEAD = 1
BODY = 2
END = 3
TUNNEL = 4

cdef enum:
    EV_NEED_DATA = 0
    EV_HEAD = 1
    EV_BODY = 2
    EV_END = 3
    EV_TUNNEL = 4

# Parser states, the numbers of the twin.
cdef enum:
    S_HEAD = 0
    S_BODY_LENGTH = 1
    S_CHUNK_SIZE_START = 2
    S_CHUNK_SIZE = 3
    S_CHUNK_SIZE_WS = 4
    S_CHUNK_EXT = 5
    S_CHUNK_SIZE_LF = 6
    S_CHUNK_DATA = 7
    S_CHUNK_DATA_CR = 8
    S_CHUNK_DATA_LF = 9
    S_TRAILER_START = 10
    S_TRAILER_NAME = 11
    S_TRAILER_VALUE = 12
    S_TRAILER_LF = 13
    S_TRAILER_END_LF = 14
    S_BODY_UNTIL_CLOSE = 15
    S_TUNNEL = 16
    S_ERROR = 17
    S_CLOSED = 18

# Header names the parser files while scanning (everything else stays in the raw head).
cdef enum:
    H_OTHER = 0
    H_HOST = 1
    H_CONTENT_LENGTH = 2
    H_TRANSFER_ENCODING = 3
    H_CONNECTION = 4
    H_EXPECT = 5
    H_UPGRADE = 6
    H_REQUEST_ID = 7
    H_HOP = 8  # keep-alive, proxy-connection, te
    H_TRACE = 9  # traceparent, b3, x-b3-*, x-envoy-force-trace: what the tracer reads (fastpath.tracing)
    H_CLIENT_CERT = 10  # x-forwarded-client-cert: removed by default where it is not set (Envoy's SANITIZE)

cdef unsigned long long MAX_INT63_DIV16 = 0x07FFFFFFFFFFFFFF
cdef Py_ssize_t C_MAX_CHUNK_LINE = MAX_CHUNK_LINE_BYTES
cdef int C_MAX_HEADERS = MAX_HEADERS
cdef enum:
    MAX_KEPT = 128  # header lines a forwarded head can keep: above MAX_HEADERS, which the parser enforces

cdef unsigned char TOKEN[256]
cdef unsigned char VALUE[256]
cdef unsigned char TARGET[256]
cdef signed char HEXV[256]


cdef void _init_tables():
    cdef int c
    for c in range(256):
        TOKEN[c] = 0
        VALUE[c] = 1 if (c == 9 or 0x20 <= c < 0x7F or c >= 0x80) else 0
        TARGET[c] = 1 if (0x21 <= c < 0x7F or c >= 0x80) else 0
        HEXV[c] = -1
    for c in b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        TOKEN[c] = 1
    for c in range(10):
        HEXV[0x30 + c] = c
    for c in range(6):
        HEXV[0x61 + c] = 10 + c
        HEXV[0x41 + c] = 10 + c


_init_tables()

# Methods come back as these objects, not fresh bytes, when they are one of them.
cdef bytes M_GET = b"GET"
cdef bytes M_POST = b"POST"
cdef bytes M_PUT = b"PUT"
cdef bytes M_HEAD = b"HEAD"
cdef bytes M_DELETE = b"DELETE"
cdef bytes M_PATCH = b"PATCH"
cdef bytes M_OPTIONS = b"OPTIONS"
cdef bytes M_CONNECT = b"CONNECT"
cdef str V10 = "1.0"
cdef str V11 = "1.1"
cdef bytes CRLF = b"\r\n"


cdef inline unsigned char lower(unsigned char c) noexcept:
    return c + 32 if 0x41 <= c <= 0x5A else c


cdef inline bint name_is(const char* p, Py_ssize_t n, const char* lower_name, Py_ssize_t m) noexcept:
    cdef Py_ssize_t i
    if n != m:
        return False
    for i in range(n):
        if lower(<unsigned char>p[i]) != <unsigned char>lower_name[i]:
            return False
    return True


cdef int classify(const char* p, Py_ssize_t n) noexcept:
    cdef unsigned char c0
    if n == 0:
        return H_OTHER
    c0 = lower(<unsigned char>p[0])
    if n == 4 and c0 == b"h" and name_is(p, n, b"host", 4):
        return H_HOST
    if n == 14 and c0 == b"c" and name_is(p, n, b"content-length", 14):
        return H_CONTENT_LENGTH
    if n == 17 and c0 == b"t" and name_is(p, n, b"transfer-encoding", 17):
        return H_TRANSFER_ENCODING
    if n == 10 and c0 == b"c" and name_is(p, n, b"connection", 10):
        return H_CONNECTION
    if n == 6 and c0 == b"e" and name_is(p, n, b"expect", 6):
        return H_EXPECT
    if n == 7 and c0 == b"u" and name_is(p, n, b"upgrade", 7):
        return H_UPGRADE
    if n == 12 and c0 == b"x" and name_is(p, n, b"x-request-id", 12):
        return H_REQUEST_ID
    if (n == 11 and c0 == b"t" and name_is(p, n, b"traceparent", 11)) or (
        n == 2 and c0 == b"b" and name_is(p, n, b"b3", 2)) or (
        n > 5 and c0 == b"x" and name_is(p, 5, b"x-b3-", 5)) or (
        n == 19 and c0 == b"x" and name_is(p, n, b"x-envoy-force-trace", 19)):
        return H_TRACE
    if n == 23 and c0 == b"x" and name_is(p, n, b"x-forwarded-client-cert", 23):
        return H_CLIENT_CERT
    if (n == 10 and c0 == b"k" and name_is(p, n, b"keep-alive", 10)) or (
        n == 16 and c0 == b"p" and name_is(p, n, b"proxy-connection", 16)) or (
        n == 2 and c0 == b"t" and name_is(p, n, b"te", 2)):
        return H_HOP
    return H_OTHER


cdef bytes method_object(const char* p, Py_ssize_t n):
    if n == 3 and p[0] == b"G" and p[1] == b"E" and p[2] == b"T":
        return M_GET
    if n == 4 and p[0] == b"P" and p[1] == b"O" and p[2] == b"S" and p[3] == b"T":
        return M_POST
    if n == 3 and p[0] == b"P" and p[1] == b"U" and p[2] == b"T":
        return M_PUT
    if n == 4 and p[0] == b"H" and p[1] == b"E" and p[2] == b"A" and p[3] == b"D":
        return M_HEAD
    cdef bytes m = PyBytes_FromStringAndSize(p, n)
    for known in (M_DELETE, M_PATCH, M_OPTIONS, M_CONNECT):
        if m == known:
            return known
    return m


cdef list split_headers(bytes raw):
    """The header fields of a validated raw head: (lower-case name, value without OWS)."""
    cdef const char* p = PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    cdef Py_ssize_t pos, lf, colon, vs, ve, i
    cdef const char* hit
    cdef bytes name
    cdef char* q
    cdef list out = []
    hit = <const char*>memchr(p, 10, n)
    pos = (hit - p) + 1
    while pos < n:
        hit = <const char*>memchr(p + pos, 10, n - pos)
        lf = hit - p
        if lf - 1 == pos:  # the blank line
            break
        colon = (<const char*>memchr(p + pos, 58, lf - pos)) - p
        name = PyBytes_FromStringAndSize(NULL, colon - pos)
        q = PyBytes_AS_STRING(name)
        for i in range(colon - pos):
            q[i] = lower(<unsigned char>p[pos + i])
        vs = colon + 1
        ve = lf - 1
        while vs < ve and (p[vs] == b" " or p[vs] == b"\t"):
            vs += 1
        while ve > vs and (p[ve - 1] == b" " or p[ve - 1] == b"\t"):
            ve -= 1
        out.append((name, PyBytes_FromStringAndSize(p + vs, ve - vs)))
        pos = lf + 1
    return out


cdef bytes append_lines(bytes raw, bytes extra):
    """``raw`` (a head ending in the blank line) with ``extra`` header lines before the blank line."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    cdef Py_ssize_t m = PyBytes_GET_SIZE(extra)
    if m == 0:
        return raw
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + m)
    cdef char* q = PyBytes_AS_STRING(out)
    memcpy(q, PyBytes_AS_STRING(raw), n - 2)
    memcpy(q + n - 2, PyBytes_AS_STRING(extra), m)
    q[n + m - 2] = b"\r"
    q[n + m - 1] = b"\n"
    return out


cdef class _Head:

    @property
    def headers(self):
        if self._headers is None:
            self._headers = split_headers(self.raw)
        return self._headers

    @headers.setter
    def headers(self, value):
        self._headers = value

    def get(self, bytes name, default=None):
        """The first value of header ``name`` (lower-case, as the names are stored), else ``default``."""
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def get_all(self, bytes name):
        """Every value of header ``name`` (lower-case), in order."""
        return [value for key, value in self.headers if key == name]

    cdef bytes _forward(self, bytes first, bint keep_upgrade, bytes tail):
        """See ``fastpath.http1_py._Head._forward``: the same bytes, copied in C in one allocation."""
        cdef bytes raw = self.raw
        cdef const char* p = PyBytes_AS_STRING(raw)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
        cdef Py_ssize_t pos, lf, colon, vs, ve, total, i, nkeep = 0
        cdef Py_ssize_t keep_at[MAX_KEPT]
        cdef Py_ssize_t keep_len[MAX_KEPT]
        cdef const char* hit
        cdef int kind
        cdef bint drop
        cdef bytes out
        cdef char* q
        pos = (<const char*>memchr(p, 10, n) - p) + 1
        total = PyBytes_GET_SIZE(first) + PyBytes_GET_SIZE(tail)
        while pos < n - 2:
            hit = <const char*>memchr(p + pos, 10, n - pos)
            lf = hit - p
            colon = (<const char*>memchr(p + pos, 58, lf - pos)) - p
            kind = classify(p + pos, colon - pos)
            if kind == H_CONNECTION:
                drop = True
            elif kind == H_UPGRADE:
                drop = not keep_upgrade
            elif kind == H_HOP:
                drop = True
                if colon - pos == 2:  # te: kept when it only says "trailers"
                    vs, ve = colon + 1, lf
                    while vs < ve and (p[vs] == b" " or p[vs] == b"\t"):
                        vs += 1
                    while ve > vs and (p[ve - 1] == b" " or p[ve - 1] == b"\t" or p[ve - 1] == b"\r"):
                        ve -= 1
                    drop = not name_is(p + vs, ve - vs, b"trailers", 8)
            elif self._conn_drop is not None:
                drop = raw[pos:colon].lower() in self._conn_drop
            else:
                drop = False
            if not drop:
                keep_at[nkeep] = pos
                keep_len[nkeep] = lf + 1 - pos
                total += lf + 1 - pos
                nkeep += 1
            pos = lf + 1
        out = PyBytes_FromStringAndSize(NULL, total)
        q = PyBytes_AS_STRING(out)
        memcpy(q, PyBytes_AS_STRING(first), PyBytes_GET_SIZE(first))
        q += PyBytes_GET_SIZE(first)
        for i in range(nkeep):
            memcpy(q, p + keep_at[i], keep_len[i])
            q += keep_len[i]
        memcpy(q, PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail))
        return out


cdef class RequestHead(_Head):
    """A parsed request head (see ``fastpath.http1_py.RequestHead``)."""


    cpdef bytes for_upstream(self, bytes extra=b""):
        """The head to send upstream: HTTP/1.1, hop-by-hop headers removed, ``extra`` appended."""
        if self.version == V11 and not self.hop_by_hop:
            return append_lines(self.raw, extra)
        cdef bint upgrade = self.upgrade and self.method != M_CONNECT
        cdef bytes tail = (b"connection: upgrade\r\n" if upgrade else b"") + extra + CRLF
        return self._forward(self.method + b" " + self.target + b" HTTP/1.1\r\n", upgrade, tail)

    def __repr__(self):
        return f"<RequestHead {self.method!r} {self.target!r} HTTP/{self.version} {len(self.headers)} headers>"


cdef class ResponseHead(_Head):
    """A parsed response head (see ``fastpath.http1_py.ResponseHead``)."""


    @property
    def interim(self):
        return 100 <= self.status < 200 and self.status != 101

    cpdef bytes for_downstream(self, bytes extra=b"", object connection=None):
        """The head to send downstream: HTTP/1.1, hop-by-hop headers removed, ``extra`` appended,
        and ``connection: <connection>`` when given."""
        if self.version == V11 and not self.hop_by_hop and connection is None:
            return append_lines(self.raw, extra)
        cdef bint switching = self.status == 101
        cdef bytes tail = b"connection: upgrade\r\n" if switching else b""
        if connection is not None and not switching:
            tail = b"connection: " + connection + CRLF
        cdef bytes raw = self.raw
        cdef Py_ssize_t lf = (<const char*>memchr(PyBytes_AS_STRING(raw), 10, PyBytes_GET_SIZE(raw))
                              - PyBytes_AS_STRING(raw))
        return self._forward(b"HTTP/1.1" + raw[8:lf + 1], switching, tail + extra + CRLF)

    def __repr__(self):
        return f"<ResponseHead HTTP/{self.version} {self.status} {len(self.headers)} headers>"


cdef class _Parser:
    # Events found by the last step and not yet pulled (at most two: a head and its end).
    # The head being read.
    # The body.

    def __init__(self, max_header_bytes=DEFAULT_MAX_HEADER_BYTES, max_start_line_bytes=None):
        if max_header_bytes < 16:
            raise ValueError("max_header_bytes must be at least 16")
        self.max_header_bytes = max_header_bytes
        self.max_start_line_bytes = max_header_bytes if max_start_line_bytes is None else max_start_line_bytes
        self.head = None
        self.start = 0
        self.end = 0
        self._state = S_HEAD
        self._error = None
        self._data = b""
        self._pos = 0
        self._q_n = 0
        self._q_i = 0
        self._pending = b""
        self._rawparts = None
        self._raw_start = -1
        self._reset_head()
        self._remaining = 0
        self._chunk_line = 0
        self._trailer_bytes = 0
        self._upgrade_after = False

    cdef void _reset_head(self):
        self._head_bytes = 0
        self._have_start = False
        self._s1 = self._s2 = self._s3 = None
        self._nheaders = 0
        self._hop = False
        self._hosts = None
        self._cls = None
        self._tes = None
        self._conns = None
        self._expect = None
        self._upgrade_hdr = False
        self._request_id = None
        self._trace = False
        self._client_cert = False
        self._rawparts = None
        self._raw_start = -1

    @property
    def tunnel(self):
        """True once the connection has switched to opaque bytes."""
        return self._state == S_TUNNEL

    @property
    def idle(self):
        """True between messages: nothing of a next message has arrived yet."""
        return self._state == S_HEAD and not self._pending and not self._have_start

    cdef object _fail(self, int status, str reason):
        self._state = S_ERROR
        self._error = HttpParseError(status, reason)
        return self._error

    # -- pull --------------------------------------------------------------------------------------

    cpdef set_data(self, bytes data):
        """Hand the parser the next bytes of the stream; ``next()`` then walks through their events."""
        if self._state == S_ERROR:
            raise self._error
        self._data = data
        self._pos = 0
        self._q_n = 0
        self._q_i = 0
        self._raw_start = -1

    cpdef int next(self) except -1:
        """The next event of the current data: NEED_DATA, HEAD, BODY, END or TUNNEL."""
        cdef Py_ssize_t end
        if self._q_i < self._q_n:
            return self._pop()
        if self._state == S_ERROR:
            raise self._error
        end = PyBytes_GET_SIZE(self._data)
        try:
            while self._pos < end:
                if self._state == S_HEAD:
                    self._pos = self._feed_head(self._pos, end)
                elif self._state == S_TUNNEL:
                    self._queue(EV_TUNNEL, self._pos, end)
                    self._pos = end
                else:
                    self._pos = self._feed_body(self._pos, end)
                if self._q_i < self._q_n:
                    return self._pop()
        except HttpParseError as exc:
            self._state = S_ERROR
            self._error = exc
            raise
        if self._state == S_HEAD and self._raw_start >= 0:
            # The data ended on a line boundary inside a head: keep its lines for the raw head.
            self._stash(self._raw_start, end)
        return EV_NEED_DATA

    cdef int _pop(self):
        cdef int i = self._q_i
        self._q_i += 1
        if self._q_i == self._q_n:
            self._q_i = self._q_n = 0
        self.start = self._q_a[i]
        self.end = self._q_b[i]
        if self._q_code[i] == EV_HEAD:
            self.head = self._q_head
            self._q_head = None
        return self._q_code[i]

    cdef void _queue(self, int code, Py_ssize_t a, Py_ssize_t b):
        self._q_code[self._q_n] = code
        self._q_a[self._q_n] = a
        self._q_b[self._q_n] = b
        self._q_n += 1

    cdef void _stash(self, Py_ssize_t a, Py_ssize_t b):
        if self._rawparts is None:
            self._rawparts = []
        self._rawparts.append(self._data[a:b])
        self._raw_start = -1

    def finish(self):
        """The peer closed its side (see ``fastpath.http1_py``)."""
        if self._state == S_ERROR:
            raise self._error
        if self._state == S_BODY_UNTIL_CLOSE:
            self._state = S_CLOSED
            return True
        if self._state in (S_TUNNEL, S_CLOSED) or (
            self._state == S_HEAD and not self._pending and not self._have_start
        ):
            self._state = S_CLOSED
            return False
        raise self._fail(self._error_status, "incomplete_message")

    # -- the event-list form -----------------------------------------------------------------------

    def feed(self, data):
        """Parse ``data``; return the events it completes. Raises ``HttpParseError`` (then always)."""
        self.set_data(bytes(data))
        events = []
        while True:
            code = self.next()
            if code == EV_NEED_DATA:
                return events
            if code == EV_HEAD:
                events.append(self.head)
            elif code == EV_BODY:
                events.append(Body(self.start, self.end))
            elif code == EV_TUNNEL:
                events.append(Tunnel(self.start, self.end))
            else:
                events.append(MESSAGE_END)

    def feed_eof(self):
        """The peer closed its side: finish a read-until-close body, or fail on a cut message."""
        return [MESSAGE_END] if self.finish() else []

    # -- head --------------------------------------------------------------------------------------

    cdef Py_ssize_t _feed_head(self, Py_ssize_t pos, Py_ssize_t end) except -1:
        """Consume at most one head line; return the new position."""
        cdef const char* p = PyBytes_AS_STRING(self._data)
        cdef const char* hit = <const char*>memchr(p + pos, 10, end - pos)
        cdef Py_ssize_t lf
        cdef bytes line
        if hit == NULL:
            self._check_line_limits(PyBytes_GET_SIZE(self._pending) + end - pos + 1)
            if self._raw_start >= 0:
                self._stash(self._raw_start, pos)
            self._pending += self._data[pos:end]
            return end
        lf = hit - p
        if PyBytes_GET_SIZE(self._pending):
            line = self._pending + self._data[pos:lf + 1]
            self._pending = b""
            self._head_line(line, PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line), -1)
        else:
            self._head_line(self._data, p + pos, lf + 1 - pos, pos)
        return lf + 1

    cdef int _check_line_limits(self, Py_ssize_t line_bytes) except -1:
        if not self._have_start and line_bytes > self.max_start_line_bytes + 2:
            raise HttpParseError(414 if self._is_request else 502, "start_line_too_long")
        if self._head_bytes + line_bytes > self.max_header_bytes:
            raise HttpParseError(431 if self._is_request else 502, "head_too_large")
        return 0

    cdef int _head_line(self, bytes owner, const char* p, Py_ssize_t n, Py_ssize_t pos) except -1:
        """One complete line ``p[:n]`` (ending in LF): at ``pos`` in the data, or a joined line (-1)."""
        cdef Py_ssize_t clen, colon, vs, ve, i
        cdef const char* hit
        cdef int kind
        cdef bytes value
        self._check_line_limits(n)
        if n < 2 or p[n - 2] != b"\r":
            raise HttpParseError(self._error_status, "bad_line_ending")
        clen = n - 2
        if not self._have_start and clen == 0 and self._is_request:
            return 0  # RFC 9112 2.2: tolerate empty lines before a request-line (not counted)
        self._head_bytes += n
        if pos >= 0:
            if self._raw_start < 0:
                self._raw_start = pos
        else:
            if self._rawparts is None:
                self._rawparts = []
            self._rawparts.append(owner)
        if not self._have_start:
            self._parse_start_line(p, clen)
            self._have_start = True
            return 0
        if clen == 0:
            self._finish_head(pos + n if pos >= 0 else -1)
            return 0
        if p[0] == b" " or p[0] == b"\t":
            raise HttpParseError(self._error_status, "obs_fold")
        hit = <const char*>memchr(p, 58, clen)
        if hit == NULL:
            raise HttpParseError(self._error_status, "bad_header_line")
        colon = hit - p
        if colon == 0:
            raise HttpParseError(self._error_status, "bad_header_name")
        for i in range(colon):
            if not TOKEN[<unsigned char>p[i]]:
                raise HttpParseError(self._error_status, "bad_header_name")
        vs = colon + 1
        ve = clen
        while vs < ve and (p[vs] == b" " or p[vs] == b"\t"):
            vs += 1
        while ve > vs and (p[ve - 1] == b" " or p[ve - 1] == b"\t"):
            ve -= 1
        for i in range(vs, ve):
            if not VALUE[<unsigned char>p[i]]:
                raise HttpParseError(self._error_status, "bad_header_value")
        self._nheaders += 1
        if self._nheaders > C_MAX_HEADERS:
            raise HttpParseError(431 if self._is_request else 502, "too_many_headers")
        kind = classify(p, colon)
        if kind == H_OTHER:
            return 0
        if kind == H_TRACE:
            self._trace = True  # only whether there is one: the tracer reads the values from the raw head
            return 0
        if kind == H_CLIENT_CERT:
            self._client_cert = True  # only whether there is one (see RequestHead.client_cert_header)
            return 0
        value = PyBytes_FromStringAndSize(p + vs, ve - vs)
        if kind == H_HOST:
            if self._hosts is None:
                self._hosts = [value]
            else:
                self._hosts.append(value)
        elif kind == H_CONTENT_LENGTH:
            if self._cls is None:
                self._cls = [value]
            else:
                self._cls.append(value)
        elif kind == H_TRANSFER_ENCODING:
            if self._tes is None:
                self._tes = [value]
            else:
                self._tes.append(value)
        elif kind == H_CONNECTION:
            self._hop = True
            if self._conns is None:
                self._conns = [value]
            else:
                self._conns.append(value)
        elif kind == H_EXPECT:
            if self._expect is None:
                self._expect = value
        elif kind == H_UPGRADE:
            self._hop = True
            self._upgrade_hdr = True
        elif kind == H_REQUEST_ID:
            if self._request_id is None:
                self._request_id = value
        else:
            self._hop = True
        return 0

    cdef int _parse_start_line(self, const char* p, Py_ssize_t n) except -1:
        raise NotImplementedError

    cdef int _finish_head(self, Py_ssize_t head_end) except -1:
        raise NotImplementedError

    cdef bytes _take_raw(self, Py_ssize_t head_end):
        """The raw head just completed: a slice of the data when it all came in this buffer."""
        cdef bytes raw
        if self._rawparts is None:
            if self._raw_start == 0 and head_end == PyBytes_GET_SIZE(self._data):
                raw = self._data
            else:
                raw = self._data[self._raw_start:head_end]
        else:
            if head_end >= 0 and self._raw_start >= 0:
                self._rawparts.append(self._data[self._raw_start:head_end])
            raw = b"".join(self._rawparts)
        self._rawparts = None
        self._raw_start = -1
        return raw

    cdef int _framing(self, _Head head) except -1:
        cdef int status = self._error_status
        cdef bytes v
        cdef const char* q
        cdef Py_ssize_t n, i
        cdef long long length
        head.content_length = None
        head.chunked = False
        if self._cls is not None:
            v = self._cls[0]
            n = PyBytes_GET_SIZE(v)
            if len(self._cls) == 1 and 0 < n <= 18:
                # The common case, one plain number, read here; anything else goes the twin's way.
                q = PyBytes_AS_STRING(v)
                length = 0
                for i in range(n):
                    if not (b"0" <= q[i] <= b"9"):
                        length = -1
                        break
                    length = length * 10 + (q[i] - 48)
                head.content_length = length if length >= 0 else _parse_content_length(self._cls, status)
            else:
                head.content_length = _parse_content_length(self._cls, status)
        if self._tes is not None:
            if head.version == V10:
                raise HttpParseError(status, "bad_transfer_encoding")
            codings = _codings(self._tes)
            if self._is_request:
                if codings != [b"chunked"]:
                    raise HttpParseError(status, "bad_transfer_encoding")
            else:
                if b"chunked" in codings[:len(codings) - 1]:
                    raise HttpParseError(status, "bad_transfer_encoding")
                for c in codings:
                    if not _is_token(c):
                        raise HttpParseError(status, "bad_transfer_encoding")
            if head.content_length is not None:
                raise HttpParseError(status, "content_length_with_transfer_encoding")
            head.chunked = codings[len(codings) - 1] == b"chunked"
        return 0

    cdef bint _connection(self, _Head head) except -1:
        cdef bint close = False, keep_alive = False, upgrade = False
        head._conn_drop = None
        if self._conns is not None:
            for token in _codings(self._conns):
                if token == b"close":
                    close = True
                elif token == b"keep-alive":
                    keep_alive = True
                elif token == b"upgrade":
                    upgrade = True
                if token not in HOP_BY_HOP:
                    # A header named by Connection: forwarded heads drop it as well.
                    if head._conn_drop is None:
                        head._conn_drop = set()
                    head._conn_drop.add(token)
        head.keep_alive = not close and (head.version == V11 or keep_alive)
        return upgrade

    cdef int _start_body(self, _Head head, bint has_body, bint tunnel) except -1:
        self._q_head = head
        self._queue(EV_HEAD, 0, 0)
        if tunnel:
            self._upgrade_after = True
            self._end_message()
        elif not has_body:
            self._end_message()
        elif head.chunked:
            self._state = S_CHUNK_SIZE_START
            self._chunk_line = 0
            self._remaining = 0
        elif head.content_length is not None:
            if head.content_length == 0:
                self._end_message()
            else:
                self._state = S_BODY_LENGTH
                self._remaining = head.content_length
        elif self._is_request:
            self._end_message()
        else:
            self._state = S_BODY_UNTIL_CLOSE
        return 0

    cdef void _end_message(self):
        self._queue(EV_END, 0, 0)
        self._state = S_TUNNEL if self._upgrade_after else S_HEAD
        self._upgrade_after = False

    # -- body --------------------------------------------------------------------------------------

    cdef Py_ssize_t _feed_body(self, Py_ssize_t pos, Py_ssize_t end) except -1:
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(self._data)
        cdef Py_ssize_t start = pos
        cdef int state = self._state
        cdef int status = self._error_status
        cdef unsigned long long take
        cdef unsigned char c
        cdef signed char h
        while pos < end:
            if state == S_BODY_LENGTH or state == S_CHUNK_DATA:
                take = <unsigned long long>(end - pos)
                if self._remaining < take:
                    take = self._remaining
                pos += <Py_ssize_t>take
                self._remaining -= take
                if self._remaining:
                    continue
                if state == S_BODY_LENGTH:
                    self._queue(EV_BODY, start, pos)
                    self._end_message()
                    return pos
                state = S_CHUNK_DATA_CR
                continue
            if state == S_BODY_UNTIL_CLOSE:
                pos = end
                continue
            c = p[pos]
            pos += 1
            if S_CHUNK_SIZE_START <= state <= S_CHUNK_EXT:
                self._chunk_line += 1
                if self._chunk_line > C_MAX_CHUNK_LINE:
                    self._state = state
                    raise HttpParseError(status, "chunk_line_too_long")
            if state == S_CHUNK_SIZE_START:
                h = HEXV[c]
                if h < 0:
                    raise HttpParseError(status, "bad_chunk_size")
                self._remaining = h
                state = S_CHUNK_SIZE
            elif state == S_CHUNK_SIZE:
                h = HEXV[c]
                if h >= 0:
                    if self._remaining > MAX_INT63_DIV16:
                        raise HttpParseError(status, "chunk_size_overflow")
                    self._remaining = self._remaining * 16 + <unsigned long long>h
                elif c == 0x0D:
                    state = S_CHUNK_SIZE_LF
                elif c == 0x3B:
                    state = S_CHUNK_EXT
                elif c == 0x20 or c == 0x09:
                    state = S_CHUNK_SIZE_WS
                else:
                    raise HttpParseError(status, "bad_chunk_size")
            elif state == S_CHUNK_SIZE_WS:
                if c == 0x3B:
                    state = S_CHUNK_EXT
                elif c != 0x20 and c != 0x09:
                    raise HttpParseError(status, "bad_chunk_size")
            elif state == S_CHUNK_EXT:
                if c == 0x0D:
                    state = S_CHUNK_SIZE_LF
                elif not VALUE[c]:
                    raise HttpParseError(status, "bad_chunk_extension")
            elif state == S_CHUNK_SIZE_LF:
                if c != 0x0A:
                    raise HttpParseError(status, "bad_chunk_framing")
                self._chunk_line = 0
                if self._remaining:
                    state = S_CHUNK_DATA
                else:
                    state = S_TRAILER_START
                    self._trailer_bytes = 0
            elif state == S_CHUNK_DATA_CR:
                if c != 0x0D:
                    raise HttpParseError(status, "bad_chunk_framing")
                state = S_CHUNK_DATA_LF
            elif state == S_CHUNK_DATA_LF:
                if c != 0x0A:
                    raise HttpParseError(status, "bad_chunk_framing")
                state = S_CHUNK_SIZE_START
            else:
                self._trailer_bytes += 1
                if self._trailer_bytes > self.max_header_bytes:
                    raise HttpParseError(431 if self._is_request else 502, "trailers_too_large")
                if state == S_TRAILER_START:
                    if c == 0x0D:
                        state = S_TRAILER_END_LF
                    elif c == 0x20 or c == 0x09:
                        raise HttpParseError(status, "obs_fold")
                    elif TOKEN[c]:
                        state = S_TRAILER_NAME
                    else:
                        raise HttpParseError(status, "bad_trailer")
                elif state == S_TRAILER_NAME:
                    if c == 0x3A:
                        state = S_TRAILER_VALUE
                    elif not TOKEN[c]:
                        raise HttpParseError(status, "bad_trailer")
                elif state == S_TRAILER_VALUE:
                    if c == 0x0D:
                        state = S_TRAILER_LF
                    elif not VALUE[c]:
                        raise HttpParseError(status, "bad_trailer")
                elif state == S_TRAILER_LF:
                    if c != 0x0A:
                        raise HttpParseError(status, "bad_trailer")
                    state = S_TRAILER_START
                else:
                    if c != 0x0A:
                        raise HttpParseError(status, "bad_chunk_framing")
                    self._queue(EV_BODY, start, pos)
                    self._end_message()
                    return pos
        self._state = state
        if pos > start:
            self._queue(EV_BODY, start, pos)
        return pos


cdef bytes parse_version(const char* p, Py_ssize_t n, int malformed, int unsupported):
    """``HTTP/1.0`` or ``HTTP/1.1``; any other well-formed version is unsupported."""
    if n != 8 or p[0] != b"H" or p[1] != b"T" or p[2] != b"T" or p[3] != b"P" or p[4] != b"/" or p[6] != b".":
        raise HttpParseError(malformed, "bad_version")
    if not (b"0" <= p[5] <= b"9" and b"0" <= p[7] <= b"9"):
        raise HttpParseError(malformed, "bad_version")
    if p[5] != b"1" or p[7] > b"1":
        raise HttpParseError(unsupported, "unsupported_version")
    return b"1.1" if p[7] == b"1" else b"1.0"


cdef class RequestParser(_Parser):
    """Parses the requests a client sends on one connection (see ``fastpath.http1_py.RequestParser``)."""

    def __init__(self, max_header_bytes=DEFAULT_MAX_HEADER_BYTES, max_start_line_bytes=None):
        _Parser.__init__(self, max_header_bytes, max_start_line_bytes)
        self._is_request = True
        self._error_status = 400

    cdef int _parse_start_line(self, const char* p, Py_ssize_t n) except -1:
        cdef const char* sp1 = <const char*>memchr(p, 32, n)
        cdef const char* sp2
        cdef Py_ssize_t i, a, b
        if sp1 == NULL or sp1 == p:
            raise HttpParseError(400, "bad_start_line")
        a = sp1 - p
        for i in range(a):
            if not TOKEN[<unsigned char>p[i]]:
                raise HttpParseError(400, "bad_method")
        sp2 = <const char*>memchr(sp1 + 1, 32, n - a - 1)
        if sp2 == NULL or sp2 == sp1 + 1:
            raise HttpParseError(400, "bad_start_line")
        b = sp2 - p
        for i in range(a + 1, b):
            if not TARGET[<unsigned char>p[i]]:
                raise HttpParseError(400, "bad_target")
        self._s3 = parse_version(sp2 + 1, n - b - 1, 400, 505)
        self._s1 = method_object(p, a)
        self._s2 = PyBytes_FromStringAndSize(sp1 + 1, b - a - 1)
        return 0

    cdef int _finish_head(self, Py_ssize_t head_end) except -1:
        cdef RequestHead head = RequestHead.__new__(RequestHead)
        cdef bint upgrade, connect
        head.method = self._s1
        head.target = self._s2
        head.version = V11 if self._s3[2] == 0x31 else V10
        head.raw = self._take_raw(head_end)
        head.hop_by_hop = self._hop
        hosts = self._hosts
        if hosts is not None and len(hosts) > 1:
            raise HttpParseError(400, "duplicate_host")
        if hosts is None and head.version == V11:
            raise HttpParseError(400, "missing_host")
        head.host = hosts[0] if hosts is not None else None
        head.request_id = self._request_id
        head.trace_context = self._trace
        head.client_cert_header = self._client_cert
        self._framing(head)
        upgrade = self._connection(head)
        expect = self._expect
        head.expect_continue = (
            expect is not None and head.version == V11 and expect.lower() == b"100-continue"
        )
        connect = head.method is M_CONNECT
        head.upgrade = connect or (upgrade and self._upgrade_hdr)
        self._upgrade_after = head.upgrade
        self._reset_head()
        self._start_body(head, not connect, connect)
        return 0


cdef class ResponseParser(_Parser):
    """Parses the responses an upstream sends on one connection (see ``fastpath.http1_py``)."""


    def __init__(self, max_header_bytes=DEFAULT_MAX_HEADER_BYTES, max_start_line_bytes=None):
        _Parser.__init__(self, max_header_bytes, max_start_line_bytes)
        self._is_request = False
        self._error_status = 502
        self._expected = []

    cpdef expect(self, bytes method, bint upgrade=False):
        """Record that a request with ``method`` was sent (``upgrade``: it asked to switch protocols)."""
        self._expected.append((method, upgrade))

    cdef int _parse_start_line(self, const char* p, Py_ssize_t n) except -1:
        cdef const char* sp1 = <const char*>memchr(p, 32, n)
        cdef Py_ssize_t a, i
        cdef int code
        if sp1 == NULL:
            raise HttpParseError(502, "bad_start_line")
        a = sp1 - p
        self._s1 = parse_version(p, a, 502, 502)
        if n - a - 1 < 3:
            raise HttpParseError(502, "bad_status")
        code = 0
        for i in range(a + 1, a + 4):
            if not (b"0" <= p[i] <= b"9"):
                raise HttpParseError(502, "bad_status")
            code = code * 10 + (p[i] - 48)
        if not (100 <= code <= 599):
            raise HttpParseError(502, "bad_status")
        self._s_code = code
        if n > a + 4:
            if p[a + 4] != b" ":
                raise HttpParseError(502, "bad_status")
            for i in range(a + 5, n):
                if not VALUE[<unsigned char>p[i]]:
                    raise HttpParseError(502, "bad_start_line")
            self._s2 = PyBytes_FromStringAndSize(p + a + 5, n - a - 5)
        else:
            self._s2 = b""
        return 0

    cdef int _finish_head(self, Py_ssize_t head_end) except -1:
        cdef ResponseHead head = ResponseHead.__new__(ResponseHead)
        cdef int status = self._s_code
        cdef bint has_body
        head.status = status
        head.reason = self._s2
        head.version = V11 if self._s1[2] == 0x31 else V10
        head.raw = self._take_raw(head_end)
        head.hop_by_hop = self._hop
        self._framing(head)
        self._connection(head)
        self._reset_head()
        head.upgrade = False
        if status < 200 and status != 101:
            self._start_body(head, False, False)
            return 0
        if not self._expected:
            raise HttpParseError(502, "unsolicited_response")
        method, upgrade_requested = self._expected.pop(0)
        if status == 101:
            if not upgrade_requested:
                raise HttpParseError(502, "unexpected_switching_protocols")
            head.upgrade = True
        elif method == M_CONNECT and status < 300:
            head.upgrade = True
        has_body = method != M_HEAD and status != 204 and status != 304
        if has_body and not head.upgrade and not head.chunked and head.content_length is None:
            head.keep_alive = False
        self._start_body(head, has_body, head.upgrade)
        return 0



# -- request IDs -------------------------------------------------------------------------------------
# A UUIDv4 per request that comes without x-request-id. They need to be unique, not secret: a
# xoshiro256** generator seeded from os.urandom (re-seeded in a forked child) makes one in ~30 ns.

from libc.stdint cimport uint64_t

cdef uint64_t _rng[4]
cdef char* _HEXDIGITS = b"0123456789abcdef"


cdef inline uint64_t _rotl(uint64_t x, int k) noexcept:
    return (x << k) | (x >> (64 - k))


cdef uint64_t _next() noexcept:
    cdef uint64_t result = _rotl(_rng[1] * 5, 7) * 9
    cdef uint64_t t = _rng[1] << 17
    _rng[2] ^= _rng[0]
    _rng[3] ^= _rng[1]
    _rng[1] ^= _rng[2]
    _rng[0] ^= _rng[3]
    _rng[2] ^= t
    _rng[3] = _rotl(_rng[3], 45)
    return result


def _seed():
    import os
    seed = os.urandom(32)
    for i in range(4):
        _rng[i] = int.from_bytes(seed[i * 8:(i + 1) * 8], "little") | 1


_seed()
import os as _os
_os.register_at_fork(after_in_child=_seed)


def request_id():
    """A random UUID (version 4) as 36 bytes of text, as Envoy generates for x-request-id."""
    cdef uint64_t hi = _next(), lo = _next()
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 36)
    cdef char* q = PyBytes_AS_STRING(out)
    cdef int i, j = 0
    cdef unsigned char b
    hi = (hi & 0xFFFFFFFFFFFF0FFF) | 0x0000000000004000  # version 4
    lo = (lo & 0x3FFFFFFFFFFFFFFF) | 0x8000000000000000  # RFC 4122 variant
    for i in range(16):
        b = <unsigned char>((hi >> (56 - 8 * i)) & 0xFF) if i < 8 else <unsigned char>((lo >> (56 - 8 * (i - 8))) & 0xFF)
        if i == 4 or i == 6 or i == 8 or i == 10:
            q[j] = b"-"
            j += 1
        q[j] = _HEXDIGITS[b >> 4]
        q[j + 1] = _HEXDIGITS[b & 15]
        j += 2
    return out
