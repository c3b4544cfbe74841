"""A small schema language for Kubernetes-style objects: types, enums, unknown and unsupported fields.

A schema is a tree of checkers; each walks its part of a raw object and appends :class:`Issue`s with the
field path in Istio's own spelling (``http[1].route[0].weight``). Unknown fields are errors (the API server
would have refused them under strict field validation); fields Istio defines but Mizzen does not implement
yet are warnings, so the user learns that they are ignored instead of finding out in production.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

from controller.model.values import parse_duration

Severity = Literal["error", "warning"]


class Issue(NamedTuple):
    """One problem with an object: where (a field path) and what."""

    severity: Severity
    path: str
    message: str

    def format(self, obj: object) -> str:
        """``VirtualService default/reviews: http[1].route[0].weight: weights must sum to 100``."""
        where = f"{self.path}: " if self.path else ""
        return f"{obj}: {where}{self.message}"


class Issues(list[Issue]):
    def error(self, path: str, message: str) -> None:
        self.append(Issue("error", path, message))

    def warn(self, path: str, message: str) -> None:
        self.append(Issue("warning", path, message))


Checker = Callable[[Any, str, Issues], None]


def join(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field


def _type_name(value: Any) -> str:
    return {
        dict: "object",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
    }.get(type(value), type(value).__name__)


def string(*, enum: Sequence[str] | None = None, non_empty: bool = False) -> Checker:
    def check(value: Any, path: str, out: Issues) -> None:
        if not isinstance(value, str):
            out.error(path, f"must be a string, not {_type_name(value)}")
        elif enum is not None and value not in enum:
            out.error(path, f"must be one of {', '.join(enum)} (got {value!r})")
        elif non_empty and not value:
            out.error(path, "must not be empty")

    return check


def integer(*, minimum: int | None = None, maximum: int | None = None) -> Checker:
    def check(value: Any, path: str, out: Issues) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            out.error(path, f"must be an integer, not {_type_name(value)}")
        elif minimum is not None and value < minimum:
            out.error(path, f"must be at least {minimum} (got {value})")
        elif maximum is not None and value > maximum:
            out.error(path, f"must be at most {maximum} (got {value})")

    return check


def port_number() -> Checker:
    return integer(minimum=1, maximum=65535)


def boolean() -> Checker:
    def check(value: Any, path: str, out: Issues) -> None:
        if not isinstance(value, bool):
            out.error(path, f"must be true or false, not {_type_name(value)}")

    return check


def number(*, minimum: float | None = None, maximum: float | None = None) -> Checker:
    def check(value: Any, path: str, out: Issues) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            out.error(path, f"must be a number, not {_type_name(value)}")
        elif (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            out.error(path, f"must be between {minimum} and {maximum} (got {value})")

    return check


def duration(*, positive: bool = False) -> Checker:
    def check(value: Any, path: str, out: Issues) -> None:
        try:
            parsed = parse_duration(value)
        except ValueError as exc:
            out.error(path, str(exc))
            return
        if positive and parsed.nanos == 0:
            out.error(path, "must be greater than zero")
        elif parsed.nanos and parsed.nanos < 1_000_000:
            out.error(path, "must be at least 1ms")

    return check


def regex() -> Checker:
    def check(value: Any, path: str, out: Issues) -> None:
        if not isinstance(value, str):
            out.error(path, f"must be a string, not {_type_name(value)}")
            return
        try:
            re.compile(value)
        except re.error as exc:
            out.error(path, f"invalid regular expression: {exc}")

    return check


def ip_or_cidr() -> Checker:
    def check(value: Any, path: str, out: Issues) -> None:
        try:
            ipaddress.ip_network(value, strict=False)
        except (ValueError, TypeError):
            out.error(path, f"must be an IP address or CIDR range (got {value!r})")

    return check


def anything() -> Checker:
    def check(value: Any, path: str, out: Issues) -> None:
        pass

    return check


def list_of(item: Checker, *, min_items: int = 0) -> Checker:
    def check(value: Any, path: str, out: Issues) -> None:
        if not isinstance(value, list):
            out.error(path, f"must be a list, not {_type_name(value)}")
            return
        if len(value) < min_items:
            out.error(path, f"must have at least {min_items} item{'s' if min_items > 1 else ''}")
        for i, entry in enumerate(value):
            item(entry, f"{path}[{i}]", out)

    return check


def map_of(value_check: Checker, *, key_check: Callable[[str], str | None] | None = None) -> Checker:
    def check(value: Any, path: str, out: Issues) -> None:
        if not isinstance(value, Mapping):
            out.error(path, f"must be a map, not {_type_name(value)}")
            return
        for k, v in value.items():
            sub = f"{path}[{k}]"
            if key_check is not None and (reason := key_check(str(k))):
                out.error(sub, reason)
            value_check(v, sub, out)

    return check


class Unsupported(NamedTuple):
    """A field Istio defines that Mizzen does not implement yet: reported as a warning, then ignored."""

    what: str = ""


class Field(NamedTuple):
    check: Checker
    required: bool = False


FieldSpec = Checker | Field | Unsupported


def obj(
    fields: Mapping[str, FieldSpec],
    *,
    one_of: Sequence[Sequence[str]] = (),
    extra: Callable[[Mapping[str, Any], str, Issues], None] | None = None,
) -> Checker:
    """An object with named fields. ``one_of`` groups allow at most one field set (Istio's oneofs);
    ``extra`` runs semantic checks once the fields have the right shapes."""

    def check(value: Any, path: str, out: Issues) -> None:
        if not isinstance(value, Mapping):
            out.error(path, f"must be an object, not {_type_name(value)}")
            return
        before = sum(1 for i in out if i.severity == "error")
        for name, spec in fields.items():
            if isinstance(spec, Field) and spec.required and value.get(name) in (None, "", [], {}):
                out.error(join(path, name), "is required")
        for name, field_value in value.items():
            sub = join(path, str(name))
            found = fields.get(name)
            if found is None:
                out.error(sub, "unknown field")
            elif isinstance(found, Unsupported):
                if field_value not in (None, [], {}, ""):
                    detail = f" ({found.what})" if found.what else ""
                    out.warn(sub, f"not supported by Mizzen yet; ignored{detail}")
            elif field_value is not None:
                (found.check if isinstance(found, Field) else found)(field_value, sub, out)
        for group in one_of:
            present = [name for name in group if value.get(name) is not None]
            if len(present) > 1:
                out.error(path or present[0], f"only one of {', '.join(group)} may be set")
        if extra is not None and sum(1 for i in out if i.severity == "error") == before:
            extra(value, path, out)

    return check


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def dns_label() -> Checker:
    def check(value: Any, path: str, out: Issues) -> None:
        if not isinstance(value, str) or len(value) > 63 or not _DNS_LABEL.match(value):
            out.error(path, f"must be a DNS label (lower case letters, digits and '-'; got {value!r})")

    return check


def is_dns_subdomain(value: str) -> bool:
    return len(value) <= 253 and bool(_DNS_SUBDOMAIN.match(value))
