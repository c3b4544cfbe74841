# The codec's C-level face, for the proxy's compiled modules (see _http1.pyx).

cdef class _Head:
    cdef public str version
    cdef public object content_length
    cdef public bint chunked
    cdef public bint keep_alive
    cdef public bint upgrade
    cdef public bytes raw
    cdef public bint hop_by_hop
    cdef list _headers
    cdef object _conn_drop
    cdef bytes _forward(self, bytes first, bint keep_upgrade, bytes tail)

cdef class RequestHead(_Head):
    cdef public bytes method
    cdef public bytes target
    cdef public object host
    cdef public bint expect_continue
    cdef public object request_id
    cdef public bint trace_context
    cdef public bint client_cert_header
    cpdef bytes for_upstream(self, bytes extra=*)

cdef class ResponseHead(_Head):
    cdef public int status
    cdef public bytes reason
    cpdef bytes for_downstream(self, bytes extra=*, object connection=*)

cdef class _Parser:
    cdef public Py_ssize_t max_header_bytes
    cdef public Py_ssize_t max_start_line_bytes
    cdef public object head
    cdef public Py_ssize_t start
    cdef public Py_ssize_t end
    cdef bint _is_request
    cdef int _error_status
    cdef int _state
    cdef object _error
    cdef bytes _data
    cdef Py_ssize_t _pos
    cdef int _q_n
    cdef int _q_i
    cdef int _q_code[4]
    cdef Py_ssize_t _q_a[4]
    cdef Py_ssize_t _q_b[4]
    cdef object _q_head
    cdef bytes _pending
    cdef list _rawparts
    cdef Py_ssize_t _raw_start
    cdef Py_ssize_t _head_bytes
    cdef bint _have_start
    cdef bytes _s1, _s2, _s3
    cdef int _nheaders
    cdef bint _hop
    cdef list _hosts
    cdef list _cls
    cdef list _tes
    cdef list _conns
    cdef object _expect
    cdef bint _upgrade_hdr
    cdef object _request_id
    cdef bint _trace
    cdef bint _client_cert
    cdef unsigned long long _remaining
    cdef Py_ssize_t _chunk_line
    cdef Py_ssize_t _trailer_bytes
    cdef bint _upgrade_after
    cdef void _reset_head(self)
    cdef object _fail(self, int status, str reason)
    cpdef set_data(self, bytes data)
    cpdef int next(self) except -1
    cdef int _pop(self)
    cdef void _queue(self, int code, Py_ssize_t a, Py_ssize_t b)
    cdef void _stash(self, Py_ssize_t a, Py_ssize_t b)
    cdef Py_ssize_t _feed_head(self, Py_ssize_t pos, Py_ssize_t end) except -1
    cdef int _check_line_limits(self, Py_ssize_t line_bytes) except -1
    cdef int _head_line(self, bytes owner, const char* p, Py_ssize_t n, Py_ssize_t pos) except -1
    cdef int _parse_start_line(self, const char* p, Py_ssize_t n) except -1
    cdef int _finish_head(self, Py_ssize_t head_end) except -1
    cdef bytes _take_raw(self, Py_ssize_t head_end)
    cdef int _framing(self, _Head head) except -1
    cdef bint _connection(self, _Head head) except -1
    cdef int _start_body(self, _Head head, bint has_body, bint tunnel) except -1
    cdef void _end_message(self)
    cdef Py_ssize_t _feed_body(self, Py_ssize_t pos, Py_ssize_t end) except -1

cdef class RequestParser(_Parser):
    cdef int _parse_start_line(self, const char* p, Py_ssize_t n) except -1
    cdef int _finish_head(self, Py_ssize_t head_end) except -1

cdef class ResponseParser(_Parser):
    cdef object _expected
    cdef int _s_code
    cpdef expect(self, bytes method, bint upgrade=*)
    cdef int _parse_start_line(self, const char* p, Py_ssize_t n) except -1
    cdef int _finish_head(self, Py_ssize_t head_end) except -1
