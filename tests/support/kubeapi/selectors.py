"""Label and field selectors with the API server's syntax: ``a=b,c!=d,e in (x,y),f notin (z),g,!h``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .status import bad_request

Obj = dict[str, Any]
Requirement = Callable[[Mapping[str, str]], bool]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")
_COMPARE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=|>|<)\s*({_VALUE})\s*$")


def _split(selector: str) -> list[str]:
    """Top-level commas only: ``a in (x,y),b`` is two requirements."""
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def parse_label_selector(selector: str) -> Callable[[Obj], bool]:
    """A predicate over objects; a malformed selector is a 400 like the real server's."""
    requirements = [_label_requirement(part) for part in _split(selector)]

    def matches(obj: Obj) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(req(labels) for req in requirements)

    return matches


def _label_requirement(text: str) -> Requirement:
    if m := _SET.match(text):
        key, op, values = m.group(1), m.group(3), {v.strip() for v in m.group(4).split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _COMPARE.match(text):
        key, op, value = m.group(1), m.group(3), m.group(4)
        if op in ("=", "=="):
            return lambda labels: labels.get(key) == value
        if op == "!=":
            return lambda labels: labels.get(key) != value
        try:
            bound = int(value)
        except ValueError:
            raise bad_request(
                f"unable to parse requirement: {text!r}: "
                "for 'gt', 'lt' operators, the value must be an integer"
            ) from None
        return lambda labels: (
            _int(labels.get(key)) is not None
            and (
                _int(labels.get(key)) > bound if op == ">" else _int(labels.get(key)) < bound  # type: ignore[operator]
            )
        )
    if m := _EXISTS.match(text):
        negate, key = m.group(1) == "!", m.group(2)
        return (lambda labels: key not in labels) if negate else (lambda labels: key in labels)
    raise bad_request(
        f"unable to parse requirement: found {text.strip()!r}, expected a label selector requirement"
    )


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_field_selector(selector: str, supported: tuple[str, ...]) -> Callable[[Obj], bool]:
    """Exact-match field selectors (``=``, ``==``, ``!=``) over the fields the resource supports."""
    checks: list[Callable[[Obj], bool]] = []
    for part in _split(selector):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if m is None:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{part}'")
        path, op, value = m.group(1), m.group(2), m.group(3)
        if path not in supported:
            raise bad_request(f"field label not supported: {path}")
        checks.append(_field_check(path, op != "!=", value))
    return lambda obj: all(check(obj) for check in checks)


def _field_check(path: str, equal: bool, value: str) -> Callable[[Obj], bool]:
    def check(obj: Obj) -> bool:
        current: Any = obj
        for part in path.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if isinstance(current, bool):
            current = "true" if current else "false"
        text = "" if current is None else str(current)
        return (text == value) == equal

    return check
