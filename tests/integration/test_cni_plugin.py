"""The plugin binary as a runtime calls it, against real network namespaces and real iptables."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from support.cniplugin import PREV_RESULT, call, ipt, nat, netconf, pod

from cni import rules, spec

pytestmark = pytest.mark.root

T = "traffic.sidecar.istio.io/"


def ours(netns: str, family: int = 4) -> list[str]:
    return [line for line in nat(netns, family) if "ISTIO_" in line]


def expected(annotations: dict[str, str] | None = None, family: int = 4) -> set[str]:
    return set(rules.rule_lines(rules.config_from_annotations(annotations or {}), family))  # type: ignore[arg-type]


def a_lines(netns: str, family: int = 4) -> set[str]:
    return {line for line in ours(netns, family) if line.startswith("-A")}


def test_add_captures_an_injected_pod_and_returns_prev_result(netns_path: str) -> None:
    code, out = call("ADD", netns_path, netconf(pod()))
    assert code == 0, out
    assert out == PREV_RESULT
    assert a_lines(netns_path) == expected()


def test_add_twice_is_harmless(netns_path: str) -> None:
    assert call("ADD", netns_path, netconf(pod()))[0] == 0
    first = nat(netns_path)
    assert call("ADD", netns_path, netconf(pod()))[0] == 0
    assert nat(netns_path) == first
    assert len([line for line in first if line == "-A OUTPUT -j ISTIO_OUTPUT"]) == 1


def test_re_add_with_new_annotations_replaces_rules(netns_path: str) -> None:
    assert call("ADD", netns_path, netconf(pod()))[0] == 0
    changed = {T + "excludeOutboundPorts": "5432"}
    assert call("ADD", netns_path, netconf(pod(annotations=changed)))[0] == 0
    assert a_lines(netns_path) == expected(changed)


@pytest.mark.parametrize(
    ("args", "namespace"),
    [
        (pod(labels={"sidecar.istio.io/inject": "false"}), "default"),
        (pod(injected=False), "default"),
        (pod(ns_labels={}), "default"),
        (pod(namespace="kube-system"), "kube-system"),
    ],
    ids=["opt-out", "not-injected", "namespace-not-labelled", "kube-system"],
)
def test_pods_outside_the_mesh_get_no_rules(netns_path: str, args: dict[str, Any], namespace: str) -> None:
    code, out = call("ADD", netns_path, netconf(args), namespace=namespace)
    assert (code, out) == (0, PREV_RESULT)
    assert ours(netns_path) == []


def test_pod_label_selects_without_namespace_label(netns_path: str) -> None:
    args = pod(ns_labels={}, labels={"sidecar.istio.io/inject": "true"})
    assert call("ADD", netns_path, netconf(args))[0] == 0
    assert a_lines(netns_path) == expected()


def test_del_removes_exactly_our_chains(netns_path: str) -> None:
    ipt(netns_path, "-t", "nat", "-N", "OTHER_PLUGIN")
    ipt(netns_path, "-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "OTHER_PLUGIN")
    before = nat(netns_path)
    assert call("ADD", netns_path, netconf(pod()))[0] == 0
    assert ours(netns_path)
    code, out = call("DEL", netns_path, netconf(pod()))
    assert (code, out) == (0, None)
    assert nat(netns_path) == before


def test_del_is_idempotent_and_tolerates_a_missing_netns(netns_path: str) -> None:
    assert call("DEL", netns_path, netconf(pod()))[0] == 0
    assert call("DEL", "/var/run/netns/mzt-does-not-exist", netconf(pod()))[0] == 0
    assert call("DEL", "", netconf(pod()))[0] == 0


def test_check_passes_then_reports_a_deleted_rule(netns_path: str) -> None:
    assert call("ADD", netns_path, netconf(pod()))[0] == 0
    assert call("CHECK", netns_path, netconf(pod())) == (0, None)
    ipt(netns_path, "-t", "nat", "-D", "ISTIO_OUTPUT", "-m", "owner", "--uid-owner", "1337", "-j", "RETURN")
    code, out = call("CHECK", netns_path, netconf(pod()))
    assert code == 1
    assert out["code"] == spec.CAPTURE_MISSING
    assert "missing: -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN" in out["details"]


def test_check_reports_an_added_rule(netns_path: str) -> None:
    assert call("ADD", netns_path, netconf(pod()))[0] == 0
    ipt(netns_path, "-t", "nat", "-I", "ISTIO_OUTPUT", "1", "-d", "10.9.9.9/32", "-j", "RETURN")
    code, out = call("CHECK", netns_path, netconf(pod()))
    assert code == 1 and "unexpected: -A ISTIO_OUTPUT -d 10.9.9.9/32 -j RETURN" in out["details"]


def test_dual_stack_pod_gets_ip6tables_rules(netns_path: str) -> None:
    prev = {**PREV_RESULT, "ips": [*PREV_RESULT["ips"], {"address": "fd00:10::5/64", "interface": 0}]}
    assert call("ADD", netns_path, netconf(pod(), prev=prev))[0] == 0
    assert a_lines(netns_path, 4) == expected(None, 4)
    assert a_lines(netns_path, 6) == expected(None, 6)
    assert call("DEL", netns_path, netconf(pod(), prev=prev))[0] == 0
    assert ours(netns_path, 6) == [] and ours(netns_path, 4) == []


# --- bad input: a CNI error object with the right code, and nothing half-applied --------------------


@pytest.mark.parametrize(
    ("stdin", "code", "fragment"),
    [
        (b"{not json", spec.DECODE_FAILURE, "not valid JSON"),
        (b"[]", spec.DECODE_FAILURE, "not a JSON object"),
        (json.dumps({"name": "n", "type": "mizzen-cni"}).encode(), spec.INVALID_CONFIG, "no cniVersion"),
        (json.dumps({"cniVersion": "1.0.0", "type": "mizzen-cni"}).encode(), spec.INVALID_CONFIG, "'name'"),
        (
            json.dumps({"cniVersion": "9.9.9", "name": "n", "type": "t"}).encode(),
            spec.INCOMPATIBLE_VERSION,
            "9.9.9",
        ),
        (json.dumps(netconf(pod(), prev=None)).encode(), spec.INVALID_CONFIG, "chained plugin"),
        (json.dumps({**netconf(), "args": {"mizzen": "x"}}).encode(), spec.INVALID_CONFIG, "args.mizzen"),
    ],
    ids=[
        "invalid-json",
        "not-object",
        "no-version",
        "no-name",
        "unknown-version",
        "no-prev-result",
        "bad-args",
    ],
)
def test_bad_input_is_a_cni_error(netns_path: str, stdin: bytes, code: int, fragment: str) -> None:
    rc, out = call("ADD", netns_path, stdin)
    assert rc != 0
    assert out["code"] == code, out
    assert fragment in out["msg"] + out.get("details", "")
    assert ours(netns_path) == []


def test_missing_environment_is_a_cni_error(netns_path: str) -> None:
    rc, out = call("ADD", netns_path, netconf(pod()), env={"CNI_CONTAINERID": ""})
    assert rc != 0 and out["code"] == spec.INVALID_ENV and "CNI_CONTAINERID" in out["details"]
    rc, out = call("BOGUS", netns_path, netconf(pod()))
    assert rc != 0 and out["code"] == spec.INVALID_ENV


def test_missing_netns_is_unknown_container() -> None:
    rc, out = call("ADD", "/var/run/netns/mzt-gone", netconf(pod()))
    assert rc != 0 and out["code"] == spec.UNKNOWN_CONTAINER and "mzt-gone" in out["details"]


def test_invalid_annotation_names_it_and_applies_nothing(netns_path: str) -> None:
    rc, out = call("ADD", netns_path, netconf(pod(annotations={T + "excludeOutboundPorts": "ssh"})))
    assert rc != 0 and out["code"] == spec.INVALID_POD_ANNOTATION
    assert T + "excludeOutboundPorts" in out["msg"] and "'ssh'" in out["details"]
    assert ours(netns_path) == []


def _failing_tool(tmp_path: Path, name: str) -> dict[str, str]:
    tool = tmp_path / name
    tool.write_text("#!/bin/sh\ncat >/dev/null\necho 'iptables-restore: line 3 failed' >&2\nexit 1\n")
    tool.chmod(0o755)
    import os

    return {"PATH": f"{tmp_path}:{os.environ['PATH']}"}


def test_failing_restore_leaves_the_netns_as_found(netns_path: str, tmp_path: Path) -> None:
    # IPv4 goes in first, then ip6tables-restore fails: IPv4 must be rolled back.
    prev = {**PREV_RESULT, "ips": [*PREV_RESULT["ips"], {"address": "fd00:10::5/64", "interface": 0}]}
    before = nat(netns_path)
    rc, out = call(
        "ADD", netns_path, netconf(pod(), prev=prev), env=_failing_tool(tmp_path, "ip6tables-restore")
    )
    assert rc != 0 and out["code"] == spec.CAPTURE_FAILED
    assert "line 3 failed" in out["details"]
    assert nat(netns_path) == before


def test_failing_re_add_keeps_the_previous_rules(netns_path: str, tmp_path: Path) -> None:
    prev = {**PREV_RESULT, "ips": [*PREV_RESULT["ips"], {"address": "fd00:10::5/64", "interface": 0}]}
    assert call("ADD", netns_path, netconf(pod(), prev=prev))[0] == 0
    good = a_lines(netns_path)
    changed = pod(annotations={T + "excludeOutboundPorts": "5432"})
    rc, out = call(
        "ADD", netns_path, netconf(changed, prev=prev), env=_failing_tool(tmp_path, "ip6tables-restore")
    )
    assert rc != 0 and out["code"] == spec.CAPTURE_FAILED
    assert a_lines(netns_path) == good


# --- metadata from the Kubernetes API -----------------------------------------------------------------


class _Api(BaseHTTPRequestHandler):
    objects: ClassVar[dict[str, Any]] = {}

    def do_GET(self) -> None:
        body = self.objects.get(self.path)
        if body is None:
            self.send_response(404)
            payload = json.dumps({"kind": "Status", "code": 404, "reason": "NotFound"}).encode()
        else:
            assert self.headers["Authorization"] == "Bearer t0ken"
            self.send_response(200)
            payload = json.dumps(body).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, type[_Api]]]:
    handler = type("Api", (_Api,), {"objects": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "node",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "node", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    try:
        yield str(kubeconfig), handler
    finally:
        server.shutdown()
        server.server_close()


def test_pod_read_from_the_api(netns_path: str, api: tuple[str, type[_Api]]) -> None:
    kubeconfig, handler = api
    objs = pod("web", "shop")
    handler.objects["/api/v1/namespaces/shop/pods/web"] = {
        **objs["pod"],
        "spec": {"containers": [{"name": "web"}, {"name": "istio-proxy"}]},
    }
    handler.objects["/api/v1/namespaces/shop"] = objs["namespace"]
    conf = netconf(kubernetes={"kubeconfig": kubeconfig})
    code, out = call("ADD", netns_path, conf, pod_name="web", namespace="shop")
    assert (code, out) == (0, PREV_RESULT)
    assert a_lines(netns_path) == expected()


def test_pod_without_proxy_container_is_not_captured(netns_path: str, api: tuple[str, type[_Api]]) -> None:
    kubeconfig, handler = api
    objs = pod("web", "shop")
    handler.objects["/api/v1/namespaces/shop/pods/web"] = {
        **objs["pod"],
        "spec": {"containers": [{"name": "web"}]},
    }
    handler.objects["/api/v1/namespaces/shop"] = objs["namespace"]
    code, _ = call(
        "ADD", netns_path, netconf(kubernetes={"kubeconfig": kubeconfig}), pod_name="web", namespace="shop"
    )
    assert code == 0 and ours(netns_path) == []


def test_unreachable_api_fails_the_add_with_try_again(netns_path: str, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "current-context": "x",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    conf = netconf(kubernetes={"kubeconfig": str(kubeconfig), "api_attempts": 2, "api_retry_delay": 0.05})
    code, out = call("ADD", netns_path, conf)
    assert code != 0 and out["code"] == spec.TRY_AGAIN_LATER
    assert "after 2 attempts" in out["details"]
    assert ours(netns_path) == []


def test_missing_pod_is_a_clear_error(netns_path: str, api: tuple[str, type[_Api]]) -> None:
    kubeconfig, _ = api
    code, out = call("ADD", netns_path, netconf(kubernetes={"kubeconfig": kubeconfig}), pod_name="ghost")
    assert code != 0 and out["code"] == spec.POD_METADATA_UNAVAILABLE and "404" in out["details"]


# --- VERSION, STATUS, GC ------------------------------------------------------------------------------


def test_version() -> None:
    code, out = call("VERSION")
    assert code == 0 and out["cniVersion"] == "1.0.0" and "1.0.0" in out["supportedVersions"]


def test_status_and_gc_need_1_1_0() -> None:
    conf = {"cniVersion": "1.1.0", "name": "n", "type": "mizzen-cni"}
    assert call("STATUS", conf=conf) == (0, None)
    assert call("GC", conf={**conf, "cni.dev/valid-attachments": []}) == (0, None)
    code, out = call("STATUS", conf={**conf, "cniVersion": "1.0.0"})
    assert code != 0 and out["code"] == spec.INCOMPATIBLE_VERSION


def test_status_reports_an_unreadable_kubeconfig() -> None:
    conf = {
        "cniVersion": "1.1.0",
        "name": "n",
        "type": "mizzen-cni",
        "kubernetes": {"kubeconfig": "/nonexistent"},
    }
    code, out = call("STATUS", conf=conf)
    assert code != 0 and out["code"] == spec.PLUGIN_NOT_AVAILABLE and "/nonexistent" in out["details"]
