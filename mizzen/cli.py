"""The ``mizzen`` command line. Thin: it parses, calls the library, prints.

mizzen local pod add NAME [--namespace NS] [--label k=v] [--annotation k=v] [--ns-label k=v] [--inject]
mizzen local pod del NAME [--namespace NS]
mizzen local exec POD [--namespace NS] [--uid N] [--gid N] -- CMD...
mizzen local status [-o json]
mizzen local down
mizzen demo
mizzen install | uninstall | manifest generate [--profile P] [-f values.yaml] [--set k=v]
mizzen kube-inject -f FILE | analyze [FILES] | proxy-status | proxy-config TYPE POD
"""

from __future__ import annotations

import argparse
import json
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


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _node_options(parser: argparse.ArgumentParser) -> None:
    from mizzen.local import node

    g = parser.add_argument_group("node", "where the node keeps its state; the rest apply when it comes up")
    g.add_argument("--state-dir", type=Path, default=node.DEFAULT_STATE_DIR)
    g.add_argument("--bridge", default=node.DEFAULT_BRIDGE)
    g.add_argument("--subnet", default=node.DEFAULT_SUBNET)
    g.add_argument("--netns-prefix", default=node.DEFAULT_NETNS_PREFIX)
    g.add_argument("--service-cidr", default=None, help="route this range (service VIPs) via the bridge")
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

    ex = verbs.add_parser("exec", help="run a command in a pod")
    ex.add_argument("pod")
    ex.add_argument("--namespace", "-n", default="default")
    ex.add_argument("--uid", type=int, default=0)
    ex.add_argument("--gid", type=int, default=None, help="defaults to the uid")
    # Filled from what follows "--" (see main): argparse's REMAINDER would swallow our own options.
    ex.add_argument("cmd", nargs="*", metavar="-- CMD", help="the command and its arguments")

    st = verbs.add_parser("status", help="show the node and its pods")
    st.add_argument("-o", "--output", choices=["text", "json"], default="text")

    verbs.add_parser("down", help="remove every pod and the node (also after a crash)")

    demo_p = top.add_parser("demo", help="run the local demo")
    demo_p.add_argument("--keep", action="store_true", help="leave the demo's pods running at the end")

    from mizzen import kubecli

    kubecli.add_parsers(top)
    return parser


def _open_node(args: argparse.Namespace) -> Any:
    from mizzen.local import LocalNode, NodeConfig

    return LocalNode.open(
        NodeConfig(
            state_dir=args.state_dir,
            bridge=args.bridge,
            subnet=args.subnet,
            netns_prefix=args.netns_prefix,
            capture=args.capture,
            cni_plugin=args.cni_plugin,
            service_cidr=args.service_cidr,
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
    cmd = args.cmd
    if not cmd:
        print("mizzen local exec: no command given (use: exec POD -- CMD...)", file=sys.stderr)
        return 2
    return int(_open_node(args).run(args.pod, cmd, namespace=args.namespace, uid=args.uid, gid=args.gid))


def _status(args: argparse.Namespace) -> int:
    status = _open_node(args).status()
    if args.output == "json":
        print(json.dumps(status, indent=2, sort_keys=True))
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
        _open_node(args).down()
        return 0
    raise AssertionError(f"unhandled verb {args.verb}")


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
    # The demo narrates on stdout; node bookkeeping logs would drown it unless asked for.
    logs.setup(level or ("warning" if argv[:1] == ["demo"] else None))
    args = build_parser().parse_args(argv)
    if tail:
        if getattr(args, "verb", None) != "exec":
            build_parser().error("'--' is only used with `local exec`")
        args.cmd = [*args.cmd, *tail]
    from mizzen import kubecli

    if args.command in kubecli.COMMANDS:
        return kubecli.run(args)
    if args.command == "demo":
        from mizzen.local import demo

        return demo.run(["--keep"] if args.keep else [])
    from mizzen.local import CniError, NodeError
    from mizzen.local.cnipath import PluginNotFound
    from mizzen.local.netns import CommandError

    try:
        return _local(args)
    except (CniError, NodeError, PluginNotFound, CommandError) as exc:
        print(f"mizzen: {exc}", file=sys.stderr)
        return 1
