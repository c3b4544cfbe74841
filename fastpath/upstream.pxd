# The compiled face of upstream.py.

from fastpath._http1 cimport ResponseParser
from fastpath.clusters cimport Cluster, Host
from fastpath.exchange cimport Exchange
from fastpath.outbox cimport Outbox


cdef class UpstreamConnection:
    cdef public Host host
    cdef public Cluster cluster
    cdef public object transport
    cdef public ResponseParser parser
    cdef public Exchange exchange
    cdef public long requests
    cdef public double idle_since
    cdef public double born
    cdef public bint closed
    cdef public bint keep_alive
    cdef public bint discarding
    cdef public Outbox outbox
    cdef public list out
    cpdef flush(self)
    cdef _read(self, bytes data, Exchange ex)
    cpdef send(self, bytes data)
    cpdef start(self, Exchange exchange, bytes head, bytes method, bint upgrade)
    cpdef release(self)
    cpdef discard_response(self)
    cpdef close(self)
    cpdef abort(self)


cpdef acquire(Host host, Exchange ex)
