"""The controller's admission webhooks (``/inject``, ``/validate``) and their serving certificates."""
