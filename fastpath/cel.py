"""The part of CEL that access-log filters use (Istio's Telemetry ``filter.expression``, Envoy's CEL
access-log filter): compiled once into a Python function of a finished request.

Supported: integer, string and boolean literals; the attributes in ``ATTRIBUTES`` and
``request.headers['name']``; ``== != < <= > >=``; ``&& || !``; parentheses; ``in [list]``; and the string
methods ``startsWith``, ``endsWith``, ``contains`` and ``matches``. Anything else is refused with the
position and what was found, so a filter never silently means something else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Evaluator = Callable[[Any], Any]


class CelError(ValueError):
    pass


def _int_or_none(value: Any) -> int | None:
    return int(value) if value is not None else None


# attribute -> how to read it from an access-log record (fastpath.http_conn._Record's face)
ATTRIBUTES: dict[str, Evaluator] = {
    "response.code": lambda r: r.response_code,
    "response.flags": lambda r: r.response_flags,
    "response.code_details": lambda r: r.response_code_details,
    "response.size": lambda r: r.bytes_sent,
    "response.total_size": lambda r: r.bytes_sent,
    "request.size": lambda r: r.bytes_received,
    "request.total_size": lambda r: r.bytes_received,
    "request.method": lambda r: r.request_header("method") or "",
    "request.path": lambda r: r.request_header("path") or "",
    "request.url_path": lambda r: (r.request_header("path") or "").split("?", 1)[0],
    "request.host": lambda r: r.request_header("authority") or "",
    "request.scheme": lambda r: "http",
    "request.protocol": lambda r: r.protocol,
    "request.id": lambda r: r.request_header("x-request-id") or "",
    "request.useragent": lambda r: r.request_header("user-agent") or "",
    "request.referer": lambda r: r.request_header("referer") or "",
    "request.duration_ms": lambda r: r.duration_ms,
    "upstream.address": lambda r: r.upstream_host or "",
    "source.address": lambda r: r.downstream_remote_address or "",
    "destination.address": lambda r: r.downstream_local_address or "",
    "xds.cluster_name": lambda r: r.upstream_cluster or "",
    "xds.route_name": lambda r: r.route_name or "",
}

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>\d+)
    | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<op>&&|\|\||==|!=|<=|>=|<|>|!|\(|\)|\[|\]|,|\.)
    | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
    )""",
    re.VERBOSE,
)

_METHODS = {
    "startsWith": lambda s, a: isinstance(s, str) and s.startswith(a),
    "endsWith": lambda s, a: isinstance(s, str) and s.endswith(a),
    "contains": lambda s, a: isinstance(s, str) and a in s,
}


def _tokens(text: str) -> list[tuple[str, Any, int]]:
    out: list[tuple[str, Any, int]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise CelError(f"unexpected {text[pos : pos + 10]!r} at {pos}")
        kind = m.lastgroup
        value: Any = m.group(kind)  # type: ignore[arg-type]
        if kind == "num":
            value = int(value)
        elif kind == "str":
            value = bytes(value[1:-1], "utf-8").decode("unicode_escape")
        out.append((kind or "", value, m.start(kind)))  # type: ignore[arg-type]
        pos = m.end()
    out.append(("end", None, len(text)))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, Any, int]:
        return self.tokens[self.i]

    def take(self, kind: str, value: Any = None) -> Any:
        tok = self.tokens[self.i]
        if tok[0] != kind or (value is not None and tok[1] != value):
            want = value if value is not None else kind
            got = tok[1] if tok[0] != "end" else "the end"
            raise CelError(f"expected {want!r} at {tok[2]}, found {got!r}")
        self.i += 1
        return tok[1]

    def accept(self, value: str) -> bool:
        tok = self.tokens[self.i]
        if tok[0] == "op" and tok[1] == value:
            self.i += 1
            return True
        return False

    def parse(self) -> Evaluator:
        fn = self.or_()
        self.take("end")
        return fn

    def or_(self) -> Evaluator:
        left = self.and_()
        while self.accept("||"):
            right = self.and_()
            left = (lambda a, b: lambda r: bool(a(r)) or bool(b(r)))(left, right)
        return left

    def and_(self) -> Evaluator:
        left = self.compare()
        while self.accept("&&"):
            right = self.compare()
            left = (lambda a, b: lambda r: bool(a(r)) and bool(b(r)))(left, right)
        return left

    def compare(self) -> Evaluator:
        left = self.unary()
        tok = self.peek()
        if tok[0] == "op" and tok[1] in ("==", "!=", "<", "<=", ">", ">="):
            self.i += 1
            right = self.unary()
            op = tok[1]
            return (lambda a, b, o: lambda r: _compare(o, a(r), b(r)))(left, right, op)
        if tok[0] == "name" and tok[1] == "in":
            self.i += 1
            items = self.list_()
            return (lambda a, xs: lambda r: a(r) in xs)(left, items)
        return left

    def list_(self) -> frozenset[Any]:
        self.take("op", "[")
        items = []
        while not self.accept("]"):
            tok = self.peek()
            if tok[0] not in ("num", "str"):
                raise CelError(f"only literals in a list (at {tok[2]})")
            items.append(tok[1])
            self.i += 1
            if not self.accept(","):
                self.take("op", "]")
                break
        return frozenset(items)

    def unary(self) -> Evaluator:
        if self.accept("!"):
            inner = self.unary()
            return lambda r: not inner(r)
        return self.postfix(self.primary())

    def postfix(self, fn: Evaluator) -> Evaluator:
        while self.peek()[0] == "op" and self.peek()[1] == ".":
            self.i += 1
            at = self.peek()[2]
            method = self.take("name")
            self.take("op", "(")
            tok = self.peek()
            if tok[0] != "str":
                raise CelError(f"{method}() takes a string literal (at {tok[2]})")
            self.i += 1
            self.take("op", ")")
            arg = tok[1]
            if method == "matches":
                try:
                    pattern = re.compile(arg)
                except re.error as exc:
                    raise CelError(f"matches(): invalid regular expression: {exc}") from None
                fn = (lambda f, p: lambda r: isinstance(f(r), str) and p.search(f(r)) is not None)(
                    fn, pattern
                )
            elif method in _METHODS:
                fn = (lambda f, m, a: lambda r: m(f(r), a))(fn, _METHODS[method], arg)
            else:
                raise CelError(f"unsupported function {method!r} at {at}")
        return fn

    def primary(self) -> Evaluator:
        tok = self.peek()
        if tok[0] in ("num", "str"):
            self.i += 1
            value = tok[1]
            return lambda r: value
        if self.accept("("):
            inner = self.or_()
            self.take("op", ")")
            return inner
        if tok[0] == "name":
            if tok[1] in ("true", "false"):
                self.i += 1
                flag = tok[1] == "true"
                return lambda r: flag
            return self.attribute()
        got = tok[1] if tok[0] != "end" else "the end"
        raise CelError(f"unexpected {got!r} at {tok[2]}")

    def attribute(self) -> Evaluator:
        start = self.peek()[2]
        parts = [self.take("name")]
        while self.peek()[0] == "op" and self.peek()[1] == "." and self.tokens[self.i + 1][0] == "name":
            # a method call ends the attribute path
            if self.tokens[self.i + 2][0] == "op" and self.tokens[self.i + 2][1] == "(":
                break
            self.i += 1
            parts.append(self.take("name"))
        name = ".".join(parts)
        if name == "request.headers":
            self.take("op", "[")
            header = self.take("str").lower()
            self.take("op", "]")
            return lambda r: r.request_header(header) or ""
        if name == "response.headers":
            self.take("op", "[")
            header = self.take("str").lower()
            self.take("op", "]")
            return lambda r: r.response_header(header) or ""
        found = ATTRIBUTES.get(name)
        if found is None:
            raise CelError(f"unsupported attribute {name!r} at {start}")
        return found


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if isinstance(a, bool) or isinstance(b, bool) or type(a) is not type(b):
        if not (isinstance(a, int) and isinstance(b, int)):
            return False  # CEL has no ordering across types; the filter just does not match
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def compile_expression(text: str) -> Evaluator:
    """A predicate over a finished request; raises CelError naming what is not supported."""
    if not text.strip():
        raise CelError("empty expression")
    return _Parser(text).parse()


def log_filter(res: Any, path: str, flt: Any) -> Evaluator:
    """An AccessLog's ``filter``: Envoy's CEL extension filter (what Istio's Telemetry emits)."""
    from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2

    if flt.WhichOneof("filter_specifier") != "extension_filter":
        raise res.error(path, "only an extension_filter with a CEL ExpressionFilter")
    typed = flt.extension_filter.typed_config
    cfg = cel_pb2.ExpressionFilter()
    if not typed.Unpack(cfg):
        raise res.error(f"{path}.extension_filter.typed_config", f"{typed.type_url}: only ExpressionFilter")
    try:
        return compile_expression(cfg.expression)
    except CelError as exc:
        raise res.error(f"{path}.extension_filter.typed_config.expression", str(exc)) from None


def filtered(log: Any, predicate: Evaluator) -> Any:
    """``log`` writing only the requests ``predicate`` accepts (a failing evaluation writes nothing)."""
    from fastpath.access_log import AccessLog

    class FilteredAccessLog(AccessLog):
        def log(self, record: Any) -> None:
            try:
                keep = predicate(record)
            except (TypeError, ValueError, AttributeError):
                keep = False
            if keep:
                super().log(record)

    return FilteredAccessLog(log.path, log.format)
