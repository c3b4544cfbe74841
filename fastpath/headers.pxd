# The compiled face of headers.py (request IDs are made for most requests).

cpdef bytes local_reply(long status, bytes body=*, bint close=*, bytes extra=*, bytes content_type=*, bint head_only=*)
