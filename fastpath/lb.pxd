# The compiled face of lb.py.

cdef class RoundRobin:
    cdef public list hosts
    cdef public long i
    cdef public bint weighted
    cdef public list current
    cdef public long total
    cpdef object pick(self, object exclude=*)
    cpdef object pick_hash(self, object key, object exclude=*)


cdef class LeastRequest:
    cdef public list hosts
    cdef public object rand
    cpdef object pick(self, object exclude=*)
    cpdef object pick_hash(self, object key, object exclude=*)


cdef class Random:
    cdef public list hosts
    cdef public object rand
    cdef public list bounds
    cdef public long total
    cpdef object pick(self, object exclude=*)
    cpdef object pick_hash(self, object key, object exclude=*)


cdef class RingHash:
    cdef public list hosts
    cdef public list hashes
    cdef public list owners
    cdef public object rand
    cpdef object pick(self, object exclude=*)
    cpdef object pick_hash(self, object key, object exclude=*)


cdef class Maglev:
    cdef public list hosts
    cdef public long size
    cdef public object rand
    cdef public list table
    cpdef object pick(self, object exclude=*)
    cpdef object pick_hash(self, object key, object exclude=*)


cdef class Prioritized:
    cdef public list pickers
    cdef public list bounds
    cdef public object rand
    cpdef object pick(self, object exclude=*)
    cpdef object pick_hash(self, object key, object exclude=*)


cdef class LocalityWeighted:
    cdef public Prioritized inner
    cpdef object pick(self, object exclude=*)
    cpdef object pick_hash(self, object key, object exclude=*)
