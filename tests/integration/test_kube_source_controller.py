"""mizzen-controller as a process on the kube source (``--kubeconfig``), against the API test server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from support.kubeapi import CORE, istio_crds, running


async def read_until(
    stream: asyncio.StreamReader, event: str, seen: list[dict[str, object]]
) -> dict[str, object]:
    """Reads JSON log lines until one whose ``event`` is ``event``."""
    other: list[str] = []
    while True:
        line = await stream.readline()
        if not line:
            raise AssertionError(f"controller exited before logging {event!r}; it logged: {seen} {other}")
        try:
            record = json.loads(line)
        except ValueError:
            other.append(line.decode(errors="replace"))  # stdlib logging, or a traceback
            continue
        seen.append(record)
        if record.get("event") == event:
            return record


async def test_controller_syncs_from_the_kubernetes_api(tmp_path: Path) -> None:
    async with running(CORE + istio_crds()) as api:
        # The controller's own namespace, where it keeps its CA (as an install creates it).
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}})
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "reviews", "namespace": "shop"},
                "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 9080}]},
            }
        )
        api.create(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": "reviews", "namespace": "shop"},
                "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
            }
        )
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        env = {**os.environ, "MIZZEN_LOG_FORMAT": "json", "MIZZEN_LOG_LEVEL": "info"}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controller.main",
            "--kubeconfig", str(kubeconfig),
            "--host", "127.0.0.1", "--xds-port", "0", "--debug-port", "0",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )  # fmt: skip
        assert process.stderr is not None
        seen: list[dict[str, object]] = []
        try:
            synced = await asyncio.wait_for(read_until(process.stderr, "mesh synced", seen), 60)
            assert synced["objects"] == 4  # two namespaces, the Service, the VirtualService
            kube_synced = next(
                r for r in seen if r.get("event") == "synced" and r.get("component") == "kube-source"
            )
            assert kube_synced["kinds"]["VirtualService"] == "1"  # type: ignore[index]
            watched = {r.path for r in api.requests_for("list")}
            assert "/apis/networking.istio.io/v1/virtualservices" in watched
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 30)
        assert code == 0
