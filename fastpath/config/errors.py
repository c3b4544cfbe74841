"""The error config compilation raises, worded for a NACK's ``error_detail``.

The proxy NACKs a resource it cannot apply and keeps its last good config, so the message must let an
operator find the offending field without a debugger: resource type, resource name, the field path in
proto field names, and the reason, e.g.
``RouteConfiguration "9080": virtual_hosts[0].routes[2].match.safe_regex: invalid regex ...``.
"""

from __future__ import annotations

from collections.abc import Collection

from google.protobuf.message import Message


class ConfigError(ValueError):
    """Config the proxy cannot honour; ``str()`` is the NACK text."""

    def __init__(self, resource_type: str, resource_name: str, field: str, reason: str) -> None:
        where = f"{field}: " if field else ""
        super().__init__(f'{resource_type} "{resource_name}": {where}{reason}')
        self.resource_type = resource_type
        self.resource_name = resource_name
        self.field = field
        self.reason = reason


class Resource:
    """Names one resource being compiled, so that helpers can raise errors pointing into it."""

    __slots__ = ("name", "type")

    def __init__(self, resource_type: str, name: str) -> None:
        self.type = resource_type
        self.name = name

    def error(self, field: str, reason: str) -> ConfigError:
        return ConfigError(self.type, self.name, field, reason)

    def reject_unsupported(self, msg: Message, field: str, supported: Collection[str]) -> None:
        """Raise for the first field set in ``msg`` outside ``supported``.

        An allow-list rather than a deny-list: a field added to Envoy's API later, or one the controller
        starts emitting, is refused loudly instead of being silently ignored (DESIGN.md: never ignore config).
        """
        for desc, _value in msg.ListFields():
            if desc.name not in supported:
                raise self.error(join(field, desc.name), "not supported by mizzen-proxy")


def join(field: str, name: str) -> str:
    """``join("routes[2]", "match")`` -> ``"routes[2].match"``; the top level has no leading dot."""
    return f"{field}.{name}" if field else name
