"""HTTP filters: the policies a request passes through before the router sends it upstream.

Envoy's shape: each filter answers ``CONTINUE`` or ``STOP`` when the request head arrives and when the
response head is about to go downstream. ``STOP`` means the filter has taken the exchange over: it has
answered locally (``exchange.local_reply``) or will call ``exchange.resume()`` later (a delay). Filters
are built once per config from their typed config and shared by every request; what a filter needs to
remember about one request lives on the exchange (``exchange.filter_state``).

A filter is added by writing its module and registering its factory under its config's type URL; the
connection loop does not change. The router is the terminal filter and is built into the exchange.

Per-route config (a route's ``typed_per_filter_config``, keyed by the filter's name in the HCM) is compiled
by the factory registered for its type URL with :func:`register_route_config`; the filter finds it at
``exchange.route.typed_per_filter_config[self.name]``. A *passive* filter acts only on routes that carry
such config: the connection runs it only for those routes, so an unconfigured policy costs nothing.
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

    name = "filter"  # the HCM's name for the filter (set by ``build``): the key of per-route config
    passive = False  # True: does nothing on routes without per-route config for it

    def on_request(self, exchange: Exchange) -> int:
        return CONTINUE

    def on_response(self, exchange: Exchange) -> int:
        return CONTINUE

    def on_complete(self, exchange: Exchange) -> None:
        return None


# A factory turns the filter's typed config into a filter; it raises ConfigError (via ``res``) for
# config it cannot honour. ``path`` is where the config sits in the resource, for those errors.
FilterFactory = Callable[[Resource, str, any_pb2.Any], HttpFilter]

# A route-config factory compiles one route's ``typed_per_filter_config`` entry into what its filter reads.
RouteConfigFactory = Callable[[Resource, str, any_pb2.Any], Any]

REGISTRY: dict[str, FilterFactory] = {}
ROUTE_CONFIGS: dict[str, RouteConfigFactory] = {}

# Istio's own filters (istio.stats, istio.alpn) travel as a TypedStruct: a type URL and a JSON-like value.
# Their factories are registered by that inner type URL and get the value as a dict.
TYPED_STRUCT = "type.googleapis.com/xds.type.v3.TypedStruct"
StructFactory = Callable[[Resource, str, dict[str, Any]], HttpFilter]
STRUCT_REGISTRY: dict[str, StructFactory] = {}


def register(type_url: str) -> Callable[[FilterFactory], FilterFactory]:
    def add(factory: FilterFactory) -> FilterFactory:
        REGISTRY[type_url] = factory
        return factory

    return add


def register_struct(type_url: str) -> Callable[[StructFactory], StructFactory]:
    """Register the factory of a filter whose config is a TypedStruct of ``type_url``."""

    def add(factory: StructFactory) -> StructFactory:
        STRUCT_REGISTRY[type_url] = factory
        return factory

    return add


def _build_struct(res: Resource, path: str, config: any_pb2.Any) -> HttpFilter:
    from google.protobuf import json_format
    from xds.type.v3 import typed_struct_pb2

    ts = typed_struct_pb2.TypedStruct()
    if not config.Unpack(ts):
        raise res.error(path, f"expected a TypedStruct, got {config.type_url}")
    factory = STRUCT_REGISTRY.get(ts.type_url)
    if factory is None:
        raise res.error(f"{path}.type_url", f"unknown HTTP filter config {ts.type_url!r}")
    return factory(res, f"{path}.value", json_format.MessageToDict(ts.value))


REGISTRY[TYPED_STRUCT] = _build_struct


def register_route_config(type_url: str) -> Callable[[RouteConfigFactory], RouteConfigFactory]:
    def add(factory: RouteConfigFactory) -> RouteConfigFactory:
        ROUTE_CONFIGS[type_url] = factory
        return factory

    return add


def build(res: Resource, path: str, type_url: str, config: Any, name: str = "") -> HttpFilter:
    _load_builtin()
    factory = REGISTRY.get(type_url)
    if factory is None:
        raise res.error(path, f"unknown HTTP filter {type_url.rsplit('/', 1)[-1]!r}")
    built = factory(res, path, config)
    if name:
        built.name = name
    return built


def build_route_config(res: Resource, path: str, config: any_pb2.Any) -> Any:
    """A route's per-filter config compiled by its filter's factory; refused when no filter reads it."""
    _load_builtin()
    factory = ROUTE_CONFIGS.get(config.type_url)
    if factory is None:
        name = config.type_url.rsplit("/", 1)[-1]
        raise res.error(path, f"{name!r}: no HTTP filter of mizzen-proxy reads it")
    return factory(res, path, config)


def known(type_url: str) -> bool:
    _load_builtin()
    return type_url in REGISTRY


_loaded = False


def _load_builtin() -> None:
    """Import the filters that ship with the proxy (each registers itself), once, on first use."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from fastpath.filters import alpn, cors, fault, istio_stats  # noqa: F401
