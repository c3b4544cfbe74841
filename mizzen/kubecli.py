"""The cluster half of the ``mizzen`` CLI: install, uninstall, manifest generate, kube-inject, analyze,
proxy-status, proxy-config. Thin: it parses, calls the library, prints."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from mizzen import output

COMMANDS = (
    "install",
    "uninstall",
    "manifest",
    "kube-inject",
    "analyze",
    "proxy-status",
    "proxy-config",
    "tap",
    "dashboard",
)


def _cluster(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG or ~/.kube/config")
    p.add_argument("--context", default=None)


def _values(p: argparse.ArgumentParser) -> None:
    from mizzen.manifests import PROFILES

    p.add_argument("--profile", default="default", choices=sorted(PROFILES), help="istioctl-style profile")
    p.add_argument(
        "-f",
        "--filename",
        dest="values_files",
        type=Path,
        action="append",
        default=[],
        help="a values file (YAML); repeatable",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one value, e.g. proxy.logLevel=debug; repeatable",
    )


def _out(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=output.FORMATS, default="text")


def add_parsers(top: Any) -> None:
    from mizzen import dashboard, tap

    tap.add_parser(top)
    dashboard.add_parser(top)
    p = top.add_parser("install", help="install Mizzen into a cluster (server-side apply) and wait")
    _values(p)
    _cluster(p)
    p.add_argument("--no-wait", dest="wait", action="store_false")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness")

    p = top.add_parser("uninstall", help="remove what `mizzen install` made")
    _values(p)
    _cluster(p)
    p.add_argument("--purge", action="store_true", help="also delete the CRDs (and every Istio resource)")

    p = top.add_parser("manifest", help="the install's manifests")
    verbs = p.add_subparsers(dest="verb", required=True)
    gen = verbs.add_parser("generate", help="print the manifests as YAML")
    _values(gen)

    p = top.add_parser("kube-inject", help="inject the sidecar into manifests, offline")
    p.add_argument(
        "-f", "--filename", dest="input", required=True, help="manifests to inject, or - for stdin"
    )
    p.add_argument(
        "--injection-config", type=Path, help="the injector's config.yaml (default: from the values)"
    )
    p.add_argument("--profile", default="default")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--native-sidecar",
        choices=("true", "false"),
        default="true",
        help="inject a native sidecar (Kubernetes 1.29+) or the proxy as the first container",
    )

    p = top.add_parser("analyze", help="find configuration that routes nowhere or is not meshed")
    p.add_argument("files", nargs="*", type=Path, help="manifests (files or folders); none: the cluster")
    _cluster(p)
    _out(p)

    p = top.add_parser("proxy-status", help="per proxy: was the latest config sent and acknowledged")
    p.add_argument(
        "--controller-address", help="HOST:PORT of a controller's debug port (default: via the API)"
    )
    p.add_argument("--mesh-namespace", default="mizzen-system")
    _cluster(p)
    _out(p)

    p = top.add_parser("proxy-config", help="a proxy's listeners, routes, clusters or endpoints")
    p.add_argument("type", choices=("listeners", "routes", "clusters", "endpoints", "all"))
    p.add_argument("pod", help="POD or POD.NAMESPACE")
    p.add_argument("-n", "--namespace", default=None)
    p.add_argument(
        "--controller-address", help="HOST:PORT of a controller's debug port (default: via the API)"
    )
    p.add_argument("--mesh-namespace", default="mizzen-system")
    _cluster(p)
    _out(p)


def _resolve(args: argparse.Namespace) -> dict[str, Any]:
    from mizzen.manifests import resolve

    return resolve(args.profile, getattr(args, "values_files", []), args.sets)


def _say(line: str) -> None:
    print(line, flush=True)


async def _with_client(args: argparse.Namespace, work: Any) -> int:
    from mizzen import kube

    client = await kube.connect(args.kubeconfig, args.context)
    try:
        return int(await work(client))
    finally:
        await client.close()


def _install(args: argparse.Namespace) -> int:
    from mizzen import install
    from mizzen.manifests import render

    objects = render(_resolve(args))
    return asyncio.run(
        _with_client(args, lambda c: install.install(c, objects, _say, wait=args.wait, timeout=args.timeout))
    )


def _uninstall(args: argparse.Namespace) -> int:
    from mizzen import install
    from mizzen.manifests import render

    objects = render(_resolve(args))
    return asyncio.run(_with_client(args, lambda c: install.uninstall(c, objects, _say, purge=args.purge)))


def _kube_inject(args: argparse.Namespace) -> int:
    from controller.inject import config as inject_config
    from mizzen.kubeinject import kube_inject
    from mizzen.manifests import inject_config as from_values

    if args.injection_config:
        config = inject_config.load(args.injection_config)
    else:
        args.values_files = []
        config = from_values(_resolve(args))
    text = sys.stdin.read() if args.input == "-" else Path(args.input).read_text()
    injected, warnings = kube_inject(text, config, native=args.native_sidecar == "true", origin=args.input)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(injected)
    return 0


def _read_files(paths: list[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    from controller.sources.manifests import parse_file

    objects: list[dict[str, Any]] = []
    problems: list[str] = []
    files = [f for p in paths for f in (sorted(p.rglob("*")) if p.is_dir() else [p])]
    for path in files:
        if path.is_dir() or path.suffix not in (".yaml", ".yml", ".json"):
            continue
        parsed = parse_file(str(path), path.read_bytes(), json=path.suffix == ".json")
        objects += [m.obj for m in parsed.objects]
        problems += [str(p) for p in parsed.problems]
    return objects, problems


async def _cluster_objects(client: Any) -> list[dict[str, Any]]:
    from controller.sources.kinds import KIND_INFO
    from mizzen.kube import ApiError

    objects: list[dict[str, Any]] = []
    for kind, info in KIND_INFO.items():
        for version in info.versions:
            base = f"/api/{version}" if not info.group else f"/apis/{info.group}/{version}"
            try:
                listed = await client.request("GET", f"{base}/{info.plural}")
            except ApiError as exc:
                if exc.code == 404:
                    continue  # not served at this version (or the CRD is missing)
                raise
            objects += [
                {**item, "kind": kind, "apiVersion": info.api_version(version)}
                for item in listed.get("items") or ()
            ]
            break
    return objects


def _analyze(args: argparse.Namespace) -> int:
    from mizzen.analyze import Finding, analyze_objects

    problems: list[str] = []
    if args.files:
        objects, problems = _read_files(args.files)
    else:
        objects = asyncio.run(_listing(args))
    findings = analyze_objects(objects)
    findings = [Finding("Error", "IST0106", "manifest", p) for p in problems] + findings
    if args.output != "text":
        output.data([f.to_dict() for f in findings], args.output, sys.stdout)
    elif not findings:
        print("✔ No validation issues found when analyzing " + ("the files" if args.files else "the cluster"))
    else:
        for finding in findings:
            print(finding.format())
    return 1 if any(f.level == "Error" for f in findings) else 0


async def _listing(args: argparse.Namespace) -> list[dict[str, Any]]:
    from mizzen import kube

    client = await kube.connect(args.kubeconfig, args.context)
    try:
        return await _cluster_objects(client)
    finally:
        await client.close()


def _source(args: argparse.Namespace, client: Any) -> Any:
    from mizzen.proxyinfo import DebugSource

    if args.controller_address:
        return DebugSource(address=args.controller_address)
    return DebugSource(client=client, namespace=args.mesh_namespace)


async def _maybe_client(args: argparse.Namespace, work: Any) -> Any:
    if args.controller_address:
        return await work(None)
    from mizzen import kube

    client = await kube.connect(args.kubeconfig, args.context)
    try:
        return await work(client)
    finally:
        await client.close()


def _proxy_status(args: argparse.Namespace) -> int:
    from mizzen.proxyinfo import STATUS_HEADERS, status_rows

    entries = asyncio.run(_maybe_client(args, lambda c: _source(args, c).get("/debug/syncz")))
    if args.output != "text":
        output.data(entries, args.output, sys.stdout)
    else:
        output.table(status_rows(entries), STATUS_HEADERS, sys.stdout)
    return 0


def _proxy_config(args: argparse.Namespace) -> int:
    from mizzen.proxyinfo import TYPES, config_dump, config_rows

    pod, _, namespace = args.pod.partition(".")
    namespace = args.namespace or namespace or "default"
    dump = asyncio.run(_maybe_client(args, lambda c: config_dump(_source(args, c), pod, namespace)))
    kinds = list(TYPES) if args.type == "all" else [args.type]
    if args.output != "text":
        output.data({TYPES[k]: dump.get(TYPES[k], {}) for k in kinds}, args.output, sys.stdout)
        return 0
    for kind in kinds:
        headers, rows = config_rows(kind, dump)
        if len(kinds) > 1:
            print(f"\n{kind.upper()}")
        output.table(rows, headers, sys.stdout)
    return 0


def _tap(args: argparse.Namespace) -> int:
    from mizzen import tap

    return tap.run(args)


def _dashboard(args: argparse.Namespace) -> int:
    from mizzen import dashboard

    return dashboard.run(args)


def run(args: argparse.Namespace) -> int:
    """Run one of ``COMMANDS``; clear one-line errors instead of tracebacks."""
    from controller.inject.config import ConfigError
    from mizzen.kube import ApiError, TransportError
    from mizzen.kubeinject import KubeInjectError
    from mizzen.manifests import ValuesError, render, resolve, to_yaml

    try:
        if args.command == "manifest":
            sys.stdout.write(to_yaml(render(resolve(args.profile, args.values_files, args.sets))))
            return 0
        handler = {
            "install": _install,
            "uninstall": _uninstall,
            "kube-inject": _kube_inject,
            "analyze": _analyze,
            "proxy-status": _proxy_status,
            "proxy-config": _proxy_config,
            "tap": _tap,
            "dashboard": _dashboard,
        }[args.command]
        return handler(args)
    except (
        ValuesError,
        ConfigError,
        KubeInjectError,
        LookupError,
        ApiError,
        TransportError,
        ValueError,
        OSError,
    ) as exc:
        print(f"mizzen {args.command}: {exc}", file=sys.stderr)
        return 1
