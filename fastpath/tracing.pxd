# Compiled with Cython's pure-Python mode (fastpath/tracing.py is the source and the twin): every request
# of a traced connection manager makes its decision in start(), so it is compiled like the hot path.
cpdef object start(object ex, object config, object rand=*)
