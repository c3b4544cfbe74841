"""AdmissionReview in and out: the wire shape the API server sends to webhooks (v1, and v1beta1 as is).

A handler turns a request into a :class:`Verdict`; :func:`respond` wraps it in the review the API server
expects, echoing the request's ``uid`` and ``apiVersion``. A body that is not a review is a
:class:`ReviewError` (answered with HTTP 400 naming what is missing).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


class ReviewError(ValueError):
    """The body is not an AdmissionReview request."""


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    message: str = ""
    code: int = 200
    reason: str = ""
    patch: list[dict[str, Any]] | None = None
    warnings: list[str] = field(default_factory=list)


def allow(patch: list[dict[str, Any]] | None = None, warnings: list[str] | None = None) -> Verdict:
    return Verdict(True, patch=patch or None, warnings=warnings or [])


def deny(message: str, *, code: int = 400, reason: str = "BadRequest") -> Verdict:
    return Verdict(False, message=message, code=code, reason=reason)


@dataclass(frozen=True, slots=True)
class Request:
    """The parts of ``AdmissionReview.request`` the webhooks read."""

    api_version: str
    uid: str
    kind: str
    group: str
    operation: str
    namespace: str
    name: str
    object: Mapping[str, Any]
    dry_run: bool


def parse(body: bytes) -> Request:
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ReviewError(f"the body is not JSON: {exc}") from None
    if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
        raise ReviewError("the body is not an AdmissionReview (kind: AdmissionReview)")
    api_version = review.get("apiVersion")
    if api_version not in VERSIONS:
        raise ReviewError(f"apiVersion: must be one of {', '.join(VERSIONS)} (got {api_version!r})")
    request = review.get("request")
    if not isinstance(request, dict):
        raise ReviewError("request: is required")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid: is required")
    kind = request.get("kind") or {}
    obj = request.get("object")
    operation = str(request.get("operation", ""))
    if not isinstance(obj, dict):
        if operation != "DELETE":
            raise ReviewError("request.object: is required")
        old = request.get("oldObject")
        obj = old if isinstance(old, dict) else {}
    raw_meta = obj.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    return Request(
        api_version=str(api_version),
        uid=uid,
        kind=str(kind.get("kind", "") if isinstance(kind, dict) else ""),
        group=str(kind.get("group", "") if isinstance(kind, dict) else ""),
        operation=operation,
        namespace=str(request.get("namespace") or meta.get("namespace") or ""),
        name=str(request.get("name") or meta.get("name") or ""),
        object=obj,
        dry_run=bool(request.get("dryRun")),
    )


def respond(request: Request, verdict: Verdict) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": request.uid, "allowed": verdict.allowed}
    if not verdict.allowed:
        response["status"] = {
            "metadata": {},
            "status": "Failure",
            "code": verdict.code,
            "reason": verdict.reason,
            "message": verdict.message,
        }
    if verdict.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(verdict.patch)).decode()
    if verdict.warnings:
        response["warnings"] = list(verdict.warnings)
    return {"apiVersion": request.api_version, "kind": "AdmissionReview", "response": response}
