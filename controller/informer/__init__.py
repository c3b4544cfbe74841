"""Kubernetes informers in asyncio, after client-go's ``tools/cache``: a Reflector lists and watches one
kind, a coalescing queue turns bursts into net changes, an indexed Store holds the state, and a
SharedInformer hands changes to its handlers and reports ``has_synced``."""
