"""``metav1.Status`` bodies, as the API server writes them for failures."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


class StatusError(Exception):
    """Raised by handlers; becomes an HTTP answer with a Status body (and Retry-After when set)."""

    def __init__(self, status: Obj, retry_after: int | None = None) -> None:
        super().__init__(status.get("message", ""))
        self.status = status
        self.retry_after = retry_after

    @property
    def code(self) -> int:
        return int(self.status["code"])


def status(code: int, reason: str, message: str, details: Obj | None = None, **meta: str) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": dict(meta),
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details:
        body["details"] = details  # a nil pointer in Go: left out when there is nothing to say
    body["code"] = code
    return body


def not_found(resource: str, name: str, group: str = "") -> StatusError:
    qualified = f"{resource}.{group}" if group else resource
    details = {"name": name, "kind": resource} | ({"group": group} if group else {})
    return StatusError(status(404, "NotFound", f'{qualified} "{name}" not found', details))


def no_such_path() -> StatusError:
    return StatusError(status(404, "NotFound", "the server could not find the requested resource"))


def already_exists(resource: str, name: str, group: str = "") -> StatusError:
    qualified = f"{resource}.{group}" if group else resource
    details = {"name": name, "kind": resource} | ({"group": group} if group else {})
    return StatusError(status(409, "AlreadyExists", f'{qualified} "{name}" already exists', details))


def conflict(resource: str, name: str, group: str = "") -> StatusError:
    qualified = f"{resource}.{group}" if group else resource
    details = {"name": name, "kind": resource} | ({"group": group} if group else {})
    message = (
        f'Operation cannot be fulfilled on {qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return StatusError(status(409, "Conflict", message, details))


def bad_request(message: str) -> StatusError:
    return StatusError(status(400, "BadRequest", message))


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> StatusError:
    """422 Invalid; ``causes`` are (reason, field, message) as field.Error renders them."""
    qualified = f"{kind}.{group}" if group else kind
    text = "; ".join(f"{field}: {message}" for _, field, message in causes)
    prefix = f'{qualified} "{name}" is invalid: '
    message = prefix + (f"[{text}]" if len(causes) > 1 else text)
    details: Obj = {
        "name": name,
        "group": group,
        "kind": kind,
        "causes": [{"reason": r, "message": m, "field": f} for r, f, m in causes],
    }
    return StatusError(status(422, "Invalid", message, details))


def expired(message: str, continue_token: str = "") -> StatusError:
    body = status(410, "Expired", message)
    if continue_token:
        body["metadata"]["continue"] = continue_token
    return StatusError(body)


def too_large_resource_version(requested: int, current: int, retry_seconds: int = 1) -> StatusError:
    details = {
        "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        "retryAfterSeconds": retry_seconds,
    }
    message = f"Timeout: Too large resource version: {requested}, current: {current}"
    return StatusError(status(504, "Timeout", message, details))


def too_many_requests(retry_after: int) -> StatusError:
    details = {"retryAfterSeconds": retry_after}
    body = status(429, "TooManyRequests", "Too many requests, please try again later.", details)
    return StatusError(body, retry_after=retry_after)


def unauthorized() -> StatusError:
    return StatusError(status(401, "Unauthorized", "Unauthorized"))


def unsupported_media_type(content_type: str) -> StatusError:
    # Simplified: the real server also takes json-patch, strategic merge (built-ins) and apply patches.
    message = (
        "the body of the request was in an unknown format - accepted media types include: "
        f"application/merge-patch+json (got {content_type})"
    )
    return StatusError(status(415, "UnsupportedMediaType", message))
