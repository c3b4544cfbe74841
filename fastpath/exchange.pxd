# The compiled face of exchange.py.

from fastpath._http1 cimport RequestHead, ResponseHead
from fastpath.clusters cimport Cluster, Host
from fastpath.http_conn cimport DownstreamConnection
from fastpath.routing cimport Route, RouteAction
from fastpath.upstream cimport UpstreamConnection


cdef class Exchange:
    cdef public DownstreamConnection conn
    cdef public RequestHead head
    cdef public double start
    cdef public Route route
    cdef public RouteAction action
    cdef public Cluster cluster
    cdef public Host host
    cdef public UpstreamConnection upstream
    cdef public object connecting
    cdef public Host waiting_on
    cdef public bint in_flight
    cdef public bytes upstream_head
    cdef public object request_id
    cdef public long attempt
    cdef public long retries_left
    cdef public object retry_timer
    cdef public list body
    cdef public long body_size
    cdef public list pending_body
    cdef public bint request_complete
    cdef public bint response_started
    cdef public bint response_complete
    cdef public ResponseHead response_head
    cdef public bint tunnel
    cdef public long tunnel_eofs
    cdef public bint done
    cdef public bint keep_alive
    cdef public long status
    cdef public object grpc_status
    cdef public str flags
    cdef public str details
    cdef public long bytes_received
    cdef public long bytes_sent
    cdef public double deadline
    cdef public double try_deadline
    cdef public double upstream_start
    cdef public object upstream_time
    cdef public long filter_index
    cdef public object filter_state
    cdef public long activity
    cdef public long idle_seen
    cdef public double idle_check
    cdef public tuple chain
    cdef public bytes response_extra
    cdef public object hash_key
    cdef public list taps
    cdef public object trace
    cpdef begin(self)
    cpdef resume(self)
    cpdef request_data(self, bytes data, Py_ssize_t start, Py_ssize_t end)
    cpdef request_end(self)
    cpdef on_pool_ready(self, UpstreamConnection upstream)
    cpdef on_response_head(self, UpstreamConnection upstream, ResponseHead head)
    cpdef on_response_data(self, bytes data, Py_ssize_t start, Py_ssize_t end)
    cpdef on_response_end(self, UpstreamConnection upstream)
    cpdef double on_timer(self, double now)
    cpdef local_reply(self, long status, bytes body, str flags, str details, bytes extra=*)
    cpdef finish(self)
