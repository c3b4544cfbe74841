"""Mizzen: a service mesh that keeps Istio's API."""

__version__ = "0.1.0"
