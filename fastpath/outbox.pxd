cdef class Outbox:
    cdef public bint active
    cdef public list dirty
    cpdef bint begin(self)
    cpdef end(self)
