"""The injected sidecar's own bootstrap: Istio's node id and metadata from the pod's env and labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastpath import bootstrap, bootstrap_gen

ENV = {
    "POD_NAME": "web-7d9f-x2",
    "POD_NAMESPACE": "shop",
    "INSTANCE_IP": "10.244.1.7",
    "SERVICE_ACCOUNT": "web",
    "NODE_NAME": "kind-worker",
    "ISTIO_META_WORKLOAD_NAME": "web",
    "ISTIO_META_CLUSTER_ID": "east",
    "PATH": "/usr/bin",
}


def test_downward_api_labels_file_with_go_quoting() -> None:
    text = 'app="web"\nnote="say \\"hi\\"\\n"\nunicode="caf\\u00e9"\n\n'
    assert bootstrap_gen.parse_downward_file(text) == {"app": "web", "note": 'say "hi"\n', "unicode": "café"}
    with pytest.raises(bootstrap_gen.BootstrapGenError, match="line 1"):
        bootstrap_gen.parse_downward_file("app=web")


def test_node_identity_and_a_dns_named_controller(tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.write_text('app="web"\nversion="v2"\n')
    data = bootstrap_gen.generate("mizzen-controller.mizzen-system.svc:15010", ENV, labels)
    node = data["node"]
    assert node["id"] == "sidecar~10.244.1.7~web-7d9f-x2.shop~shop.svc.cluster.local"
    assert node["cluster"] == "web.shop"
    assert node["metadata"] == {
        "NAMESPACE": "shop",
        "NAME": "web-7d9f-x2",
        "LABELS": {"app": "web", "version": "v2"},
        "INSTANCE_IPS": "10.244.1.7",
        "SERVICE_ACCOUNT": "web",
        "WORKLOAD_NAME": "web",
        "CLUSTER_ID": "east",
        "NODE_NAME": "kind-worker",
    }
    parsed = bootstrap.parse(data)  # the proxy's own reader accepts it
    assert (parsed.ads.host, parsed.ads.port) == ("mizzen-controller.mizzen-system.svc", 15010)  # type: ignore[union-attr]
    assert data["static_resources"]["clusters"][0]["type"] == "STRICT_DNS"
    ip = bootstrap_gen.generate("10.96.0.10:15010", ENV, None)
    assert ip["static_resources"]["clusters"][0]["type"] == "STATIC"


def test_a_gateway_is_a_router_node() -> None:
    data = bootstrap_gen.generate("10.96.0.10:15010", ENV, None, proxy_type="router")
    assert data["node"]["id"] == "router~10.244.1.7~web-7d9f-x2.shop~shop.svc.cluster.local"
    with pytest.raises(bootstrap_gen.BootstrapGenError, match="--proxy-type"):
        bootstrap_gen.generate("10.96.0.10:15010", ENV, None, proxy_type="waypoint")


@pytest.mark.parametrize("address", ["controller", "controller:", ":15010", "controller:99999"])
def test_bad_address_is_named(address: str) -> None:
    with pytest.raises(bootstrap_gen.BootstrapGenError, match="--xds-address"):
        bootstrap_gen.generate(address, ENV, None)
