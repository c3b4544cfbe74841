"""Envoy's RBAC (``envoy.config.rbac.v3.RBAC``) compiled to matchers, shared by the HTTP filter
(``fastpath.filters.rbac``) and the network filter on TCP chains.

A policy matches when one of its permissions (what is asked: port, path, method, host...) and one of
its principals (who asks: SPIFFE ID, source address, headers...) match. The engine's action decides
what a match means: ALLOW lets through only requests some policy matches, DENY refuses those, LOG
(Istio's AUDIT) only records them. On a TCP chain there is no request: header and path rules never
match there, as in Envoy.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2

from fastpath.config.errors import Resource, join

ALLOW, DENY, LOG = 0, 1, 2
ACTIONS = {ALLOW: "ALLOW", DENY: "DENY", LOG: "LOG"}


class RbacInput:
    """What a rule may look at, for one connection or one request."""

    __slots__ = ("dest_ip", "dest_port", "headers", "host", "method", "path", "principal", "sni", "source_ip")

    def __init__(
        self,
        *,
        principal: str = "",
        source_ip: str = "",
        dest_ip: str = "",
        dest_port: int = 0,
        sni: str = "",
        headers: Callable[[bytes], bytes | None] | None = None,
        method: str | None = None,
        path: str | None = None,
        host: str | None = None,
    ) -> None:
        self.principal = principal  # "" when the peer presented no certificate
        self.source_ip = source_ip
        self.dest_ip = dest_ip
        self.dest_port = dest_port
        self.sni = sni
        self.headers = headers  # None on a TCP chain
        self.method = method
        self.path = path  # without the query string
        self.host = host

    def header(self, name: str) -> str | None:
        if name == ":method":
            return self.method
        if name == ":path":
            return self.path
        if name in (":authority", "host"):
            return self.host
        if self.headers is None:
            return None
        value = self.headers(name.encode())
        return value.decode("latin-1") if value is not None else None


Matcher = Callable[[RbacInput], bool]


def _never(_: RbacInput) -> bool:
    return False


def _always(_: RbacInput) -> bool:
    return True


def string_matcher(res: Resource, path: str, m: Any) -> Callable[[str], bool]:
    """envoy.type.matcher.v3.StringMatcher as a predicate on text."""
    res.reject_unsupported(m, path, {"exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"})
    which = m.WhichOneof("match_pattern")
    fold = m.ignore_case
    if which == "safe_regex":
        try:
            rx = re.compile(m.safe_regex.regex, re.IGNORECASE if fold else 0)
        except re.error as exc:
            raise res.error(join(path, "safe_regex.regex"), f"invalid regex: {exc}") from None
        return lambda text: rx.fullmatch(text) is not None
    if which is None:
        raise res.error(path, "exact, prefix, suffix, contains or safe_regex")
    want = str(getattr(m, which))
    if fold:
        want = want.lower()
    if which == "exact":
        return (lambda text: text.lower() == want) if fold else (lambda text: text == want)
    if which == "prefix":
        return (lambda text: text.lower().startswith(want)) if fold else (lambda text: text.startswith(want))
    if which == "suffix":
        return (lambda text: text.lower().endswith(want)) if fold else (lambda text: text.endswith(want))
    return (lambda text: want in text.lower()) if fold else (lambda text: want in text)


def _header(res: Resource, path: str, h: Any) -> Matcher:
    res.reject_unsupported(
        h,
        path,
        {
            "name",
            "exact_match",
            "safe_regex_match",
            "present_match",
            "prefix_match",
            "suffix_match",
            "contains_match",
            "string_match",
            "invert_match",
        },
    )
    name = h.name.lower()
    which = h.WhichOneof("header_match_specifier")
    invert = h.invert_match
    test: Callable[[str], bool]
    if which is None or which == "present_match":
        want_present = h.present_match if which else True

        def presence(ctx: RbacInput) -> bool:
            return ((ctx.header(name) is not None) == want_present) != invert

        return presence
    elif which == "string_match":
        test = string_matcher(res, join(path, "string_match"), h.string_match)
    elif which == "safe_regex_match":
        try:
            rx = re.compile(h.safe_regex_match.regex)
        except re.error as exc:
            raise res.error(join(path, "safe_regex_match"), f"invalid regex: {exc}") from None
        test = lambda v: rx.fullmatch(v) is not None  # noqa: E731
    else:
        want = str(getattr(h, which))
        test = {
            "exact_match": lambda v: v == want,
            "prefix_match": lambda v: v.startswith(want),
            "suffix_match": lambda v: v.endswith(want),
            "contains_match": lambda v: want in v,
        }[which]

    def match(ctx: RbacInput) -> bool:
        value = ctx.header(name)
        if value is None:
            return False  # a missing header matches no value, inverted or not (Envoy's)
        return test(value) != invert

    return match


def _cidr(res: Resource, path: str, c: Any) -> Callable[[str], bool]:
    try:
        net = ipaddress.ip_network(f"{c.address_prefix}/{c.prefix_len.value}", strict=False)
    except ValueError as exc:
        raise res.error(path, str(exc)) from None

    def match(ip: str) -> bool:
        if not ip:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return addr.version == net.version and addr in net

    return match


def _url_path(res: Resource, path: str, p: Any) -> Matcher:
    res.reject_unsupported(p, path, {"path"})
    test = string_matcher(res, join(path, "path"), p.path)
    return lambda ctx: ctx.path is not None and test(ctx.path)


def _all(items: list[Matcher]) -> Matcher:
    return lambda ctx: all(m(ctx) for m in items)


def _any(items: list[Matcher]) -> Matcher:
    return lambda ctx: any(m(ctx) for m in items)


def permission(res: Resource, path: str, p: rbac_pb2.Permission) -> Matcher:
    which = p.WhichOneof("rule")
    if which == "any":
        return _always if p.any else _never
    if which in ("and_rules", "or_rules"):
        rules = getattr(p, which).rules
        items = [permission(res, f"{path}.{which}.rules[{i}]", r) for i, r in enumerate(rules)]
        return _all(items) if which == "and_rules" else _any(items)
    if which == "not_rule":
        inner = permission(res, join(path, "not_rule"), p.not_rule)
        return lambda ctx: not inner(ctx)
    if which == "header":
        return _header(res, join(path, "header"), p.header)
    if which == "url_path":
        return _url_path(res, join(path, "url_path"), p.url_path)
    if which == "destination_ip":
        test = _cidr(res, join(path, "destination_ip"), p.destination_ip)
        return lambda ctx: test(ctx.dest_ip)
    if which == "destination_port":
        port = p.destination_port
        return lambda ctx: ctx.dest_port == port
    if which == "destination_port_range":
        lo, hi = p.destination_port_range.start, p.destination_port_range.end
        return lambda ctx: lo <= ctx.dest_port < hi
    if which == "requested_server_name":
        sni = string_matcher(res, join(path, "requested_server_name"), p.requested_server_name)
        return lambda ctx: sni(ctx.sni)
    raise res.error(join(path, which or "rule"), "not supported by mizzen-proxy")


def principal(res: Resource, path: str, p: rbac_pb2.Principal) -> Matcher:
    which = p.WhichOneof("identifier")
    if which == "any":
        return _always if p.any else _never
    if which in ("and_ids", "or_ids"):
        ids = getattr(p, which).ids
        items = [principal(res, f"{path}.{which}.ids[{i}]", x) for i, x in enumerate(ids)]
        return _all(items) if which == "and_ids" else _any(items)
    if which == "not_id":
        inner = principal(res, join(path, "not_id"), p.not_id)
        return lambda ctx: not inner(ctx)
    if which == "authenticated":
        auth = p.authenticated
        res.reject_unsupported(auth, join(path, "authenticated"), {"principal_name"})
        if not auth.HasField("principal_name"):
            return lambda ctx: bool(ctx.principal)
        name = string_matcher(res, join(path, "authenticated.principal_name"), auth.principal_name)
        return lambda ctx: bool(ctx.principal) and name(ctx.principal)
    if which in ("source_ip", "direct_remote_ip", "remote_ip"):
        # Sidecars do not trust x-forwarded-for: the remote address is the connection's peer.
        test = _cidr(res, join(path, which), getattr(p, which))
        return lambda ctx: test(ctx.source_ip)
    if which == "header":
        return _header(res, join(path, "header"), p.header)
    if which == "url_path":
        return _url_path(res, join(path, "url_path"), p.url_path)
    raise res.error(join(path, which or "identifier"), "not supported by mizzen-proxy")


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    permissions: Matcher
    principals: Matcher


@dataclass(frozen=True, slots=True)
class RbacEngine:
    action: int
    policies: tuple[Policy, ...]

    def evaluate(self, ctx: RbacInput) -> tuple[bool, str]:
        """(allowed, the name of the policy that matched or "")."""
        matched = ""
        for policy in self.policies:
            if policy.permissions(ctx) and policy.principals(ctx):
                matched = policy.name
                break
        if self.action == ALLOW:
            return bool(matched), matched
        if self.action == DENY:
            return not matched, matched
        return True, matched


def compile_rbac(res: Resource, path: str, rbac: rbac_pb2.RBAC) -> RbacEngine:
    res.reject_unsupported(rbac, path, {"action", "policies"})
    if rbac.action not in ACTIONS:
        raise res.error(join(path, "action"), "ALLOW, DENY or LOG")
    policies = []
    for name in sorted(rbac.policies):  # Envoy's map has no order; sorted names make the match stable
        pol = rbac.policies[name]
        pp = f"{path}.policies[{name!r}]"
        res.reject_unsupported(pol, pp, {"permissions", "principals"})
        if not pol.permissions or not pol.principals:
            raise res.error(pp, "a policy needs at least one permission and one principal")
        perms = [permission(res, f"{pp}.permissions[{i}]", x) for i, x in enumerate(pol.permissions)]
        prins = [principal(res, f"{pp}.principals[{i}]", x) for i, x in enumerate(pol.principals)]
        policies.append(Policy(name, _any(perms), _any(prins)))
    return RbacEngine(rbac.action, tuple(policies))
