"""Sidecar injection: which pods get the sidecar (``policy``), what it looks like (``template``,
``probes``), the settings behind it (``config``) and the webhook's AdmissionReview answer (``webhook``)."""

from controller.inject.config import ConfigError, InjectConfig
from controller.inject.policy import Decision, already_injected, decide
from controller.inject.template import InjectError, inject

__all__ = ["ConfigError", "Decision", "InjectConfig", "InjectError", "already_injected", "decide", "inject"]
