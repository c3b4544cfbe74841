# The compiled face of upstream_h2.py: no C types declared; compiling the module as it is takes the
# interpreter loop out of the upstream HTTP/2 glue (the codec under it is typed: h2codec.pxd).
