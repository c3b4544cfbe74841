"""``mizzen-cni``: the CNI plugin when run by a runtime, the node agent and tools otherwise.

With ``CNI_COMMAND`` in the environment (how runtimes call plugins) it is the
plugin; ``mizzen-cni agent`` is the DaemonSet's node agent; ``mizzen-cni rules``
prints the capture rules for a set of annotations (the dry run of the builder).
"""

from __future__ import annotations

import os
import sys

from cni import fastjson


def _plugin() -> int:
    from cni import spec

    if os.environ.get("CNI_COMMAND") == "VERSION":
        sys.stdout.write(fastjson.dumps(spec.version_result()) + "\n")
        return 0
    from cni import plugin

    version = spec.SPEC_VERSION
    try:
        inv = spec.parse(os.environ, sys.stdin.buffer.read())
        version = inv.cni_version
        result = plugin.run(inv)
    except spec.CniError as exc:
        sys.stdout.write(fastjson.dumps(exc.to_json(version)) + "\n")
        return 1
    except Exception as exc:  # a bug must still reach the runtime as a CNI error object
        err = spec.CniError(spec.IO_FAILURE, "mizzen-cni internal error", f"{type(exc).__name__}: {exc}")
        sys.stdout.write(fastjson.dumps(err.to_json(version)) + "\n")
        return 1
    if result is not None:
        sys.stdout.write(fastjson.dumps(result) + "\n")
    return 0


def _rules(argv: list[str]) -> int:
    import argparse

    from cni import rules

    parser = argparse.ArgumentParser(
        prog="mizzen-cni rules", description="Print the capture rules for a pod."
    )
    parser.add_argument("--annotation", "-a", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--ipv6", action="store_true", help="print the ip6tables rules")
    args = parser.parse_args(argv)
    annotations = dict(a.split("=", 1) for a in args.annotation if "=" in a)
    try:
        cfg = rules.config_from_annotations(annotations)
    except rules.AnnotationError as exc:
        print(f"mizzen-cni: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(rules.build(cfg, 6 if args.ipv6 else 4))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("CNI_COMMAND"):
        return _plugin()
    if argv and argv[0] == "agent":
        from cni.agent import main as agent_main

        return agent_main(argv[1:])
    if argv and argv[0] == "rules":
        return _rules(argv[1:])
    print(
        "usage: mizzen-cni agent [...] | mizzen-cni rules [...]  (as a CNI plugin: set CNI_COMMAND)",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
