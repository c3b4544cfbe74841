"""The ``mizzen`` command line. Thin: it parses, calls the library, prints.

mizzen local up [DIR|FILE...] [--timeout S]      the whole mesh on this machine, from Kubernetes YAML
mizzen local apply -f FILE|DIR / delete -f FILE|DIR
mizzen local status [-o json]
mizzen local exec POD|deploy/NAME [--namespace NS] [--uid N] [--gid N] -- CMD...
mizzen local logs POD|deploy/NAME [-c CONTAINER] [-f] [--tail N]
mizzen local down
mizzen local pod add NAME [--namespace NS] [--label k=v] [--annotation k=v] [--ns-label k=v] [--inject]
mizzen local pod del NAME [--namespace NS]
mizzen demo [--once] [--requests N]
mizzen install | uninstall | manifest generate [--profile P] [-f values.yaml] [--set k=v]
mizzen kube-inject -f FILE | analyze [FILES] | proxy-status | proxy-config TYPE POD
mizzen tap deploy/NAME [-n NS] [--to SVC] [--path /p] [--method M] | dashboard [--prometheus URL]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mizzen import __version__, logs

# What Istio's injector writes into sidecar.istio.io/status; our plugin only needs it present.
_INJECT_STATUS = json.dumps(
    {
        "initContainers": None,
        "containers": ["istio-proxy"],
        "volumes": [],
        "imagePullSecrets": None,
        "revision": "default",
    },
    separators=(",", ":"),
)


DEFAULT_SERVICE_CIDR = "10.96.0.0/24"  # the mesh's ClusterIPs (routed inside pods only)
MESH_VERBS = ("up", "apply", "delete", "logs", "agent")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _node_options(parser: argparse.ArgumentParser) -> None:
    from mizzen.local import node

    g = parser.add_argument_group("node", "where the node keeps its state; the rest apply when it comes up")
    g.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("MIZZEN_STATE_DIR") or node.DEFAULT_STATE_DIR)
    )
    g.add_argument("--bridge", default=node.DEFAULT_BRIDGE)
    g.add_argument("--subnet", default=node.DEFAULT_SUBNET)
    g.add_argument("--netns-prefix", default=node.DEFAULT_NETNS_PREFIX)
    g.add_argument(
        "--service-cidr",
        default=None,
        help=f"route this range (service VIPs) via the bridge (`up`: default {DEFAULT_SERVICE_CIDR})",
    )
    g.add_argument(
        "--no-capture",
        dest="capture",
        action="store_false",
        help="leave mizzen-cni out of the chain (bridge networking only)",
    )
    g.add_argument("--cni-plugin", type=Path, default=None, help="the mizzen-cni executable to chain")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mizzen", description="A service mesh that keeps Istio's API.")
    parser.add_argument("--version", action="version", version=f"mizzen {__version__}")
    parser.add_argument("--log-level", default=None, help="debug, info, warning, error")
    top = parser.add_subparsers(dest="command", required=True)

    local = top.add_parser("local", help="a local node: pods as network namespaces (needs root)")
    _node_options(local)
    verbs = local.add_subparsers(dest="verb", required=True)

    pod = verbs.add_parser("pod", help="add or delete pods")
    pod_verbs = pod.add_subparsers(dest="pod_verb", required=True)
    add = pod_verbs.add_parser("add", help="create a pod through the CNI chain")
    add.add_argument("name")
    add.add_argument("--namespace", "-n", default="default")
    add.add_argument("--label", "-l", type=_key_value, action="append", default=[])
    add.add_argument("--annotation", "-a", type=_key_value, action="append", default=[])
    add.add_argument("--ns-label", type=_key_value, action="append", default=[])
    add.add_argument(
        "--inject",
        action="store_true",
        help="mark it as an injected pod in an istio-injection=enabled namespace",
    )
    delete = pod_verbs.add_parser("del", help="delete a pod (DEL through the chain)")
    delete.add_argument("name")
    delete.add_argument("--namespace", "-n", default="default")

    up = verbs.add_parser("up", help="the whole mesh on this machine: controller, gateway, pods from YAML")
    up.add_argument("sources", nargs="*", type=Path, metavar="DIR|FILE", help="Kubernetes and Istio YAML")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    for verb, text in (("apply", "create or change objects (kubectl apply)"), ("delete", "remove objects")):
        change = verbs.add_parser(verb, help=text)
        change.add_argument(
            "-f", "--filename", dest="sources", type=Path, action="append", required=True, metavar="FILE|DIR"
        )
        change.add_argument(
            "--timeout", type=float, default=120.0, help="seconds to wait until it is in force"
        )
        change.add_argument("--no-wait", dest="wait", action="store_false")
    lg = verbs.add_parser("logs", help="a container's output")
    lg.add_argument("pod", help="POD or deploy/NAME")
    lg.add_argument("--namespace", "-n", default="default")
    lg.add_argument("-c", "--container", default=None, help="default: the first app container")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("--tail", type=int, default=None)
    verbs.add_parser("agent", help=argparse.SUPPRESS)

    ex = verbs.add_parser("exec", help="run a command in a pod (its traffic goes through its sidecar)")
    ex.add_argument("pod", help="POD, or deploy/NAME in a local mesh")
    ex.add_argument("--namespace", "-n", default="default")
    ex.add_argument("--uid", type=int, default=0)
    ex.add_argument("--gid", type=int, default=None, help="defaults to the uid")
    # Filled from what follows "--" (see main): argparse's REMAINDER would swallow our own options.
    ex.add_argument("cmd", nargs="*", metavar="-- CMD", help="the command and its arguments")

    st = verbs.add_parser("status", help="show the node and its pods")
    st.add_argument("-o", "--output", choices=["text", "json"], default="text")

    verbs.add_parser("down", help="remove every pod and the node (also after a crash)")

    demo_p = top.add_parser("demo", help="Bookinfo on a local mesh, and Istio's traffic management on it")
    _node_options(demo_p)
    demo_p.add_argument("--once", action="store_true", help="take the mesh down at the end (CI)")
    demo_p.add_argument("--requests", type=int, default=30, help="requests per step")
    demo_p.add_argument("--examples", type=Path, default=None, help="the examples/bookinfo folder")

    from mizzen import kubecli

    kubecli.add_parsers(top)
    return parser


def _open_node(args: argparse.Namespace) -> Any:
    from mizzen.local import LocalNode, NodeConfig

    service_cidr = args.service_cidr
    if service_cidr is None and (getattr(args, "verb", None) == "up" or args.command == "demo"):
        service_cidr = DEFAULT_SERVICE_CIDR
    return LocalNode.open(
        NodeConfig(
            state_dir=args.state_dir,
            bridge=args.bridge,
            subnet=args.subnet,
            netns_prefix=args.netns_prefix,
            capture=args.capture,
            cni_plugin=args.cni_plugin,
            service_cidr=service_cidr,
            log_level=args.log_level or "info",
        )
    )


def _pod_add(args: argparse.Namespace) -> int:
    from mizzen.local import PodSpec

    labels, annotations, ns_labels = dict(args.label), dict(args.annotation), dict(args.ns_label)
    if args.inject:
        ns_labels.setdefault("istio-injection", "enabled")
        annotations.setdefault("sidecar.istio.io/status", _INJECT_STATUS)
    pod = _open_node(args).add_pod(
        PodSpec(
            name=args.name,
            namespace=args.namespace,
            labels=labels,
            annotations=annotations,
            namespace_labels=ns_labels,
        )
    )
    print(f"{pod.namespace}/{pod.name}\t{pod.ip}\t{pod.netns}")
    return 0


def _exec(args: argparse.Namespace) -> int:
    from mizzen.local.meshctl import Mesh

    cmd = args.cmd
    if not cmd:
        print("mizzen local exec: no command given (use: exec POD -- CMD...)", file=sys.stderr)
        return 2
    from mizzen.local.meshstate import MeshPaths

    node = _open_node(args)
    pod = args.pod
    if MeshPaths(args.state_dir).exists:  # a mesh's pods go by their names or their Deployment's
        pod = Mesh(node).find_pod(pod, args.namespace)["name"]
    return int(node.run(pod, cmd, namespace=args.namespace, uid=args.uid, gid=args.gid))


def _status(args: argparse.Namespace) -> int:
    from mizzen.local.meshctl import Mesh, print_status

    node = _open_node(args)
    status = node.status()
    mesh = Mesh(node)
    status["mesh"] = mesh.status() if mesh.is_up else None
    if args.output == "json":
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0
    if status["mesh"] is not None:
        print_status(status["mesh"], sys.stdout)
        return 0
    cfg = status["config"]
    print(
        f"node: {'up' if status['up'] else 'down'}  bridge {cfg['bridge']} {cfg['subnet']}  "
        f"capture {'on' if cfg['capture'] else 'off'}  state {cfg['state_dir']}"
    )
    for pod in status["pods"]:
        pids = ",".join(str(p["pid"]) for p in pod["processes"]) or "-"
        print(f"  {pod['namespace']}/{pod['name']}\t{pod['ip']}\t{pod['netns']}\tpids {pids}")
    for name in status["leftover_netns"]:
        print(f"  leftover netns {name} (run `mizzen local down`)")
    return 0


def _local(args: argparse.Namespace) -> int:
    if args.verb == "pod" and args.pod_verb == "add":
        return _pod_add(args)
    if args.verb == "pod" and args.pod_verb == "del":
        found = _open_node(args).delete_pod(args.name, args.namespace)
        if not found:
            print(f"no pod {args.namespace}/{args.name}", file=sys.stderr)
        return 0
    if args.verb == "exec":
        return _exec(args)
    if args.verb == "status":
        return _status(args)
    if args.verb == "down":
        from mizzen.local.meshctl import Mesh

        node = _open_node(args)
        Mesh(node).down()
        print(f"mizzen local down: everything under {node.config.state_dir} removed")
        return 0
    if args.verb in MESH_VERBS:
        return _mesh(args)
    raise AssertionError(f"unhandled verb {args.verb}")


def _mesh(args: argparse.Namespace) -> int:
    from mizzen.local.meshctl import Mesh, print_status

    node = _open_node(args)
    if args.verb == "agent":
        from mizzen.local.mesh import MeshAgent

        return MeshAgent(node).run()
    mesh = Mesh(node)
    if args.verb == "up":
        status = mesh.up(args.sources, timeout=args.timeout)
        print()
        print_status(status, sys.stdout)
        return 0
    if args.verb in ("apply", "delete"):
        change = mesh.apply if args.verb == "apply" else mesh.delete
        for line in change(args.sources, timeout=args.timeout, wait=args.wait):
            print(line)
        return 0
    mesh.logs(args.pod, args.namespace, args.container, follow=args.follow, tail=args.tail)
    return 0


def _local_controller() -> str | None:
    """The local mesh's controller debug address, when a local mesh is up (proxy-status works on it)."""
    from mizzen.local import node
    from mizzen.local.meshstate import MeshPaths, agent_alive
    from mizzen.local.state import read_json

    paths = MeshPaths(Path(os.environ.get("MIZZEN_STATE_DIR") or node.DEFAULT_STATE_DIR))
    if not paths.exists or not agent_alive(paths):
        return None
    return ((read_json(paths.status_file) or {}).get("controller") or {}).get("debug")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mizzen`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is the command for `local exec`, never our options.
    tail: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, tail = argv[:cut], argv[cut + 1 :]
    # Logging is set up before mizzen.local is imported: its module-level loggers bind at import.
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--log-level", default=None)
    level = early.parse_known_args(argv)[0].log_level
    # The demo and the mesh commands narrate on stdout; node bookkeeping logs would drown it unless asked for.
    quiet = argv[:1] == ["demo"] or bool(set(argv) & {"up", "apply", "delete", "logs", "down"})
    logs.setup(level or ("warning" if quiet else None))
    args = build_parser().parse_args(argv)
    if tail:
        if getattr(args, "verb", None) != "exec":
            build_parser().error("'--' is only used with `local exec`")
        args.cmd = [*args.cmd, *tail]
    from mizzen import kubecli

    if args.command in ("proxy-status", "proxy-config", "tap", "dashboard") and not (
        args.controller_address or args.kubeconfig or args.context
    ):
        args.controller_address = _local_controller()
    if args.command in kubecli.COMMANDS:
        return kubecli.run(args)
    from mizzen.local import CniError, NodeError
    from mizzen.local.cnipath import PluginNotFound
    from mizzen.local.meshctl import MeshError
    from mizzen.local.netns import CommandError

    try:
        if args.command == "demo":
            from mizzen.local import demo

            return demo.run(_open_node(args), once=args.once, requests=args.requests, examples=args.examples)
        return _local(args)
    except (CniError, NodeError, PluginNotFound, CommandError, MeshError) as exc:
        print(f"mizzen: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`mizzen local status | head`): nothing more to say, and no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
