# The compiled face of lb.py.

cdef class RoundRobin:
    cdef public list hosts
    cdef public long i
    cdef public bint weighted
    cdef public list current
    cdef public long total
    cpdef object pick(self, object exclude=*)


cdef class LeastRequest:
    cdef public list hosts
    cdef public object rand
    cpdef object pick(self, object exclude=*)


cdef class Random:
    cdef public list hosts
    cdef public object rand
    cdef public list bounds
    cdef public long total
    cpdef object pick(self, object exclude=*)
