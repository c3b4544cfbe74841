"""The capture rule builder: pod annotations in, ``iptables-restore`` text out.

A pure function, kept free of I/O so that it can be golden-tested. It lays the
rules out in Istio's chain layout (ISTIO_INBOUND, ISTIO_REDIRECT,
ISTIO_IN_REDIRECT, ISTIO_OUTPUT) so that tools and runbooks written for Istio
keep working, and it honours Istio's ``traffic.sidecar.istio.io/*`` annotations.

Every rule is written in the exact form ``iptables-save`` prints it back
(option order ``-s -d -i -o -p -m ...``, ``-m tcp`` made explicit). That lets
CHECK compare what is in a netns with what should be there line by line, with
no parser of iptables' grammar.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing, re and ipaddress stay out of the plugin's start-up (see cni/spec.py)
if TYPE_CHECKING:
    import ipaddress
    from collections.abc import Mapping
    from typing import Literal

    Family = Literal[4, 6]
    Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Chains we own; anything else in the nat table belongs to somebody else.
INBOUND = "ISTIO_INBOUND"
REDIRECT = "ISTIO_REDIRECT"
IN_REDIRECT = "ISTIO_IN_REDIRECT"
OUTPUT = "ISTIO_OUTPUT"
CHAINS = (INBOUND, REDIRECT, IN_REDIRECT, OUTPUT)

PROXY_UID = 1337
OUTBOUND_CAPTURE_PORT = 15001
INBOUND_CAPTURE_PORT = 15006
HBONE_PORT = 15008
# Envoy-compatible stats, health and merged-metrics ports are never captured inbound.
DEFAULT_EXCLUDED_INBOUND = (15090, 15021, 15020)

ANN_PREFIX = "traffic.sidecar.istio.io/"
ANN_INCLUDE_OUT_RANGES = ANN_PREFIX + "includeOutboundIPRanges"
ANN_EXCLUDE_OUT_RANGES = ANN_PREFIX + "excludeOutboundIPRanges"
ANN_INCLUDE_OUT_PORTS = ANN_PREFIX + "includeOutboundPorts"
ANN_EXCLUDE_OUT_PORTS = ANN_PREFIX + "excludeOutboundPorts"
ANN_INCLUDE_IN_PORTS = ANN_PREFIX + "includeInboundPorts"
ANN_EXCLUDE_IN_PORTS = ANN_PREFIX + "excludeInboundPorts"
ANN_EXCLUDE_INTERFACES = ANN_PREFIX + "excludeInterfaces"
ANN_REROUTE_INTERFACES = "istio.io/reroute-virtual-interfaces"
ANN_INTERCEPTION_MODE = "sidecar.istio.io/interceptionMode"
ANN_STATUS_PORT = "status.sidecar.istio.io/port"


class AnnotationError(ValueError):
    """An annotation whose value cannot be turned into rules; names the annotation."""

    def __init__(self, annotation: str, value: str, reason: str) -> None:
        super().__init__(f"annotation {annotation}={value!r}: {reason}")
        self.annotation = annotation
        self.value = value
        self.reason = reason


class _All:
    """The ``*`` wildcard of Istio's include lists."""

    def __repr__(self) -> str:
        return "ALL"


ALL = _All()


class CaptureConfig:
    """What to redirect, resolved from annotations; both address families in one. Immutable."""

    __slots__ = (
        "exclude_inbound_ports",
        "exclude_interfaces",
        "exclude_outbound_ports",
        "exclude_outbound_ranges",
        "inbound_port",
        "include_inbound_ports",
        "include_outbound_ports",
        "include_outbound_ranges",
        "outbound_port",
        "proxy_gid",
        "proxy_uid",
        "reroute_interfaces",
    )

    proxy_uid: int
    proxy_gid: int
    outbound_port: int
    inbound_port: int
    include_inbound_ports: _All | tuple[int, ...]
    exclude_inbound_ports: tuple[int, ...]
    include_outbound_ranges: _All | tuple[Network, ...]
    exclude_outbound_ranges: tuple[Network, ...]
    include_outbound_ports: tuple[int, ...]
    exclude_outbound_ports: tuple[int, ...]
    exclude_interfaces: tuple[str, ...]
    reroute_interfaces: tuple[str, ...]

    def __init__(
        self,
        *,
        proxy_uid: int = PROXY_UID,
        proxy_gid: int = PROXY_UID,
        outbound_port: int = OUTBOUND_CAPTURE_PORT,
        inbound_port: int = INBOUND_CAPTURE_PORT,
        include_inbound_ports: _All | tuple[int, ...] = ALL,
        exclude_inbound_ports: tuple[int, ...] = DEFAULT_EXCLUDED_INBOUND,
        include_outbound_ranges: _All | tuple[Network, ...] = ALL,
        exclude_outbound_ranges: tuple[Network, ...] = (),
        include_outbound_ports: tuple[int, ...] = (),
        exclude_outbound_ports: tuple[int, ...] = (),
        exclude_interfaces: tuple[str, ...] = (),
        reroute_interfaces: tuple[str, ...] = (),
    ) -> None:
        values = dict(locals())
        del values["self"]
        for name in self.__slots__:
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"CaptureConfig is immutable (tried to set {name})")

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CaptureConfig) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "CaptureConfig(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"

    @property
    def captures_inbound(self) -> bool:
        return self.include_inbound_ports is ALL or bool(self.include_inbound_ports)


# --- annotations -> CaptureConfig ------------------------------------------------------------------

_IFACE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:@-")


def _is_iface(name: str) -> bool:
    """A Linux interface name (IFNAMSIZ - 1 chars), optionally iptables' ``+`` wildcard suffix."""
    stem = name[:-1] if name.endswith("+") else name
    return 0 < len(stem) <= 15 and all(ch in _IFACE_CHARS for ch in stem)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _ports(annotation: str, value: str) -> tuple[int, ...]:
    ports: list[int] = []
    for part in _split(value):
        if not part.isdigit() or not 0 < int(part) < 65536:
            raise AnnotationError(annotation, value, f"{part!r} is not a port number (1-65535)")
        if int(part) not in ports:
            ports.append(int(part))
    return tuple(ports)


def _ranges(annotation: str, value: str) -> tuple[Network, ...]:
    parts = _split(value)
    if not parts:
        return ()
    import ipaddress  # ~7 ms: only pods with range annotations pay for it

    nets: list[Network] = []
    for part in parts:
        try:
            net = ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise AnnotationError(annotation, value, f"{part!r} is not a CIDR") from None
        if net not in nets:
            nets.append(net)
    return tuple(nets)


def _interfaces(annotation: str, value: str) -> tuple[str, ...]:
    names = _split(value)
    for name in names:
        if not _is_iface(name):
            raise AnnotationError(annotation, value, f"{name!r} is not an interface name")
    return tuple(dict.fromkeys(names))


def config_from_annotations(annotations: Mapping[str, str]) -> CaptureConfig:
    """Resolve Istio's traffic annotations into a :class:`CaptureConfig`.

    Raises :class:`AnnotationError` naming the first annotation that is invalid.
    """
    mode = annotations.get(ANN_INTERCEPTION_MODE, "REDIRECT")
    if mode != "REDIRECT":
        reason = "only REDIRECT is supported" + (
            "; NONE means no capture and is decided before rules are built" if mode == "NONE" else ""
        )
        raise AnnotationError(ANN_INTERCEPTION_MODE, mode, reason)

    include_in: _All | tuple[int, ...] = ALL
    raw = annotations.get(ANN_INCLUDE_IN_PORTS)
    if raw is not None and raw.strip() != "*":
        include_in = _ports(ANN_INCLUDE_IN_PORTS, raw)

    excluded_in = list(DEFAULT_EXCLUDED_INBOUND)
    status_port = annotations.get(ANN_STATUS_PORT)
    if status_port is not None:
        for port in _ports(ANN_STATUS_PORT, status_port):
            if port not in excluded_in:
                excluded_in.append(port)
    for port in _ports(ANN_EXCLUDE_IN_PORTS, annotations.get(ANN_EXCLUDE_IN_PORTS, "")):
        if port not in excluded_in:
            excluded_in.append(port)

    include_out: _All | tuple[Network, ...] = ALL
    raw = annotations.get(ANN_INCLUDE_OUT_RANGES)
    if raw is not None and raw.strip() != "*":
        include_out = _ranges(ANN_INCLUDE_OUT_RANGES, raw)

    return CaptureConfig(
        include_inbound_ports=include_in,
        exclude_inbound_ports=tuple(excluded_in),
        include_outbound_ranges=include_out,
        exclude_outbound_ranges=_ranges(ANN_EXCLUDE_OUT_RANGES, annotations.get(ANN_EXCLUDE_OUT_RANGES, "")),
        include_outbound_ports=_ports(ANN_INCLUDE_OUT_PORTS, annotations.get(ANN_INCLUDE_OUT_PORTS, "")),
        exclude_outbound_ports=_ports(ANN_EXCLUDE_OUT_PORTS, annotations.get(ANN_EXCLUDE_OUT_PORTS, "")),
        exclude_interfaces=_interfaces(ANN_EXCLUDE_INTERFACES, annotations.get(ANN_EXCLUDE_INTERFACES, "")),
        reroute_interfaces=_interfaces(ANN_REROUTE_INTERFACES, annotations.get(ANN_REROUTE_INTERFACES, "")),
    )


# --- CaptureConfig -> rules ------------------------------------------------------------------------


def _rule(
    chain: str,
    jump: str,
    *,
    src: str | None = None,
    dst: str | None = None,
    not_dst: bool = False,
    in_if: str | None = None,
    out_if: str | None = None,
    tcp: bool = False,
    dport: int | None = None,
    not_dport: bool = False,
    owner: tuple[str, int, bool] | None = None,
    to_ports: int | None = None,
) -> str:
    """One ``-A`` line in iptables-save's own option order."""
    parts = ["-A", chain]
    if src:
        parts += ["-s", src]
    if dst:
        parts += (["!"] if not_dst else []) + ["-d", dst]
    if in_if:
        parts += ["-i", in_if]
    if out_if:
        parts += ["-o", out_if]
    if tcp:
        parts += ["-p", "tcp"]
    if dport is not None:
        parts += ["-m", "tcp"] + (["!"] if not_dport else []) + ["--dport", str(dport)]
    if owner is not None:
        kind, ident, negate = owner
        parts += ["-m", "owner"] + (["!"] if negate else []) + [f"--{kind}-owner", str(ident)]
    parts += ["-j", jump]
    if to_ports is not None:
        parts += ["--to-ports", str(to_ports)]
    return " ".join(parts)


def _host(net: Network) -> str:
    return str(net)


def rule_lines(cfg: CaptureConfig, family: Family = 4) -> list[str]:
    """The ``-A`` lines for one address family, in the order they are applied."""
    loopback = "127.0.0.1/32" if family == 4 else "::1/128"
    # The proxy connects to the app from this address so its own inbound hop is not re-captured.
    inbound_passthrough = "127.0.0.6/32" if family == 4 else "::6/128"

    out = [
        _rule(INBOUND, "RETURN", tcp=True, dport=HBONE_PORT),
        _rule(REDIRECT, "REDIRECT", tcp=True, to_ports=cfg.outbound_port),
        _rule(IN_REDIRECT, "REDIRECT", tcp=True, to_ports=cfg.inbound_port),
    ]

    # Inbound. Excluded interfaces are RETURNs at the head of our own chains rather than rules in
    # PREROUTING/OUTPUT: same effect, and every rule we put in a built-in chain is then a jump to
    # one of our chains, so DEL can find exactly ours.
    # Traffic arriving from virtual interfaces (e.g. KubeVirt VMs) is the VM's outbound traffic; it
    # must be matched before the inbound jump, so these rules lead PREROUTING.
    out += [_rule("PREROUTING", REDIRECT, in_if=iface, tcp=True) for iface in cfg.reroute_interfaces]
    if cfg.captures_inbound:
        out.append(_rule("PREROUTING", INBOUND, tcp=True))
        out += [_rule(INBOUND, "RETURN", in_if=iface) for iface in cfg.exclude_interfaces]
        if cfg.include_inbound_ports is ALL:
            out += [_rule(INBOUND, "RETURN", tcp=True, dport=p) for p in cfg.exclude_inbound_ports]
            out.append(_rule(INBOUND, IN_REDIRECT, tcp=True))
        else:
            assert isinstance(cfg.include_inbound_ports, tuple)
            out += [
                _rule(INBOUND, IN_REDIRECT, tcp=True, dport=p)
                for p in cfg.include_inbound_ports
                if p not in cfg.exclude_inbound_ports
            ]

    # Outbound.
    out.append(_rule("OUTPUT", OUTPUT))
    out += [_rule(OUTPUT, "RETURN", out_if=iface) for iface in cfg.exclude_interfaces]
    out += [_rule(OUTPUT, "RETURN", tcp=True, dport=p) for p in cfg.exclude_outbound_ports]
    out.append(_rule(OUTPUT, "RETURN", src=inbound_passthrough, out_if="lo"))
    for kind, ident in (("uid", cfg.proxy_uid), ("gid", cfg.proxy_gid)):
        if cfg.captures_inbound:
            # The app calling its own pod IP through the proxy: send it to inbound, not back out.
            out.append(
                _rule(
                    OUTPUT,
                    IN_REDIRECT,
                    dst=loopback,
                    not_dst=True,
                    out_if="lo",
                    tcp=True,
                    dport=HBONE_PORT,
                    not_dport=True,
                    owner=(kind, ident, False),
                )
            )
        out.append(_rule(OUTPUT, "RETURN", out_if="lo", owner=(kind, ident, True)))
        out.append(_rule(OUTPUT, "RETURN", owner=(kind, ident, False)))
    out.append(_rule(OUTPUT, "RETURN", dst=loopback))

    in_family = [n for n in cfg.exclude_outbound_ranges if n.version == family]
    out += [_rule(OUTPUT, "RETURN", dst=_host(n)) for n in in_family]
    out += [_rule(OUTPUT, REDIRECT, tcp=True, dport=p) for p in cfg.include_outbound_ports]
    if cfg.include_outbound_ranges is ALL:
        out.append(_rule(OUTPUT, REDIRECT))
    else:
        assert isinstance(cfg.include_outbound_ranges, tuple)
        included = [n for n in cfg.include_outbound_ranges if n.version == family]
        out += [_rule(OUTPUT, REDIRECT, dst=_host(n)) for n in included]
    return out


def restore_payload(lines: list[str], *, delete: list[str] | None = None) -> str:
    """A nat-table transaction for ``iptables-restore --noflush``.

    Declaring a chain under --noflush creates it or flushes it, so re-applying replaces our chains
    whole; ``delete`` holds the jump rules already present in built-in chains, removed in the same
    transaction so that the result never carries duplicates.
    """
    body = ["*nat", *(f":{chain} - [0:0]" for chain in CHAINS)]
    body += ["-D" + line[2:] for line in delete or ()]
    body += lines
    body.append("COMMIT")
    return "\n".join(body) + "\n"


def build(cfg: CaptureConfig, family: Family = 4) -> str:
    """The iptables-restore text that installs capture in a fresh netns (what the goldens show)."""
    return restore_payload(rule_lines(cfg, family))


def removal_payload(present_builtin_jumps: list[str]) -> str:
    """Remove our jumps from built-in chains, then flush and delete our chains, in one transaction."""
    body = ["*nat", *(f":{chain} - [0:0]" for chain in CHAINS)]
    body += ["-D" + line[2:] for line in present_builtin_jumps]
    body += [f"-X {chain}" for chain in CHAINS]
    body.append("COMMIT")
    return "\n".join(body) + "\n"


def is_ours(line: str) -> bool:
    """Whether an iptables-save ``-A`` line belongs to our capture (our chain, or a jump into one)."""
    parts = line.split()
    if len(parts) < 2 or parts[0] != "-A":
        return False
    if parts[1] in CHAINS:
        return True
    return "-j" in parts and parts[parts.index("-j") + 1] in CHAINS
