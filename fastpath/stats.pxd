# The compiled face of stats.py (what runs per request).

cdef class Histogram:
    cdef public tuple bounds
    cdef public list counts
    cdef public long count
    cdef public double total
    cpdef observe(self, double value)


cdef class HttpSeries:
    cdef public long count
    cdef public Histogram duration
    cdef public Histogram request_bytes
    cdef public Histogram response_bytes


cdef class Stats:
    cdef public object identity
    cdef public dict http
    cdef public object tcp
    cdef public object named
    cdef public double started
    cpdef http_done(self, str reporter, object ex)
