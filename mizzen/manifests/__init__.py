"""The install manifests: values and profiles (``values``), the Istio CRDs (``crds``), the renderer
(``render``) that ``mizzen install`` and ``mizzen manifest generate`` share."""

from mizzen.manifests.render import inject_config, render, to_yaml
from mizzen.manifests.values import PROFILES, ValuesError, resolve

__all__ = ["PROFILES", "ValuesError", "inject_config", "render", "resolve", "to_yaml"]
