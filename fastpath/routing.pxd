# The compiled face of routing.py (pure-Python mode: the .py is the twin, this declares its C types).

cdef class RetryPolicy:
    cdef public long num_retries
    cdef public double per_try_timeout
    cdef public bint on_5xx
    cdef public bint on_gateway_error
    cdef public bint on_connect_failure
    cdef public bint on_reset
    cdef public bint on_retriable_4xx
    cdef public frozenset retriable_status_codes
    cdef public frozenset grpc_statuses
    cdef public double base_interval
    cdef public double max_interval
    cdef public bint previous_hosts
    cdef public long host_selection_max_attempts
    cpdef bint retriable_response(self, long status, object grpc_status)


cdef class WeightedClusters:
    cdef public tuple bounds
    cdef public tuple names
    cdef public long total
    cdef public tuple variants
    cpdef long index(self, long n)
    cpdef str pick(self, long n)


cdef class MirrorPolicy:
    cdef public str cluster
    cdef public long numerator
    cdef public long denominator
    cdef public bint host_suffix


cdef class HashPolicy:
    cdef public long kind
    cdef public str name
    cdef public bint terminal
    cdef public object ttl
    cdef public str cookie_path


cdef class RouteAction:
    cdef public str cluster
    cdef public WeightedClusters weighted
    cdef public double timeout
    cdef public double idle_timeout
    cdef public RetryPolicy retry
    cdef public object prefix_rewrite
    cdef public object regex_rewrite
    cdef public object host_rewrite
    cdef public bint websocket
    cdef public tuple mirrors
    cdef public tuple hash_policies


cdef class DirectResponse:
    cdef public long status
    cdef public bytes body


cdef class Redirect:
    cdef public long status
    cdef public object https
    cdef public object host
    cdef public object port
    cdef public object path
    cdef public object prefix
    cdef public bint strip_query


cdef class Route:
    cdef public str name
    cdef public long kind
    cdef public bint case_sensitive
    cdef public bytes path
    cdef public object regex
    cdef public tuple headers
    cdef public tuple query
    cdef public RouteAction action
    cdef public DirectResponse direct
    cdef public Redirect redirect
    cdef public tuple request_headers_to_add
    cdef public frozenset request_headers_to_remove
    cdef public tuple response_headers_to_add
    cdef public frozenset response_headers_to_remove
    cdef public object typed_per_filter_config
    cdef public bint include_attempt_count
    cpdef bint path_matches(self, bytes target)


cdef class VirtualHost:
    cdef public str name
    cdef public tuple domains
    cdef public tuple routes
    cdef public RetryPolicy retry
    cdef public bint needs_headers
    cdef public bint needs_query
    cpdef Route select(self, bytes method, bytes target, bytes authority, list headers)
    cpdef Route select_connect(self, bytes method, bytes target, bytes authority, list headers)


cdef class RouteTable:
    cdef public str name
    cdef public dict exact
    cdef public tuple suffixes
    cdef public tuple prefixes
    cdef public VirtualHost default
    cdef dict _cache
    cpdef VirtualHost vhost(self, bytes host)
