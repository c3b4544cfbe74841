"""The mesh model: typed, immutable, versioned snapshots of what the sources hold (``snapshot.MeshState``)."""
