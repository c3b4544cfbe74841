# The compiled face of clusters.py.

cdef class Cluster


cdef class Host:
    cdef public Cluster cluster
    cdef public str address
    cdef public long port
    cdef public long weight
    cdef public list idle
    cdef public object waiting
    cdef public long active_requests
    cdef public long connections
    cdef public long consecutive_5xx
    cdef public long consecutive_gateway
    cdef public long consecutive_local
    cdef public double ejected_until
    cdef public long ejections
    cdef public long priority
    cdef public str locality
    cdef public long locality_weight
    cdef public object tls


cdef class Cluster:
    cdef public object config
    cdef public str name
    cdef public dict hosts
    cdef public list candidates
    cdef public object picker
    cdef public object breakers
    cdef public long max_requests
    cdef public long max_pending_requests
    cdef public long max_connections
    cdef public long max_retries
    cdef public bint original_dst
    cdef public bint outlier
    cdef public bint http2
    cdef public bint use_downstream_protocol
    cdef public long active_requests
    cdef public long pending_requests
    cdef public long connections
    cdef public long active_retries
    cdef public bint removed
    cdef public dict stats
    cdef object _dns_task
    cdef public object detector
    cpdef Host pick(self, Host exclude=*)
    cpdef Host pick_hash(self, object key, Host exclude=*)
    cpdef report(self, Host host, long status, bint local_origin=*)
    cpdef bump(self, str stat, long n=*)


cdef class ClusterManager:
    cdef public dict clusters
    cpdef Cluster get(self, str name)
