"""Everything the controller emits for sidecars compiles in our sidecar's config layer (fastpath.config).

The goldens' meshes, translated per proxy, go through the same compiler the sidecar runs on each xDS
update; a resource it would NACK fails here, naming the resource and field.
"""

from __future__ import annotations

import pytest
from unit.test_translate import CASES, load_mesh

from controller.xds.dump import decode
from controller.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from fastpath.config import build

SIDECAR_CASES = sorted(case for case in CASES if case != "proxyless")


@pytest.mark.parametrize("case", SIDECAR_CASES)
def test_sidecar_compiles_what_the_controller_sends(case: str) -> None:
    translator = load_mesh(case)
    for node in CASES[case]:
        resources = translator.proxy_resources(node)
        config = build(
            [decode(r) for r in resources[LISTENER].values()],
            [decode(r) for r in resources[CLUSTER].values()],
            [decode(r) for r in resources[ENDPOINT].values()],
            [decode(r) for r in resources[ROUTE].values()],
            static=False,
        )
        assert set(config.listeners) == set(resources[LISTENER])
        assert set(config.clusters) == set(resources[CLUSTER])
        assert set(config.routes) == set(resources[ROUTE])
