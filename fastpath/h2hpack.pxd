# The compiled face of h2hpack.py.

cimport cython

@cython.locals(out=bytearray, nxt=bytes, sym=bytes, flags=bytes, state=Py_ssize_t, flag=int, i=Py_ssize_t, byte=cython.uchar, emit=int, fail=int, accept=int)
cpdef bytes huffman_decode(bytes data)

@cython.locals(limit=Py_ssize_t, out=bytearray)
cpdef bytes encode_integer(Py_ssize_t value, int prefix_bits, int first)


cdef class Decoder:
    cdef public list entries
    cdef public Py_ssize_t size
    cdef public Py_ssize_t max_size
    cdef public Py_ssize_t max_allowed
    cdef public Py_ssize_t max_header_list_size
    cdef public Py_ssize_t pos
    cdef public bytes data

    cpdef set_max_allowed(self, Py_ssize_t size)
    @cython.locals(data=bytes, pos=Py_ssize_t, value=Py_ssize_t, shift=int, byte=int)
    cdef Py_ssize_t _integer(self, int prefix_mask) except -1
    @cython.locals(data=bytes, huffman=int, length=Py_ssize_t, start=Py_ssize_t, end=Py_ssize_t)
    cdef bytes _string(self)
    @cython.locals(dyn=Py_ssize_t)
    cdef tuple _entry(self, Py_ssize_t index)
    @cython.locals(size=Py_ssize_t)
    cdef _add(self, bytes name, bytes value)
    @cython.locals(entries=list, drop=Py_ssize_t, name=bytes, value=bytes)
    cdef _evict(self)
    @cython.locals(headers=list, end=Py_ssize_t, list_size=Py_ssize_t, first=bint, byte=int, index=Py_ssize_t, size=Py_ssize_t, name=bytes, header=tuple)
    cpdef list decode(self, bytes data)


cdef class Encoder:
    cdef public list entries
    cdef public dict full
    cdef public dict names
    cdef public Py_ssize_t inserted
    cdef public Py_ssize_t size
    cdef public Py_ssize_t max_size
    cdef public Py_ssize_t pending_size

    cpdef set_max_table_size(self, Py_ssize_t size)
    @cython.locals(entries=list, drop=Py_ssize_t, name=bytes, value=bytes, number=Py_ssize_t)
    cdef _evict(self)
    @cython.locals(out=list, full=dict, index=Py_ssize_t, number=Py_ssize_t)
    cpdef bytes encode(self, list headers)
    @cython.locals(index=Py_ssize_t, number=Py_ssize_t, size=Py_ssize_t, first=int, prefix=int, head=bytes, vlen=bytes)
    cdef bytes _literal(self, bytes name, bytes value)
