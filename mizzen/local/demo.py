"""``mizzen demo``: the local demo.

Today it shows the capture half of the mesh: pods created through the real CNI
chain (bridge + host-local + mizzen-cni), Istio's rules in their network
namespaces, and a plain HTTP request from one pod to another redirected to
15001 on the way out and 15006 on the way in. A capture tracer stands where the
sidecar will: it reports each redirected connection and relays it like a proxy.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any

from mizzen.local.node import LocalNode, NodeConfig, PodSpec
from mizzen.local.trace import PodTracer, wait_for

NAMESPACE = "demo"
MESH_NS = {"istio-injection": "enabled"}
INJECTED = {"sidecar.istio.io/status": '{"containers":["istio-proxy"],"mizzen":"demo"}'}
APP_PORT = 8080

CLIENT = r"""
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as resp:
    print(resp.status, len(resp.read()))
"""


def _say(text: str = "", *, indent: int = 0) -> None:
    print(" " * indent + text, flush=True)


def _client(node: LocalNode, url: str, uid: int = 0) -> str:
    proc = node.spawn(
        "client",
        [sys.executable, "-c", CLIENT, url],
        namespace=NAMESPACE,
        uid=uid,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(timeout=20)
    if proc.returncode != 0:
        return "failed: " + (err.decode().strip().splitlines() or ["?"])[-1]
    status, size = out.decode().split()
    return f"HTTP {status}, {size} bytes"


def _rules(node: LocalNode, pod: str) -> list[str]:
    netns = node.get_pod(pod, NAMESPACE).netns
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "iptables-save", "-t", "nat"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line.startswith("-A") and "ISTIO_" in line]


def _new(events: list[dict[str, Any]], since: int) -> list[dict[str, Any]]:
    return [e for e in events[since:] if e.get("relayed")]


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mizzen demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the demo's pods running at the end")
    args = parser.parse_args(argv or [])

    node = LocalNode.open(NodeConfig())
    brought_up = not node.is_up
    _say("mizzen demo: traffic capture without init containers\n")
    node.up()
    cfg = node.config
    _say(
        f"[1/5] local node up: bridge {cfg.bridge} {cfg.subnet}; CNI chain bridge -> host-local -> mizzen-cni"
    )

    for name in ("client", "server", "outsider"):
        node.delete_pod(name, NAMESPACE, force=True)
    tracers: list[PodTracer] = []
    try:
        ips = {}
        for name, labels in (
            ("client", {}),
            ("server", {}),
            ("outsider", {"sidecar.istio.io/inject": "false"}),
        ):
            pod = node.add_pod(
                PodSpec(
                    name=name,
                    namespace=NAMESPACE,
                    labels={"app": name, **labels},
                    annotations=INJECTED,
                    namespace_labels=MESH_NS,
                )
            )
            ips[name] = pod.ip
        _say("[2/5] pods created through the CNI chain (namespace labelled istio-injection=enabled):")
        for name in ips:
            rules = _rules(node, name)
            verdict = (
                f"captured, {len(rules)} rules" if rules else "not captured (sidecar.istio.io/inject=false)"
            )
            _say(f"{NAMESPACE}/{name:<9} {ips[name]:<15} {verdict}", indent=6)

        _say(f"[3/5] capture rules written by mizzen-cni in {NAMESPACE}/client (nat table, Istio's layout):")
        for line in _rules(node, "client"):
            _say(line, indent=6)

        client_t = PodTracer(node, "client", NAMESPACE)
        server_t = PodTracer(node, "server", NAMESPACE)
        tracers += [client_t, server_t]
        app = node.spawn(
            "server",
            [sys.executable, "-m", "http.server", str(APP_PORT), "--bind", "0.0.0.0"],
            namespace=NAMESPACE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        node.spawn(
            "outsider",
            [sys.executable, "-m", "http.server", str(APP_PORT)],
            namespace=NAMESPACE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in ("server", "outsider"):
            _wait_listening(node, name, APP_PORT)
        _say("[4/5] a capture tracer listens on :15001 and :15006 in client and server as UID 1337, where")
        _say(
            "the sidecar runs; server and outsider run an HTTP app on :8080 (python -m http.server)", indent=6
        )

        url = f"http://{ips['server']}:{APP_PORT}/"
        _say(f"[5/5] client (UID 0, a plain app) -> {url}")
        c0, s0 = len(client_t.events), len(server_t.events)
        result = _client(node, url)
        wait_for(lambda: bool(_new(server_t.events, s0)), "the server's inbound event", timeout=5)
        checks = {
            "client outbound captured": [e["original_dst"] for e in _new(client_t.events, c0)] == [url[7:-1]],
            "server inbound captured": [e["original_dst"] for e in _new(server_t.events, s0)] == [url[7:-1]],
            "request answered": result.startswith("HTTP 200"),
        }
        for e in _new(client_t.events, c0):
            _say(
                f"client   :15001  outbound captured, original destination {e['original_dst']} "
                "(SO_ORIGINAL_DST); relayed as UID 1337, not captured again",
                indent=6,
            )
        for e in _new(server_t.events, s0):
            _say(
                f"server   :15006  inbound captured from {e['source'].rsplit(':', 1)[0]}, "
                f"original destination {e['original_dst']}; relayed to the app from 127.0.0.6",
                indent=6,
            )
        _say(f"client   got {result}", indent=6)

        c0 = len(client_t.events)
        result = _client(node, f"http://{ips['outsider']}:{APP_PORT}/")
        dst = [e["original_dst"] for e in _new(client_t.events, c0)]
        checks["outsider reached through capture"] = dst == [f"{ips['outsider']}:{APP_PORT}"]
        _say(
            f"client -> outsider:   captured on the way out ({', '.join(dst) or 'no event!'}); "
            f"outsider has no rules, the app sees the client directly; {result}",
            indent=6,
        )

        c0, s0 = len(client_t.events), len(server_t.events)
        result = _client(node, url, uid=1337)
        time.sleep(0.3)  # give a (wrongly) captured connection time to show up in the tracer
        out_events = len(_new(client_t.events, c0))
        checks["proxy UID exempt"] = out_events == 0 and result.startswith("HTTP 200")
        _say(
            f"client as UID 1337 -> server: {out_events} outbound captures (the proxy's own traffic is never "
            f"redirected, so no loop); server still captures it inbound; {result}",
            indent=6,
        )

        app.terminate()
        _, app_log = app.communicate(timeout=5)
        lines = [line for line in app_log.decode().splitlines() if "GET /" in line]
        _say("server app's access log (peer address first):")
        for line in lines:
            _say(line, indent=6)
        checks["app reached from 127.0.0.6"] = bool(lines) and all(
            line.startswith("127.0.0.6 ") for line in lines
        )
        ok = all(checks.values())
        _say()
        if ok:
            _say("Capture works: outbound to 15001, inbound to 15006, the proxy UID exempt.")
        else:
            _say("Not as expected: " + ", ".join(name for name, passed in checks.items() if not passed))
        return 0 if ok else 1
    finally:
        for tracer in tracers:
            tracer.stop()
        if args.keep:
            _say(
                "Pods left running; `mizzen local status`, "
                f"`mizzen local exec -n {NAMESPACE} client -- ...`, `mizzen local down`."
            )
        else:
            for name in ("client", "server", "outsider"):
                node.delete_pod(name, NAMESPACE, force=True)
            if brought_up:
                node.down()
            _say("Demo pods removed" + (" and the local node taken down." if brought_up else "."))


def _wait_listening(node: LocalNode, pod: str, port: int) -> None:
    netns = node.get_pod(pod, NAMESPACE).netns

    def listening() -> bool:
        out = subprocess.run(
            ["ip", "netns", "exec", netns, "ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True
        ).stdout
        return bool(out.strip())

    wait_for(listening, f"{pod} to listen on {port}")
