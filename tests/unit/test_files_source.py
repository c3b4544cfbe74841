"""The files source over a real temporary directory: reading, defaults, change detection, bad input."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from controller.sources.base import KINDS, Change, IndexedSource, Source
from controller.sources.files import FilesSource

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: reviews
  labels: {app: reviews}
spec:
  ports: [{name: http, port: 9080}]
"""

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"""


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[Change]] = []
        self.arrived = asyncio.Event()

    def __call__(self, batch: Sequence[Change]) -> None:
        self.batches.append(list(batch))
        self.arrived.set()

    def summary(self, index: int = -1) -> list[tuple[str, str, str]]:
        return [(c.kind, c.key, c.type) for c in self.batches[index]]


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[FilesSource]:
    src = FilesSource(tmp_path, poll_interval=3600)  # tests drive refresh() themselves
    yield src
    await src.stop()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


async def test_satisfies_the_source_contracts(source: FilesSource) -> None:
    assert isinstance(source, Source)
    assert isinstance(source, IndexedSource)


async def test_initial_read_defaults_namespace_and_synthesizes_metadata(
    tmp_path: Path, source: FilesSource
) -> None:
    write(tmp_path / "a.yaml", SERVICE + "---\n" + VS)
    write(tmp_path / "ns.yml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, namespace: x}\n")
    seen = Recorder()
    source.subscribe(seen)
    assert not source.has_synced()
    await source.start()
    await asyncio.wait_for(source.wait_synced(), 5)
    assert source.has_synced()
    assert seen.summary(0) == [
        ("Namespace", "shop", "ADDED"),
        ("Service", "default/reviews", "ADDED"),
        ("VirtualService", "shop/reviews", "ADDED"),
    ]
    svc = source.get("Service", "default/reviews")
    assert svc is not None
    assert svc["metadata"]["namespace"] == "default"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 9080}]
    meta = svc["metadata"]
    assert meta["resourceVersion"].isdigit() and meta["uid"] and meta["creationTimestamp"].endswith("Z")
    namespace = source.get("Namespace", "shop")
    assert namespace is not None and "namespace" not in namespace["metadata"]
    assert [o["metadata"]["name"] for o in source.list("VirtualService")] == ["reviews"]
    assert source.list("Gateway") == []
    assert source.problems() == []


async def test_resource_versions_increase_across_kinds_and_survive_no_op_rewrites(
    tmp_path: Path, source: FilesSource
) -> None:
    write(tmp_path / "a.yaml", SERVICE)
    write(tmp_path / "b.yaml", VS)
    await source.refresh()
    svc = source.get("Service", "default/reviews")
    vs = source.get("VirtualService", "shop/reviews")
    assert svc is not None and vs is not None
    assert int(svc["metadata"]["resourceVersion"]) != int(vs["metadata"]["resourceVersion"])
    # The same objects, written differently (flow style, other order, a comment): no change at all.
    write(
        tmp_path / "a.yaml",
        "# the same\nkind: Service\napiVersion: v1\n" + SERVICE.split("kind: Service\n")[1],
    )
    assert await source.refresh() == []
    assert source.get("Service", "default/reviews") is svc


async def test_change_detection_emits_only_net_changes(tmp_path: Path, source: FilesSource) -> None:
    seen = Recorder()
    source.subscribe(seen)
    write(tmp_path / "a.yaml", SERVICE + "---\n" + VS)
    await source.refresh()
    before = source.get("VirtualService", "shop/reviews")
    assert before is not None

    write(tmp_path / "a.yaml", SERVICE + "---\n" + VS.replace("subset: v1", "subset: v2"))
    changes = await source.refresh()
    assert [(c.kind, c.key, c.type) for c in changes] == [("VirtualService", "shop/reviews", "MODIFIED")]
    after = changes[0].obj
    assert after["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v2"
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"]["creationTimestamp"] == before["metadata"]["creationTimestamp"]

    # The object moves to another file: still the same object, no change.
    write(tmp_path / "a.yaml", SERVICE)
    write(tmp_path / "sub" / "vs.yaml", VS.replace("subset: v1", "subset: v2"))
    assert await source.refresh() == []

    (tmp_path / "a.yaml").unlink()
    changes = await source.refresh()
    assert [(c.kind, c.key, c.type) for c in changes] == [("Service", "default/reviews", "DELETED")]
    assert changes[0].obj["spec"]["ports"][0]["port"] == 9080  # the last state
    assert source.get("Service", "default/reviews") is None
    assert seen.batches[-1] == changes


async def test_same_size_rewrite_within_one_clock_tick_is_seen(tmp_path: Path, source: FilesSource) -> None:
    write(tmp_path / "a.yaml", SERVICE)
    await source.refresh()
    # Same size, and the mtime forced back to what it was: only the recent-mtime rule can catch this.
    st = os.stat(tmp_path / "a.yaml")
    write(tmp_path / "a.yaml", SERVICE.replace("9080", "9081"))
    os.utime(tmp_path / "a.yaml", ns=(st.st_atime_ns, st.st_mtime_ns))
    changes = await source.refresh()
    assert [(c.key, c.type) for c in changes] == [("default/reviews", "MODIFIED")]
    assert changes[0].obj["spec"]["ports"][0]["port"] == 9081


async def test_unchanged_old_files_are_not_read_again(tmp_path: Path, source: FilesSource) -> None:
    write(tmp_path / "a.yaml", SERVICE)
    old = 1_000_000_000 * 1_000_000_000  # 2001: well outside the recent-mtime window
    os.utime(tmp_path / "a.yaml", ns=(old, old))
    await source.refresh()
    os.chmod(tmp_path / "a.yaml", 0)  # reading it now would fail, and be logged as a problem
    try:
        if os.geteuid() == 0:
            # root reads anything: prove it by content instead, replacing the bytes but not the signature.
            (tmp_path / "a.yaml").write_text(SERVICE.replace("9080", "9081"))
            os.utime(tmp_path / "a.yaml", ns=(old, old))
        assert await source.refresh() == []
        svc = source.get("Service", "default/reviews")
        assert svc is not None and svc["spec"]["ports"][0]["port"] == 9080
    finally:
        os.chmod(tmp_path / "a.yaml", 0o644)


async def test_list_documents_json_and_ignored_kinds(tmp_path: Path, source: FilesSource) -> None:
    write(
        tmp_path / "list.yaml",
        """\
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: web}
- apiVersion: serving.knative.dev/v1
  kind: Service
  metadata: {name: knative-not-core}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: reviews-abc
    labels: {kubernetes.io/service-name: reviews}
  addressType: IPv4
  endpoints: [{addresses: [10.0.0.1]}]
""",
    )
    gateway = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "istio-system"},
        "spec": {"selector": {"istio": "ingressgateway"}},
    }
    write(tmp_path / "gw.json", orjson.dumps(gateway).decode())
    await source.refresh()
    assert source.problems() == []
    assert [o["metadata"]["name"] for o in source.list("Service")] == []
    assert source.get("Gateway", "istio-system/gw") is not None
    slices = source.by_index("EndpointSlice", "service-name", "default/reviews")
    assert [s["metadata"]["name"] for s in slices] == ["reviews-abc"]


async def test_bad_objects_are_reported_and_the_rest_kept(tmp_path: Path, source: FilesSource) -> None:
    write(
        tmp_path / "mixed.yaml",
        SERVICE
        + "---\n"
        + "apiVersion: v1\nkind: Service\nmetadata: {namespace: shop}\n"  # no name
        + "---\n"
        + "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        + "metadata: {name: r, labels: {version: 1.0}}\n"  # a number where a string belongs
        + "---\n"
        + "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: old}\n"
        + "---\n"
        + "- just\n- a list\n"
        + "---\n"
        + VS,
    )
    await source.refresh()
    assert source.get("Service", "default/reviews") is not None
    assert source.get("VirtualService", "shop/reviews") is not None
    problems = [(p.document, p.message) for p in source.problems()]
    assert [d for d, _ in problems] == [2, 3, 4, 5]
    assert "metadata.name: required" in problems[0][1]
    assert "DestinationRule default/r: metadata.labels.version: must be a string" in problems[1][1]
    assert (
        "discovery.k8s.io/v1beta1 is not supported for EndpointSlice; use discovery.k8s.io/v1"
        in problems[2][1]
    )
    assert "expected an object (a mapping), got a list" in problems[3][1]
    assert all(p.origin == str(tmp_path / "mixed.yaml") for p in source.problems())
    assert str(source.problems()[0]).startswith(f"{tmp_path / 'mixed.yaml'}: document 2: Service")


async def test_syntax_error_keeps_the_files_last_good_objects(tmp_path: Path, source: FilesSource) -> None:
    write(tmp_path / "a.yaml", SERVICE + "---\n" + VS)
    write(tmp_path / "other.yaml", VS.replace("name: reviews", "name: ratings"))
    await source.refresh()
    # Mid-edit: the second document is broken, and the first changed too; neither is applied yet.
    write(tmp_path / "a.yaml", SERVICE.replace("9080", "1") + "---\n" + VS + "  broken: [unclosed\n")
    assert await source.refresh() == []
    assert source.get("VirtualService", "shop/reviews") is not None
    svc = source.get("Service", "default/reviews")
    assert svc is not None and svc["spec"]["ports"][0]["port"] == 9080
    [problem] = source.problems()
    assert problem.document == 2 and "YAML syntax error at line" in problem.message
    # Fixed: the edit lands as one net change, and the problem is gone.
    write(tmp_path / "a.yaml", SERVICE.replace("9080", "1") + "---\n" + VS)
    changes = await source.refresh()
    assert [(c.kind, c.type) for c in changes] == [("Service", "MODIFIED")]
    assert source.problems() == []


async def test_new_file_with_syntax_error_contributes_nothing(tmp_path: Path, source: FilesSource) -> None:
    write(tmp_path / "bad.json", '{"apiVersion": "v1", "kind": "Service",')
    await source.refresh()
    assert source.list("Service") == []
    [problem] = source.problems()
    assert problem.document == 1 and problem.message.startswith("JSON syntax error")


async def test_duplicates_first_in_path_order_wins(tmp_path: Path, source: FilesSource) -> None:
    write(tmp_path / "a.yaml", SERVICE)
    write(tmp_path / "b.yaml", SERVICE.replace("9080", "9999"))
    await source.refresh()
    svc = source.get("Service", "default/reviews")
    assert svc is not None and svc["spec"]["ports"][0]["port"] == 9080
    [problem] = source.problems()
    assert problem.origin.endswith("b.yaml") and "also defined in" in problem.message
    (tmp_path / "a.yaml").unlink()
    changes = await source.refresh()
    assert [(c.type, c.obj["spec"]["ports"][0]["port"]) for c in changes] == [("MODIFIED", 9999)]
    assert source.problems() == []


async def test_hidden_paths_and_other_suffixes_are_skipped(tmp_path: Path, source: FilesSource) -> None:
    write(tmp_path / "..2024_01_01" / "a.yaml", SERVICE)  # a ConfigMap volume's timestamped copy
    write(tmp_path / ".a.yaml.swp", SERVICE)
    write(tmp_path / "notes.txt", SERVICE)
    await source.refresh()
    assert source.list("Service") == []


async def test_symlinked_configmap_layout_and_loops(tmp_path: Path, source: FilesSource) -> None:
    data = tmp_path / "..2024_01_01"
    write(data / "svc.yaml", SERVICE)
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "svc.yaml").symlink_to("..data/svc.yaml")
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "back").symlink_to("..")
    await source.refresh()
    assert [o["metadata"]["name"] for o in source.list("Service")] == ["reviews"]
    assert source.problems() == []


async def test_missing_directory_keeps_last_state(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write(root / "a.yaml", SERVICE)
    src = FilesSource(root, poll_interval=3600)
    await src.refresh()
    (root / "a.yaml").unlink()
    root.rmdir()
    assert await src.refresh() == []
    assert src.get("Service", "default/reviews") is not None
    write(root / "b.yaml", VS)
    changes = await src.refresh()
    assert sorted((c.kind, c.type) for c in changes) == [("Service", "DELETED"), ("VirtualService", "ADDED")]


def test_constructor_rejects_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        FilesSource(tmp_path / "nope")


async def test_unknown_kind_is_a_clear_error(source: FilesSource) -> None:
    with pytest.raises(ValueError, match="unknown kind 'Deployment'"):
        source.list("Deployment")
    assert set(KINDS) >= {"Pod", "EndpointSlice"}


async def test_apply_and_delete_in_process(tmp_path: Path, source: FilesSource) -> None:
    write(tmp_path / "a.yaml", SERVICE)
    await source.refresh()
    seen = Recorder()
    source.subscribe(seen)
    dr: dict[str, Any] = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews"},
        "spec": {"host": "reviews"},
    }
    changes = await source.apply([dr])
    assert [(c.kind, c.key, c.type) for c in changes] == [("DestinationRule", "default/reviews", "ADDED")]
    assert "namespace" not in dr["metadata"]  # the caller's dict is left alone
    # Applied objects win over files; deleting them shows the file's version again.
    override = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews"}, "spec": {"ports": []}}
    await source.apply([override])
    svc = source.get("Service", "default/reviews")
    assert svc is not None and svc["spec"]["ports"] == []
    assert await source.delete("Service", "default/reviews")
    svc = source.get("Service", "default/reviews")
    assert svc is not None and svc["spec"]["ports"][0]["port"] == 9080
    assert seen.summary() == [("Service", "default/reviews", "MODIFIED")]
    with pytest.raises(ValueError, match=r"defined in .*a\.yaml; remove it from that file"):
        await source.delete("Service", "default/reviews")
    assert not await source.delete("Gateway", "default/none")
    assert await source.delete("DestinationRule", "default/reviews")
    assert source.get("DestinationRule", "default/reviews") is None


async def test_apply_is_all_or_nothing(source: FilesSource) -> None:
    good = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
    with pytest.raises(ValueError) as info:
        await source.apply(
            [good, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}, {}]
        )
    message = str(info.value)
    assert "object 1: apps/v1 Deployment is not a kind the mesh reads" in message
    assert "object 2: kind: required" in message
    assert source.get("Namespace", "shop") is None


async def test_poll_loop_picks_up_changes(tmp_path: Path) -> None:
    src = FilesSource(tmp_path, poll_interval=0.02)
    seen = Recorder()
    src.subscribe(seen)
    await src.start()
    try:
        await asyncio.wait_for(src.wait_synced(), 5)
        assert seen.batches == []  # an empty directory: nothing to say
        write(tmp_path / "a.yaml", SERVICE)
        await asyncio.wait_for(seen.arrived.wait(), 10)
        assert seen.summary() == [("Service", "default/reviews", "ADDED")]
    finally:
        await src.stop()


async def test_a_failing_handler_does_not_stop_the_others(tmp_path: Path, source: FilesSource) -> None:
    def broken(batch: Sequence[Change]) -> None:
        raise RuntimeError("handler bug")

    seen = Recorder()
    source.subscribe(broken)
    source.subscribe(seen)
    write(tmp_path / "a.yaml", SERVICE)
    await source.refresh()
    assert seen.summary() == [("Service", "default/reviews", "ADDED")]


async def test_labels_select_and_yaml_scalars_stay_json(tmp_path: Path, source: FilesSource) -> None:
    write(
        tmp_path / "pods.yaml",
        """\
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1
  namespace: shop
  labels: {app: reviews, version: v1}
  creationTimestamp: 2024-01-02T03:04:05Z
  annotations: {when: "on"}
spec:
  nodeSelector: {2024: yes}
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v2
  namespace: shop
  labels: {app: reviews, version: v2}
""",
    )
    await source.refresh()
    pod = source.get("Pod", "shop/reviews-v1")
    assert pod is not None
    assert pod["metadata"]["creationTimestamp"] == "2024-01-02T03:04:05Z"  # kept, and a string
    assert pod["spec"]["nodeSelector"] == {"2024": True}
    orjson.dumps(pod)  # plain JSON types only
    assert [p["metadata"]["name"] for p in source.select("Pod", {"app": "reviews"}, "shop")] == [
        "reviews-v1",
        "reviews-v2",
    ]
    assert [p["metadata"]["name"] for p in source.select("Pod", {"version": "v2"})] == ["reviews-v2"]
    assert source.select("Pod", {"app": "reviews"}, "default") == []
