"""mizzen-proxy: the sidecar, with its Cython hot path. Built by the sidecar issue."""
