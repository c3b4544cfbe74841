"""Validation of the objects the mesh reads: a pure function from a raw object to a list of issues.

The controller skips objects with errors (and reports them); the same function can back an admission
webhook. Messages name the field in Istio's spelling, and :meth:`Issue.format` adds the object:
``VirtualService default/reviews: http[1].route[0].weight: weights must sum to 100 (they sum to 90)``.
"""

from controller.validation.core import validate, validate_spec
from controller.validation.schema import Issue

__all__ = ["Issue", "validate", "validate_spec"]
