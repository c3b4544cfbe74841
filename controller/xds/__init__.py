"""Translation of the mesh model to Envoy v3 resources, and the ADS server that streams them."""
