# The compiled face of h2codec.py.

cimport cython
from fastpath.h2hpack cimport Decoder, Encoder

cdef class Stream:
    cdef public long stream_id
    cdef public bint local_open
    cdef public bint remote_open
    cdef public long long send_window
    cdef public long long recv_window
    cdef public long long processed
    cdef public bint headers_received
    cdef public bint known
    cdef public bint head_request
    cdef public long long expected
    cdef public long long received


cdef class Connection:
    cdef public bint client_side
    cdef public dict streams
    cdef public dict closed
    cdef public list out
    cdef public bytes inbuf
    cdef public bint preface_pending
    cdef public bint settings_first
    cdef public bint dead
    cdef public Decoder decoder
    cdef public Encoder encoder
    cdef public long block_stream
    cdef public long block_flags
    cdef public str block_error
    cdef public list block_parts
    cdef public long block_size
    cdef public long long local_initial_window
    cdef public long long local_max_streams
    cdef public long long local_max_frame
    cdef public dict local_settings
    cdef public list pending_settings
    cdef public dict remote_settings
    cdef public long long remote_initial_window
    cdef public long long remote_max_streams
    cdef public long max_outbound_frame_size
    cdef public long long send_window
    cdef public long long recv_window
    cdef public long long recv_max
    cdef public long long processed
    cdef public long highest_inbound
    cdef public long next_stream_id
    cdef public bint goaway_sent
    cdef public bint goaway_received

    cpdef initiate_connection(self)
    cpdef update_settings(self, dict new_settings)
    @cython.locals(applied=dict, changed=dict, stream=Stream, delta=cython.longlong)
    cdef _settings_acked(self, list events)
    @cython.locals(changed=dict, offset=Py_ssize_t, delta=cython.longlong, stream=Stream)
    cdef _remote_settings(self, bytes payload, list events)

    @cython.locals(buf=bytes, pos=Py_ssize_t, end=Py_ssize_t, length=Py_ssize_t, ftype=int, flags=int, sid=long, start=Py_ssize_t)
    cpdef list receive_data(self, object data)
    cdef _on_frame(self, int ftype, int flags, long sid, bytes payload, list events)
    cdef bint _idle(self, long sid)
    cdef _late(self, long sid, str what)
    @cython.locals(flow=Py_ssize_t, data=bytes, stream=Stream, ended=object)
    cdef _data(self, int flags, long sid, bytes payload, list events)
    @cython.locals(start=Py_ssize_t, end=Py_ssize_t, error=str, fragment=bytes)
    cdef _headers(self, int flags, long sid, bytes payload, list events)
    @cython.locals(block=bytes)
    cdef _continuation(self, int flags, long sid, bytes payload, list events)
    @cython.locals(headers=list, end_stream=int, stream=Stream, ended=object, status=int, expected=Py_ssize_t)
    cdef _header_block(self, long sid, int flags, bytes block, str error, list events)
    @cython.locals(delta=cython.longlong, stream=Stream)
    cdef _window_update(self, long sid, bytes payload, list events)
    @cython.locals(stream=Stream)
    cdef _rst_stream(self, long sid, bytes payload, list events)
    @cython.locals(last=long, mine=int, stream=Stream)
    cdef _goaway_received(self, long sid, bytes payload, list events)
    @cython.locals(stream=Stream)
    cdef _stream_error(self, long sid, int code, list events)

    cdef _remote_end(self, Stream stream)
    cdef _local_end(self, Stream stream)
    cdef _close(self, Stream stream, int how)
    @cython.locals(closed=dict)
    cdef _remember(self, long sid, int how)
    @cython.locals(stream=Stream)
    cdef Stream _open_stream(self, long sid)

    cdef _consumed(self, long long n)
    @cython.locals(stream=Stream)
    cpdef acknowledge_received_data(self, long long acknowledged_size, long stream_id)
    @cython.locals(stream=Stream)
    cpdef increment_flow_control_window(self, long long increment, object stream_id=*)
    @cython.locals(stream=Stream)
    cpdef long long local_flow_control_window(self, long stream_id) except? -1

    cpdef long get_next_available_stream_id(self) except? -1
    @cython.locals(stream=Stream, block=bytes, flags=int, limit=Py_ssize_t, pos=Py_ssize_t, piece=bytes)
    cpdef send_headers(self, long stream_id, list headers, bint end_stream=*)
    @cython.locals(stream=Stream, n=Py_ssize_t, limit=Py_ssize_t, flags=int, pos=Py_ssize_t, last=int)
    cpdef send_data(self, long stream_id, bytes data, bint end_stream=*)
    cpdef end_stream(self, long stream_id)
    @cython.locals(stream=Stream)
    cpdef reset_stream(self, long stream_id, object error_code=*)
    cpdef close_connection(self, object error_code=*, bytes additional_data=*)
    cdef _goaway(self, long code, bytes debug)
    cpdef ping(self, bytes opaque_data)
    @cython.locals(out=list)
    cpdef bytes data_to_send(self)
