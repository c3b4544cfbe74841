"""Compiling Envoy resources into the sidecar's tables, and refusing what it cannot honour."""

from __future__ import annotations

from typing import Any

import pytest
from support.envoy import (
    TCP_PROXY,
    addr,
    bootstrap,
    http_chain,
    original_dst_cluster,
    route,
    route_config,
    static_cluster,
    tcp_chain,
    vhost,
)

from fastpath import bootstrap as boot
from fastpath.config import ConfigError

_CONNECT_QUERY = {"connect_matcher": {}, "query_parameters": [{"name": "a", "present_match": True}]}
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def outbound_bootstrap() -> dict[str, Any]:
    return bootstrap(
        [
            {
                "name": "virtualOutbound",
                "address": addr("0.0.0.0", 15001),
                "use_original_dst": True,
                "traffic_direction": "OUTBOUND",
                "default_filter_chain": tcp_chain("PassthroughCluster"),
            },
            {
                "name": "0.0.0.0_3306",
                "address": addr("0.0.0.0", 3306),
                "bind_to_port": False,
                "filter_chains": [tcp_chain("outbound|3306||db.default.svc.cluster.local")],
            },
            {
                "name": "10.96.0.9_3306",
                "address": addr("10.96.0.9", 3306),
                "bind_to_port": False,
                "filter_chains": [tcp_chain("outbound|3306||db2.default.svc.cluster.local")],
            },
        ],
        [
            original_dst_cluster("PassthroughCluster"),
            static_cluster(
                "outbound|3306||db.default.svc.cluster.local", ("10.1.0.5", 3306), ("10.1.0.6", 3306)
            ),
            static_cluster("outbound|3306||db2.default.svc.cluster.local", ("10.1.0.7", 3306)),
        ],
    )


def test_outbound_handoff_by_original_destination() -> None:
    cfg = boot.parse(outbound_bootstrap()).static
    virtual = cfg.listeners["virtualOutbound"]
    assert virtual.use_original_dst and virtual.bind_to_port and virtual.direction == "OUTBOUND"
    assert cfg.handoff("10.96.0.9", 3306).name == "10.96.0.9_3306"  # type: ignore[union-attr]
    assert cfg.handoff("10.96.0.77", 3306).name == "0.0.0.0_3306"  # type: ignore[union-attr]
    assert cfg.handoff("10.96.0.9", 80) is None
    assert virtual.select_chain("1.2.3.4", 443).tcp_proxy.clusters == (("PassthroughCluster", 1),)  # type: ignore[union-attr]
    db = cfg.clusters["outbound|3306||db.default.svc.cluster.local"]
    assert [(e.host, e.port) for e in cfg.endpoints_of(db)] == [("10.1.0.5", 3306), ("10.1.0.6", 3306)]
    assert db.connect_timeout == 1.0 and cfg.clusters["PassthroughCluster"].original_dst


def test_inbound_chains_match_by_destination_port_and_prefix() -> None:
    cfg = boot.parse(
        bootstrap(
            [
                {
                    "name": "virtualInbound",
                    "address": addr("0.0.0.0", 15006),
                    "use_original_dst": True,
                    "traffic_direction": "INBOUND",
                    "filter_chains": [
                        tcp_chain("inbound|8080||", port=8080),
                        {
                            **tcp_chain("inbound-narrow", port=8080),
                            "filter_chain_match": {
                                "destination_port": 8080,
                                "prefix_ranges": [{"address_prefix": "10.2.0.0", "prefix_len": 16}],
                            },
                        },
                    ],
                    "default_filter_chain": tcp_chain("InboundPassthroughCluster"),
                }
            ],
            [
                original_dst_cluster("inbound|8080||", "127.0.0.6"),
                original_dst_cluster("inbound-narrow"),
                original_dst_cluster("InboundPassthroughCluster", "127.0.0.6"),
            ],
        )
    ).static
    lst = cfg.listeners["virtualInbound"]
    assert lst.select_chain("10.1.0.5", 8080).name == "inbound|8080||"  # type: ignore[union-attr]
    assert lst.select_chain("10.2.3.4", 8080).name == "inbound-narrow"  # type: ignore[union-attr]
    assert lst.select_chain("10.1.0.5", 9090).name == "InboundPassthroughCluster"  # type: ignore[union-attr]
    assert cfg.clusters["inbound|8080||"].source_address == "127.0.0.6"


def test_weighted_tcp_clusters_split_by_weight() -> None:
    chain = tcp_chain("a")
    proxy = chain["filters"][0]["typed_config"]
    del proxy["cluster"]
    proxy["weighted_clusters"] = {"clusters": [{"name": "a", "weight": 80}, {"name": "b", "weight": 20}]}
    cfg = boot.parse(
        bootstrap(
            [{"name": "l", "address": addr("127.0.0.1", 1), "filter_chains": [chain]}],
            [static_cluster("a", ("1.1.1.1", 1)), static_cluster("b", ("1.1.1.2", 1))],
        )
    ).static
    tcp = cfg.listeners["l"].filter_chains[0].tcp_proxy
    assert [tcp.pick(r / 100) for r in (0, 79, 80, 99)] == ["a", "a", "b", "b"]


def test_unhealthy_endpoints_are_not_used() -> None:
    cluster = static_cluster("c", ("10.0.0.1", 80), ("10.0.0.2", 80))
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][1]["health_status"] = "DRAINING"
    cfg = boot.parse(bootstrap([], [cluster])).static
    assert [e.host for e in cfg.endpoints_of(cfg.clusters["c"])] == ["10.0.0.1"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda b: b["static_resources"]["listeners"][1]["filter_chains"][0]["filters"][0].update(
                typed_config={"@type": HCM, "stat_prefix": "x"}
            ),
            'Listener "0.0.0.0_3306": filter_chains[0].filters[0]: rds or route_config is required',
        ),
        (
            lambda b: b["static_resources"]["listeners"][1]["filter_chains"][0].update(
                filter_chain_match={"server_names": ["a.com"]}
            ),
            'Listener "0.0.0.0_3306": filter_chains[0].filter_chain_match: matching on TLS needs',
        ),
        (
            lambda b: b["static_resources"]["clusters"][1].update(lb_policy="CLUSTER_PROVIDED"),
            'Cluster "outbound|3306||db.default.svc.cluster.local": lb_policy: CLUSTER_PROVIDED is not',
        ),
        (
            lambda b: b["static_resources"]["clusters"][1].update(type="LOGICAL_DNS"),
            'Cluster "outbound|3306||db.default.svc.cluster.local": load_assignment: a LOGICAL_DNS cluster',
        ),
        (
            lambda b: b["static_resources"]["clusters"].pop(2),
            'Listener "10.96.0.9_3306": filter chain',
        ),
        (
            lambda b: b["static_resources"]["listeners"][0]["default_filter_chain"]["filters"][0][
                "typed_config"
            ].pop("cluster"),
            'Listener "virtualOutbound": default_filter_chain.filters[0].cluster: required',
        ),
        (
            lambda b: b["static_resources"]["listeners"][1]["filter_chains"].__setitem__(
                0, http_chain(route_config("r", vhost("v", ["*"], route("c", match=_CONNECT_QUERY))))
            ),
            'Listener "0.0.0.0_3306": filter_chains[0].filters[0].route_config: RouteConfiguration "r": '
            "virtual_hosts[0].routes[0].match.query_parameters: a CONNECT request has no query",
        ),
        (
            lambda b: b["static_resources"]["listeners"][1]["filter_chains"].__setitem__(
                0,
                http_chain(
                    route_config("r", vhost("v", ["*"], route("c"))),
                    upgrade_configs=[{"upgrade_type": "h2c"}],
                ),
            ),
            'Listener "0.0.0.0_3306": filter_chains[0].filters[0].upgrade_configs[0].upgrade_type: '
            "'h2c': websocket or CONNECT",
        ),
    ],
    ids=[
        "http",
        "sni-match",
        "lb-policy",
        "dns-cluster",
        "unknown-cluster",
        "no-cluster",
        "connect-query",
        "h2c",
    ],
)
def test_unsupported_config_is_named(mutate: Any, message: str) -> None:
    data = outbound_bootstrap()
    mutate(data)
    with pytest.raises(ConfigError) as err:
        boot.parse(data)
    assert str(err.value).startswith(message), str(err.value)


def test_bootstrap_errors_name_the_file(tmp_path: Any) -> None:
    bad = tmp_path / "b.yaml"
    bad.write_text("static_resources: {listeners: [{name: x, addres: {}}]}")
    with pytest.raises(boot.BootstrapError) as err:
        boot.load(bad)
    assert str(bad) in str(err.value) and "addres" in str(err.value)
    with pytest.raises(boot.BootstrapError, match="No such file"):
        boot.load(tmp_path / "missing.yaml")
    assert TCP_PROXY.endswith("TcpProxy")
