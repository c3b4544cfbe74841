"""HTTP filters: the policies a request passes through before the router sends it upstream.

Envoy's shape: each filter answers ``CONTINUE`` or ``STOP`` when the request head arrives and when the
response head is about to go downstream. ``STOP`` means the filter has taken the exchange over: it has
answered locally (``exchange.local_reply``) or will call ``exchange.resume()`` later (a delay). Filters
are built once per config from their typed config and shared by every request; what a filter needs to
remember about one request lives on the exchange (``exchange.filter_state``).

A filter is added by writing its module and registering its factory under its config's type URL; the
connection loop does not change. The router is the terminal filter and is built into the exchange.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2

from fastpath.config.errors import Resource

if TYPE_CHECKING:
    from fastpath.exchange import Exchange

CONTINUE = 0
STOP = 1

ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


class HttpFilter:
    """A policy on the request path. Override what the policy needs; the defaults let everything by."""

    name = "filter"

    def on_request(self, exchange: Exchange) -> int:
        return CONTINUE

    def on_response(self, exchange: Exchange) -> int:
        return CONTINUE

    def on_complete(self, exchange: Exchange) -> None:
        return None


# A factory turns the filter's typed config into a filter; it raises ConfigError (via ``res``) for
# config it cannot honour. ``path`` is where the config sits in the resource, for those errors.
FilterFactory = Callable[[Resource, str, any_pb2.Any], HttpFilter]

REGISTRY: dict[str, FilterFactory] = {}


def register(type_url: str) -> Callable[[FilterFactory], FilterFactory]:
    def add(factory: FilterFactory) -> FilterFactory:
        REGISTRY[type_url] = factory
        return factory

    return add


def build(res: Resource, path: str, type_url: str, config: Any) -> HttpFilter:
    factory = REGISTRY.get(type_url)
    if factory is None:
        raise res.error(path, f"unknown HTTP filter {type_url.rsplit('/', 1)[-1]!r}")
    return factory(res, path, config)
