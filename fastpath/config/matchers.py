"""Compiling Envoy's matchers (strings, regexes, headers, query parameters) into cheap Python callables.

Everything here runs once per config update; what it returns runs per request. Matchers work on ``str``:
the route table decodes the request's bytes once as UTF-8 with ``surrogateescape``, so comparisons agree
with Envoy's byte-wise ones for any input (invalid UTF-8 becomes lone surrogates no config string holds).

Regexes: Envoy compiles ``safe_regex`` with RE2. We use Python's ``re`` after a compatibility check
(:func:`compile_re2`) that rejects what RE2 would reject (backreferences, lookaround, atomic groups,
possessive quantifiers, conditionals, repetition counts over 1000) and what ``re`` cannot do the RE2 way
(``\\p{..}`` classes, POSIX ``[[:alpha:]]``, ``\\Q..\\E``, ``\\C``). ``re.ASCII`` gives RE2's ASCII-only
``\\d \\w \\s \\b``; one known difference remains: ``(?i)`` folds ASCII only, where RE2 folds Unicode.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from urllib.parse import unquote

from envoy.config.route.v3 import route_components_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from fastpath.config.errors import Resource, join

# Header values by (lower-case) name, multiple values joined with "," as Envoy's
# HeaderUtility::getAllOfHeaderAsString does; query parameters by name, first value.
HeaderValues = Mapping[str, str]
HeaderTest = Callable[[HeaderValues], bool]
StringTest = Callable[[str], bool]

# RE2's limit on {n,m} counts (kMaxRepeat).
_RE2_MAX_REPEAT = 1000
_RE2_FLAGS = frozenset("imsU")


class RegexError(ValueError):
    """A pattern RE2 would refuse, or one ``re`` cannot evaluate with RE2's meaning."""


def compile_re2(pattern: str) -> re.Pattern[str]:
    """Compile an RE2-syntax pattern with ``re``, refusing constructs whose meaning would differ.

    Translations, where both engines have the construct under different spellings: ``\\z`` -> ``\\Z``,
    ``(?<name>`` -> ``(?P<name>``. Use ``fullmatch`` for Envoy's match semantics.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise RegexError("trailing backslash")
            d = pattern[i + 1]
            if d in "123456789":
                raise RegexError(f"backreference \\{d} at offset {i} (RE2 has none)")
            if d in "pP":
                raise RegexError(f"Unicode class \\{d} at offset {i} is not supported")
            if d in "QEC":
                raise RegexError(f"\\{d} at offset {i} is not supported")
            if d == "Z":
                raise RegexError(f"\\Z at offset {i} (RE2 has no \\Z; use \\z or $)")
            out.append("\\Z" if d == "z" else c + d)
            i += 2
            continue
        if in_class:
            if c == "[" and pattern.startswith(("[:", "[=", "[."), i):
                raise RegexError(f"POSIX class at offset {i} is not supported; spell the range out")
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            # A ']' first in the class (after an optional '^') is a literal in both engines.
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append("]")
                i += 1
            continue
        if c == "(" and pattern.startswith("(?", i):
            i = _group_head(pattern, i, out)
            continue
        if c in "*+?}" and i + 1 < n and pattern[i + 1] == "+":
            raise RegexError(f"possessive quantifier at offset {i} (RE2 has none)")
        if c == "{":
            m = re.match(r"\{(\d+)(?:,(\d*))?\}", pattern[i:])
            if m and any(g and int(g) > _RE2_MAX_REPEAT for g in m.groups()):
                raise RegexError(f"repetition count over {_RE2_MAX_REPEAT} at offset {i}")
        out.append(c)
        i += 1
    try:
        return re.compile("".join(out), re.ASCII)
    except re.error as exc:
        raise RegexError(str(exc)) from None


def _group_head(pattern: str, i: int, out: list[str]) -> int:
    """Check the ``(?...`` at ``i``, append its translation, return the offset after the head."""
    rest = pattern[i + 2 :]
    if rest.startswith(":"):
        out.append("(?:")
        return i + 3
    if rest.startswith("P<"):
        out.append("(?P<")
        return i + 4
    if rest.startswith("<") and not rest.startswith(("<=", "<!")):
        out.append("(?P<")
        return i + 3
    if rest.startswith(("=", "!", "<=", "<!")):
        raise RegexError(f"lookaround at offset {i} (RE2 has none)")
    if rest.startswith(">"):
        raise RegexError(f"atomic group at offset {i} (RE2 has none)")
    if rest.startswith(("P=", "(")):
        raise RegexError(f"backreference or conditional at offset {i} (RE2 has none)")
    m = re.match(r"([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])", rest)
    if not m:
        raise RegexError(f"unsupported group syntax at offset {i}")
    flags = (m.group(1) or "") + (m.group(2) or "")
    bad = set(flags) - _RE2_FLAGS
    if bad:
        raise RegexError(f"flag {sorted(bad)[0]!r} at offset {i} (RE2 knows i, m, s, U)")
    if "U" in flags:
        raise RegexError(f"flag 'U' (ungreedy) at offset {i} is not supported")
    out.append("(?" + m.group(0))
    return i + 2 + len(m.group(0))


def compile_regex_matcher(res: Resource, field: str, matcher: regex_pb2.RegexMatcher) -> re.Pattern[str]:
    """A ``RegexMatcher`` (``safe_regex``) -> compiled pattern; errors name ``field``."""
    if matcher.HasField("google_re2") and matcher.google_re2.HasField("max_program_size"):
        raise res.error(join(field, "google_re2.max_program_size"), "not supported by mizzen-proxy")
    try:
        return compile_re2(matcher.regex)
    except RegexError as exc:
        raise res.error(join(field, "regex"), f"invalid regex {matcher.regex!r}: {exc}") from None


def compile_string_matcher(res: Resource, field: str, sm: string_pb2.StringMatcher) -> StringTest:
    """A ``StringMatcher`` -> ``test(value) -> bool`` (Envoy's semantics: safe_regex is a full match)."""
    kind = sm.WhichOneof("match_pattern")
    if kind == "safe_regex":
        return compile_regex_matcher(res, join(field, "safe_regex"), sm.safe_regex).fullmatch  # type: ignore[return-value]
    if kind is None or kind == "custom":
        raise res.error(
            join(field, kind or "match_pattern"),
            "a string matcher needs exact, prefix, suffix, contains or safe_regex",
        )
    pattern: str = getattr(sm, kind)
    if kind != "exact" and not pattern:
        # Envoy's proto validation: prefix/suffix/contains must be non-empty.
        raise res.error(join(field, kind), "must not be empty")
    if sm.ignore_case:
        # Envoy folds ASCII only (absl::AsciiStrToLower); lower() on both sides is the same for ASCII.
        p = pattern.lower()
        if kind == "exact":
            return lambda v: v.lower() == p
        if kind == "prefix":
            return lambda v: v.lower().startswith(p)
        if kind == "suffix":
            return lambda v: v.lower().endswith(p)
        return lambda v: p in v.lower()
    if kind == "exact":
        return pattern.__eq__  # type: ignore[return-value]
    if kind == "prefix":
        return lambda v: v.startswith(pattern)
    if kind == "suffix":
        return lambda v: v.endswith(pattern)
    return lambda v: pattern in v


def compile_header_matcher(
    res: Resource, field: str, hm: route_components_pb2.HeaderMatcher
) -> tuple[str, HeaderTest]:
    """A ``HeaderMatcher`` -> (lower-case header name, ``test(headers) -> bool``).

    Mirrors Envoy's HeaderUtility::matchHeaders: an absent header matches only a ``present_match: false``
    (or, inverted, a ``present_match: true``) unless ``treat_missing_header_as_empty`` makes it "".
    """
    name = hm.name.lower()
    if not name:
        raise res.error(join(field, "name"), "must not be empty")
    kind = hm.WhichOneof("header_match_specifier")
    invert = hm.invert_match
    missing_empty = hm.treat_missing_header_as_empty
    value_test: StringTest
    if kind is None or kind == "present_match":
        # No specifier at all means "present" in Envoy.
        present = hm.present_match if kind else True
        if missing_empty:
            # The header always "exists" (as ""), so the answer no longer depends on the request.
            const = present != invert
            return name, lambda h: const
        return name, lambda h: (name in h) == (present != invert)
    if kind == "exact_match":
        exact = hm.exact_match
        # Envoy: an empty exact_match matches any value.
        value_test = (lambda v: True) if not exact else exact.__eq__  # type: ignore[assignment]
    elif kind == "prefix_match":
        prefix = hm.prefix_match
        value_test = lambda v: v.startswith(prefix)  # noqa: E731
    elif kind == "suffix_match":
        suffix = hm.suffix_match
        value_test = lambda v: v.endswith(suffix)  # noqa: E731
    elif kind == "contains_match":
        needle = hm.contains_match
        value_test = lambda v: needle in v  # noqa: E731
    elif kind == "safe_regex_match":
        value_test = compile_regex_matcher(res, join(field, kind), hm.safe_regex_match).fullmatch  # type: ignore[assignment]
    elif kind == "string_match":
        value_test = compile_string_matcher(res, join(field, kind), hm.string_match)
    elif kind == "range_match":
        lo, hi = hm.range_match.start, hm.range_match.end

        def value_test(v: str) -> bool:
            # Envoy parses with absl::SimpleAtoi (int64, optional sign, no spaces) then tests [start, end).
            try:
                n = int(v, 10) if v and v.strip() == v and "_" not in v else None
            except ValueError:
                return False
            return n is not None and lo <= n < hi
    else:
        raise res.error(join(field, kind), "not supported by mizzen-proxy")

    def test(h: HeaderValues) -> bool:
        v = h.get(name)
        if v is None:
            if not missing_empty:
                return False
            v = ""
        return bool(value_test(v)) != invert

    return name, test


def compile_query_matcher(
    res: Resource, field: str, qm: route_components_pb2.QueryParameterMatcher
) -> Callable[[HeaderValues], bool]:
    """A ``QueryParameterMatcher`` -> ``test(params) -> bool`` over the request's first value per name."""
    name = qm.name
    if not name:
        raise res.error(join(field, "name"), "must not be empty")
    kind = qm.WhichOneof("query_parameter_match_specifier")
    if kind == "string_match":
        value_test = compile_string_matcher(res, join(field, kind), qm.string_match)

        def test(q: HeaderValues) -> bool:
            v = q.get(name)
            return v is not None and bool(value_test(v))

        return test
    if kind == "present_match" and not qm.present_match:
        # Envoy: present_match false is "the parameter is absent".
        return lambda q: name not in q
    return lambda q: name in q


def parse_query(path: str) -> dict[str, str]:
    """The query string of ``path`` as {name: first value}, percent-decoded like Envoy's
    ``parseAndDecodeQueryString`` (``+`` is not a space there either)."""
    q = path.find("?")
    if q < 0:
        return {}
    query = path[q + 1 :]
    h = query.find("#")
    if h >= 0:
        query = query[:h]
    params: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        k = unquote(k, errors="surrogateescape")
        if k not in params:
            params[k] = unquote(v, errors="surrogateescape")
    return params


def compile_rewrite_substitution(
    res: Resource, field: str, pattern: re.Pattern[str], substitution: str
) -> str:
    """RE2's rewrite string (``\\0``..``\\9``, ``\\\\``) -> a ``re.sub`` template; checks group numbers."""
    out: list[str] = []
    i = 0
    while i < len(substitution):
        c = substitution[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        d = substitution[i + 1 : i + 2]
        if d == "\\":
            out.append("\\\\")
        elif d.isdigit():
            if int(d) > pattern.groups:
                raise res.error(
                    join(field, "substitution"),
                    f"\\{d} refers to a group the pattern does not have ({pattern.groups})",
                )
            out.append(f"\\g<{d}>")
        else:
            raise res.error(
                join(field, "substitution"), f"invalid escape at offset {i} (RE2 allows \\0-\\9 and \\\\)"
            )
        i += 2
    return "".join(out)
