"""The bootstrap an injected sidecar builds for itself (``fastpath.bootstrap_gen``), for a pod a test made
by hand: the env vars and the downward-API labels file the injector would have given the container."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastpath import bootstrap_gen


def injected_bootstrap(
    work: Path,
    pod: str,
    ip: str,
    labels: Mapping[str, str],
    xds_address: str,
    *,
    namespace: str = "default",
    account: str = "default",
    workload: str | None = None,
    proxy_type: str = "sidecar",
) -> dict[str, Any]:
    labels_file = work / f"{pod}.labels"
    # The downward API writes key="value" lines, values quoted as Go's %q (JSON's quoting for these).
    labels_file.write_text("".join(f"{key}={json.dumps(value)}\n" for key, value in labels.items()))
    env = {"POD_NAME": pod, "POD_NAMESPACE": namespace, "INSTANCE_IP": ip, "SERVICE_ACCOUNT": account}
    if workload is not None:
        env["ISTIO_META_WORKLOAD_NAME"] = workload
    return bootstrap_gen.generate(xds_address, env, labels_file, proxy_type=proxy_type)
