"""Dynamic admission: the API server calls the mutating, then the validating webhooks its
Mutating/ValidatingWebhookConfigurations register, over HTTPS with an AdmissionReview, as a real one does.

What is modelled: rules (operations, groups, versions, resources, scope), namespaceSelector (a Namespace
object is matched on its own labels; other cluster-scoped objects never skip), objectSelector (new or old
object), ``clientConfig.url`` or ``clientConfig.service`` (reached through ``services``, which tests fill, and
verified against ``caBundle`` under the name ``<service>.<namespace>.svc``), ``timeoutSeconds`` (default 10),
``failurePolicy`` (default Fail), AdmissionReview v1 and v1beta1, JSONPatch answers, one reinvocation of
``IfNeeded`` webhooks after a later one changed the object, warnings, and the API server's error texts:
a denial is ``admission webhook "<name>" denied the request: <message>`` with the webhook's code (at least
400); a failed call under Fail is a 500 ``failed calling webhook``.

Not modelled: ``matchConditions`` (CEL) and ``matchPolicy: Exact`` against other versions — a configuration
that uses them is refused loudly rather than half-honoured; dry-run requests are not served at all.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from . import status as st
from .apply import json_patch
from .objects import Target
from .storage import Storage

Obj = dict[str, Any]

MUTATING = "mutatingwebhookconfigurations.admissionregistration.k8s.io"
VALIDATING = "validatingwebhookconfigurations.admissionregistration.k8s.io"
_REVIEW_VERSIONS = ("v1", "v1beta1")
_OPTIONS_KIND = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}


@dataclass
class Outcome:
    """What admission adds to the answer: the API server sends webhook warnings as ``Warning`` headers."""

    warnings: list[str] = field(default_factory=list)


class Admission:
    """The webhook caller. ``services[(namespace, name, port)] = (host, port)`` is where a Service-backed
    webhook is reached (the cluster network a real API server routes through)."""

    def __init__(self, storage: Storage, user: Obj | None = None) -> None:
        self._storage = storage
        self.services: dict[tuple[str, str, int], tuple[str, int]] = {}
        self.user = user or {"username": "test-user", "groups": ["system:authenticated"]}
        self.calls: list[tuple[str, str]] = []  # (webhook name, operation), for tests to look at

    async def mutate(self, op: str, target: Target, obj: Obj, old: Obj | None, outcome: Outcome) -> Obj:
        """Every matching mutating webhook, in configuration-name order; returns the mutated object."""
        hooks = self._matching(MUTATING, op, target, obj, old)
        ran: list[tuple[Obj, Obj]] = []  # (webhook, the object as it saw it)
        for hook in hooks:
            seen = obj
            obj = await self._call(hook, op, target, obj, old, outcome, mutating=True)
            ran.append((hook, seen))
        for hook, seen in ran:
            # reinvocationPolicy IfNeeded: once more when a later webhook changed what this one saw.
            if hook.get("reinvocationPolicy") == "IfNeeded" and seen != obj:
                obj = await self._call(hook, op, target, obj, old, outcome, mutating=True)
        return obj

    async def validate(
        self, op: str, target: Target, obj: Obj | None, old: Obj | None, outcome: Outcome
    ) -> None:
        """Every matching validating webhook, at once (as the API server runs them)."""
        hooks = self._matching(VALIDATING, op, target, obj, old)
        if hooks:
            await asyncio.gather(
                *(self._call(h, op, target, obj, old, outcome, mutating=False) for h in hooks)
            )

    # Matching.

    def _matching(
        self, resource: str, op: str, target: Target, obj: Obj | None, old: Obj | None
    ) -> list[Obj]:
        out = []
        configs = self._storage.current(resource)
        for _, config in sorted(configs.items()):
            for hook in config.get("webhooks") or ():
                if hook.get("matchConditions"):
                    raise st.StatusError(
                        st.status(500, "InternalError", f"API test server: webhook {hook['name']!r} uses "
                                  "matchConditions (CEL), which it does not evaluate")
                    )  # fmt: skip
                if hook.get("matchPolicy") == "Exact":
                    raise st.StatusError(
                        st.status(500, "InternalError", f"API test server: webhook {hook['name']!r} uses "
                                  "matchPolicy Exact, which it does not model")
                    )  # fmt: skip
                if (
                    _rules_match(hook.get("rules") or (), op, target)
                    and self._namespace_matches(hook.get("namespaceSelector"), target, obj, old)
                    and _object_matches(hook.get("objectSelector"), obj, old)
                ):
                    out.append(hook)
        return out

    def _namespace_matches(
        self, selector: Obj | None, target: Target, obj: Obj | None, old: Obj | None
    ) -> bool:
        if not selector:
            return True
        resource = target.resource
        if not resource.namespaced:
            if resource.group_resource != "namespaces":
                return True  # other cluster-scoped objects never skip a webhook by namespace
            return label_selector_matches(selector, _labels(obj if obj is not None else old))
        namespace = self._storage.get("namespaces", ("", target.namespace or ""))
        return label_selector_matches(selector, _labels(namespace))

    # Calling.

    async def _call(
        self,
        hook: Obj,
        op: str,
        target: Target,
        obj: Obj | None,
        old: Obj | None,
        outcome: Outcome,
        *,
        mutating: bool,
    ) -> Obj:
        name = str(hook.get("name", ""))
        self.calls.append((name, op))
        versions = [v for v in hook.get("admissionReviewVersions") or () if v in _REVIEW_VERSIONS]
        if not versions:
            return self._failed(hook, obj, f"none of {list(_REVIEW_VERSIONS)} is in admissionReviewVersions")
        uid = str(uuid.uuid4())
        review = {
            "apiVersion": f"admission.k8s.io/{versions[0]}",
            "kind": "AdmissionReview",
            "request": self._request(uid, op, target, obj, old),
        }
        try:
            answer = await self._post(hook, review)
        except (TimeoutError, OSError, aiohttp.ClientError, ValueError) as exc:
            return self._failed(hook, obj, f"failed to call webhook: {type(exc).__name__}: {exc}")
        response = answer.get("response") if isinstance(answer, dict) else None
        if not isinstance(response, dict):
            return self._failed(hook, obj, "the webhook answered without a response")
        if response.get("uid") != uid:
            return self._failed(hook, obj, f"expected response.uid={uid!r}, got {response.get('uid')!r}")
        outcome.warnings += [str(w) for w in response.get("warnings") or ()]
        if not response.get("allowed"):
            raise _denied(name, response.get("status"))
        patch = response.get("patch")
        if patch is None or obj is None:
            return obj if obj is not None else {}
        if not mutating:
            return self._failed(hook, obj, "a validating webhook answered with a patch")
        if response.get("patchType") != "JSONPatch":
            return self._failed(hook, obj, f"unsupported patchType {response.get('patchType')!r}")
        try:
            ops = orjson.loads(base64.b64decode(patch))
        except ValueError as exc:
            return self._failed(hook, obj, f"the patch is not base64 JSON: {exc}")
        try:
            patched: Obj = json_patch(copy.deepcopy(obj), ops)
        except st.StatusError as exc:
            return self._failed(hook, obj, str(exc))
        if (patched.get("apiVersion"), patched.get("kind")) != (obj.get("apiVersion"), obj.get("kind")):
            return self._failed(hook, obj, "the patch changed the object's apiVersion or kind")
        return patched

    def _request(self, uid: str, op: str, target: Target, obj: Obj | None, old: Obj | None) -> Obj:
        resource = target.resource
        kind = {"group": resource.group, "version": target.version, "kind": resource.kind}
        gvr = {"group": resource.group, "version": target.version, "resource": resource.plural}
        name = target.name or ((obj or {}).get("metadata") or {}).get("name") or ""
        request: Obj = {
            "uid": uid,
            "kind": kind,
            "resource": gvr,
            "requestKind": kind,
            "requestResource": gvr,
            "name": name,
            "operation": op,
            "userInfo": self.user,
            "object": obj,
            "oldObject": old,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": _OPTIONS_KIND.get(op, "CreateOptions")},
        }
        if resource.namespaced:
            request["namespace"] = target.namespace or ((obj or {}).get("metadata") or {}).get("namespace")
        return request

    async def _post(self, hook: Obj, review: Obj) -> Any:
        client = hook.get("clientConfig") or {}
        bundle = client.get("caBundle")
        context = ssl.create_default_context()
        if bundle:
            context = ssl.create_default_context(cadata=base64.b64decode(bundle).decode())
        if "url" in client:
            url = str(client["url"])
            server_name = urlsplit(url).hostname or ""
        else:
            svc = client.get("service") or {}
            namespace, name = str(svc.get("namespace", "")), str(svc.get("name", ""))
            port = int(svc.get("port") or 443)
            where = self.services.get((namespace, name, port))
            if where is None:
                raise OSError(f'service "{namespace}/{name}" port {port} has no route (API test server)')
            path = svc.get("path") or "/"
            url = f"https://{where[0]}:{where[1]}{path}"
            server_name = f"{name}.{namespace}.svc"
        timeout = aiohttp.ClientTimeout(total=float(hook.get("timeoutSeconds") or 10))
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(
                url,
                data=orjson.dumps(review),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                ssl=context,
                server_hostname=server_name,
            ) as answer:
                if answer.status != 200:
                    raise ValueError(f"the webhook answered HTTP {answer.status}")
                return orjson.loads(await answer.read())

    @staticmethod
    def _failed(hook: Obj, obj: Obj | None, why: str) -> Obj:
        """A call that went wrong: under Ignore the request goes on as if the webhook were not there."""
        if hook.get("failurePolicy", "Fail") == "Ignore":
            return obj if obj is not None else {}
        message = f'Internal error occurred: failed calling webhook "{hook.get("name")}": {why}'
        raise st.StatusError(st.status(500, "InternalError", message, {"causes": [{"message": message}]}))


def _denied(name: str, result: Any) -> st.StatusError:
    result = dict(result) if isinstance(result, dict) else {}
    code = int(result.get("code") or 0)
    denied = f'admission webhook "{name}" denied the request'
    if result.get("message"):
        message = f"{denied}: {result['message']}"
    elif result.get("reason"):
        message = f"{denied}: {result['reason']}"
    else:
        message = f"{denied} without explanation"
    body = st.status(max(code, 400), str(result.get("reason") or ""), message, result.get("details"))
    return st.StatusError(body)


def _rules_match(rules: Any, op: str, target: Target) -> bool:
    resource = target.resource
    for rule in rules:
        if op not in rule.get("operations", ()) and "*" not in rule.get("operations", ()):
            continue
        if resource.group not in rule.get("apiGroups", ()) and "*" not in rule.get("apiGroups", ()):
            continue
        if target.version not in rule.get("apiVersions", ()) and "*" not in rule.get("apiVersions", ()):
            continue
        names = rule.get("resources", ())
        if resource.plural not in names and "*" not in names and "*/*" not in names:
            continue  # "pods/*" names subresources only, which this server does not serve
        scope = rule.get("scope", "*")
        if (scope == "Namespaced" and not resource.namespaced) or (
            scope == "Cluster" and resource.namespaced
        ):
            continue
        return True
    return False


def _labels(obj: Obj | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _object_matches(selector: Obj | None, obj: Obj | None, old: Obj | None) -> bool:
    if not selector:
        return True
    return any(label_selector_matches(selector, _labels(o)) for o in (obj, old) if o is not None)


def label_selector_matches(selector: Obj, labels: Mapping[str, str]) -> bool:
    """A structured LabelSelector (matchLabels and matchExpressions) against labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, operator, values = expr["key"], expr["operator"], expr.get("values") or ()
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise st.bad_request(f"unknown label selector operator {operator!r}")
    return True
