"""Where the mesh's config comes from: the Kubernetes API (``kube``) or a folder of YAML (``files``)."""
