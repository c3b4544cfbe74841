"""The injection webhook's decision: an AdmissionReview request for a pod in, a JSONPatch out."""

from __future__ import annotations

from collections.abc import Callable

import jsonpatch

from controller.inject.config import InjectConfig
from controller.inject.policy import decide
from controller.inject.template import InjectError, inject, workload_name
from controller.webhooks.admission import Request, Verdict, allow, deny
from mizzen import logs

log = logs.get("inject")


class Injector:
    """Answers ``/inject`` reviews. ``native`` says whether the cluster runs native sidecars."""

    def __init__(self, config: InjectConfig | Callable[[], InjectConfig], *, native: bool) -> None:
        self._config = config
        self.native = native

    @property
    def config(self) -> InjectConfig:
        return self._config() if callable(self._config) else self._config

    def review(self, request: Request) -> Verdict:
        if request.kind != "Pod" or request.group != "":
            return deny(
                f"the injection webhook only takes pods, not {request.group or 'core'}/{request.kind}"
            )
        if request.operation != "CREATE":
            return allow()
        pod = request.object
        config = self.config
        generated = str((pod.get("metadata") or {}).get("generateName") or workload_name(pod) + "-")
        who = f"pod {request.namespace}/{request.name or generated + '(generated)'}"
        decision = decide(pod, request.namespace, config)
        if not decision.inject:
            log.debug("not injected", pod=who, reason=decision.reason)
            return allow()
        try:
            injected, warnings = inject(pod, config, native=self.native)
        except InjectError as exc:
            log.warning("injection refused", pod=who, error=str(exc))
            return deny(f"sidecar injection: {who}: {exc}")
        patch = jsonpatch.make_patch(dict(pod), injected).patch
        log.info("injected", pod=who, native=self.native, operations=len(patch))
        return allow(patch, warnings)
