"""Envoy v3 type URLs, and the serialized, versioned form in which generated resources are cached and sent."""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from controller.model.values import Duration

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

# Make before break: clusters before the endpoints that fill them, listeners before the routes they name.
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
SHORT_NAMES = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS"}
# Types whose wildcard subscription means "everything for this proxy"; the others are asked for by name.
WILDCARD_TYPES = frozenset({LISTENER, CLUSTER})


class Resource(NamedTuple):
    """One generated resource. ``version`` is a digest of the deterministic encoding, so equal content has
    equal versions across pushes and controller restarts (which is what lets a reconnecting proxy resume)."""

    name: str
    version: str
    type_url: str
    body: bytes


def make_resource(type_url: str, name: str, message: Any) -> Resource:
    body = message.SerializeToString(deterministic=True)
    return Resource(name, hashlib.blake2b(body, digest_size=8).hexdigest(), type_url, body)


def pack(message: Any, type_url: str) -> any_pb2.Any:
    """An Any holding ``message`` (type_url given, since upb messages know their full name)."""
    return any_pb2.Any(type_url=type_url, value=message.SerializeToString(deterministic=True))


def type_url_of(message: Any) -> str:
    return "type.googleapis.com/" + message.DESCRIPTOR.full_name


def any_of(message: Any) -> any_pb2.Any:
    return pack(message, type_url_of(message))


def proto_duration(value: Duration | float) -> duration_pb2.Duration:
    if isinstance(value, Duration):
        seconds, nanos = value.proto_parts()
    else:
        whole, frac = divmod(value, 1)
        seconds, nanos = int(whole), round(frac * 1e9)
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


def u32(value: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=value)
