# The compiled face of h2valid.py.

cimport cython

cdef _check_name(bytes name)
cdef _check_value(bytes name, bytes value)
@cython.locals(n=Py_ssize_t)
cdef Py_ssize_t _regular(bytes name, bytes value, Py_ssize_t length) except? -2
@cython.locals(seen=int, method=bytes, length=Py_ssize_t, regular=bint, empty_path=bint, name=bytes, value=bytes, bit=int)
cpdef Py_ssize_t check_request(list headers) except? -2
@cython.locals(status=int, regular=bint, length=Py_ssize_t, name=bytes, value=bytes)
cpdef int check_response(list headers) except? -2
@cython.locals(name=bytes, value=bytes)
cpdef check_trailers(list headers)
@cython.locals(name=bytes, value=bytes)
cpdef Py_ssize_t content_length(list headers) except? -2
@cython.locals(name=bytes, value=bytes, out=list)
cpdef list outbound(list headers)
