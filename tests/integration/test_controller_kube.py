"""The controller on the kube source, against the Kubernetes API test server: the same pushes as with
files, driven by API writes (what ``mizzen-controller --kubeconfig`` runs)."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml
from support.kubeapi import CORE, istio_crds, running

from controller.app import Controller
from controller.sources.kube import KubeSource
from controller.xds.client import DeltaClient, SotwClient, make_node
from controller.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "xds"
PROXY_ID = "sidecar~10.244.0.11~reviews-v1-a.default~default.svc.cluster.local"

API_VERSIONS = {
    "Namespace": "v1",
    "Pod": "v1",
    "Service": "v1",
    "EndpointSlice": "discovery.k8s.io/v1",
    "VirtualService": "networking.istio.io/v1",
    "DestinationRule": "networking.istio.io/v1",
}


def mesh_objects() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((GOLDEN / "subsets_weighted.yaml").read_text()) if d]
    for doc in docs:
        doc["apiVersion"] = API_VERSIONS[doc["kind"]]
    return docs


async def test_controller_on_the_kube_source_pushes_api_changes(tmp_path: Path) -> None:
    async with running(CORE + istio_crds()) as api:
        docs = mesh_objects()
        for doc in docs:
            api.create(copy.deepcopy(doc))
        source = await KubeSource.connect(str(api.write_kubeconfig(tmp_path / "kubeconfig")))
        controller = Controller(source, host="127.0.0.1", xds_port=0, debug_port=None, debounce_after=0.05)
        await controller.start()
        client = DeltaClient(
            f"127.0.0.1:{controller.xds_port}", make_node(PROXY_ID, {"NAMESPACE": "default"})
        )
        await client.start()
        try:
            for type_url, names in ((CLUSTER, ()), (LISTENER, ())):
                client.subscribe(type_url, names)
                client.ack(await client.recv())
            eds = [n for n in client.held[CLUSTER] if n.startswith("outbound|")]
            client.subscribe(ENDPOINT, eds)
            client.ack(await client.recv())
            client.subscribe(ROUTE, ["9080"])
            client.ack(await client.recv())
            assert "outbound|9080|v2|reviews.default.svc.cluster.local" in client.held[CLUSTER]

            vs = copy.deepcopy(next(d for d in docs if d["kind"] == "VirtualService"))
            vs["spec"]["http"][1]["route"][0]["weight"] = 40
            vs["spec"]["http"][1]["route"][1]["weight"] = 60
            pushes = controller.pushes_done
            api.apply(vs)
            response = await client.recv()
            assert response.type_url == ROUTE and [r.name for r in response.resources] == ["9080"]
            client.ack(response)
            while controller.pushes_done == pushes:
                await asyncio.sleep(0.02)
            assert client.pending() == 0
        finally:
            await client.close()
            await controller.stop(grace=0)


async def test_controller_process_on_a_kubeconfig(tmp_path: Path) -> None:
    """``mizzen-controller --kubeconfig``: the process syncs from the API server and serves what it read."""
    async with running(CORE + istio_crds()) as api:
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}})
        for doc in mesh_objects():
            api.create(doc)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controller.main", "--kubeconfig", str(kubeconfig), "--host", "127.0.0.1",
            "--xds-port", "0", "--debug-port", "0",
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "MIZZEN_LOG_FORMAT": "json"},
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            port = 0
            while not port:
                line = await asyncio.wait_for(proc.stderr.readline(), 30)
                assert line, "the controller exited before listening"
                if line.startswith(b"{") and json.loads(line).get("event") == "controller listening":
                    port = json.loads(line)["xds_port"]
            client = SotwClient(f"127.0.0.1:{port}", make_node(PROXY_ID, {"NAMESPACE": "default"}))
            await client.start()
            client.request(CLUSTER)
            response = await client.recv(timeout=30)  # sent once the source has synced
            client.ack(response)
            await client.close()
            assert len(response.resources) == 7  # 3 outbound (+ subsets), 1 inbound, 3 special clusters
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
