"""The validation webhook: the controller's own validation, asked before the API server stores an object.

Errors refuse the write with every field-level message; warnings (fields Mizzen does not implement yet,
kinds it does not enforce) let it through and reach the user as admission warnings (kubectl prints them).
"""

from __future__ import annotations

from controller.sources.kinds import KIND_INFO
from controller.validation import validate
from controller.validation.istio import SPECS
from controller.webhooks.admission import Request, Verdict, allow, deny
from mizzen import logs

log = logs.get("validate")

# The Istio kinds this webhook is registered for, with their API groups.
VALIDATED = {kind: KIND_INFO[kind].group for kind in SPECS if kind in KIND_INFO}


def review(request: Request) -> Verdict:
    if request.operation not in ("CREATE", "UPDATE"):
        return allow()
    if VALIDATED.get(request.kind) != request.group:
        # Not ours (the webhook's rules should not have sent it): never block what we do not understand.
        return allow(warnings=[f"Mizzen does not validate {request.group}/{request.kind}"])
    obj = dict(request.object)
    obj.setdefault("kind", request.kind)
    meta = dict(obj.get("metadata") or {})
    meta.setdefault("namespace", request.namespace)
    if not meta.get("name"):
        # generateName objects reach admission before their name is made: check the prefix instead.
        meta["name"] = request.name or str(meta.get("generateName") or "").rstrip("-.") or None
    obj["metadata"] = meta
    where = f"{request.kind} {meta.get('namespace')}/{meta.get('name')}"
    issues = validate(obj)
    errors = [i.format(where) for i in issues if i.severity == "error"]
    warnings = [i.format(where) for i in issues if i.severity == "warning"]
    if errors:
        log.info("refused", object=where, errors=errors)
        return deny("; ".join(errors), code=422, reason="Invalid")
    return allow(warnings=warnings)
