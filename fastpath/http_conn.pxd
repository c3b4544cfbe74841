# The compiled face of http_conn.py.

from fastpath._http1 cimport RequestParser
from fastpath.clusters cimport ClusterManager
from fastpath.exchange cimport Exchange
from fastpath.stats cimport Stats
from fastpath.outbox cimport Outbox


cdef class DownstreamConnection:
    cdef public object proxy
    cdef public object hcm
    cdef public str reporter
    cdef public object original_dst
    cdef public object loop
    cdef public object transport
    cdef public RequestParser parser
    cdef public bytes data
    cdef public Exchange exchange
    cdef public list backlog
    cdef public bint suspended
    cdef public bint driving
    cdef public bint closing
    cdef public bint draining
    cdef public long paused
    cdef public long requests
    cdef public bint http2
    cdef public str remote
    cdef public str local
    cdef public object tls
    cdef public str peer_principal
    cdef public object timer
    cdef public double timer_at
    cdef public double idle_deadline
    cdef public double head_deadline
    cdef public Outbox outbox
    cdef public list out
    cdef public tuple filters
    cdef public double stream_idle_timeout
    cdef public double idle_timeout
    cdef public bint generate_request_id
    cdef public bint request_id_in_response
    cdef public bytes server_name
    cdef public tuple access_logs
    cdef public object tracer
    cdef public Stats stats
    cdef public ClusterManager clusters
    cpdef flush(self)
    cpdef _drive(self)
    cpdef write(self, bytes data)
    cpdef pause_reading(self, long why=*)
    cpdef resume_reading(self, long why=*)
    cpdef exchange_done(self, Exchange ex)
    cpdef route_table(self)
    cpdef watch(self, double deadline)
    cpdef close(self)
    cpdef tunnel_open(self)
