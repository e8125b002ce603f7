"""The ``agentmem`` command: one entry point, one subcommand per role."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from agentmem import __version__


def _load_documents(path: str, stdin: TextIO) -> list[dict[str, Any]]:
    text = stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Print every child manifest of each AgentMemoryCluster in a file, offline."""
    from agentmem.model import AgentMemoryCluster, InvalidClusterError, naming
    from agentmem.resources import children

    try:
        documents = _load_documents(args.file, sys.stdin)
    except (OSError, yaml.YAMLError) as exc:
        print(f"agentmem render: cannot read {args.file}: {exc}", file=err)
        return 2
    clusters = [d for d in documents if d.get("kind") == naming.KIND]
    if not clusters:
        print(f"agentmem render: {args.file} holds no {naming.KIND}", file=err)
        return 2
    manifests: list[dict[str, Any]] = []
    for doc in clusters:
        try:
            cluster = AgentMemoryCluster.from_api(doc, namespace=args.namespace)
        except InvalidClusterError as exc:
            print(f"agentmem render: {args.file}: {exc}", file=err)
            return 1
        manifests.extend(children(cluster, monitoring_api=not args.no_monitoring))
    yaml.safe_dump_all(manifests, out, sort_keys=False)
    return 0


def crd(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Print the AgentMemoryCluster CRD generated from the typed model."""
    from agentmem.model import custom_resource_definition

    out.write("# Generated from operator/agentmem/model by `make manifests`; do not edit.\n")
    yaml.safe_dump(custom_resource_definition(), out, sort_keys=False, width=100)
    return 0


def operator(args: argparse.Namespace) -> int:
    """Run the operator until SIGTERM."""
    from agentmem.controller.runner import run

    return run(
        namespaces=args.namespace or [],
        liveness=args.liveness,
        metrics_port=args.metrics_port,
        verbose=args.verbose,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentmem",
        description="Shared, event-sourced memory for fleets of AI agents.",
    )
    parser.add_argument("--version", action="version", version=f"agentmem {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "render", help="print every child manifest of an AgentMemoryCluster, offline"
    )
    p.add_argument("-f", "--file", required=True, help="YAML file with the resource, - for stdin")
    p.add_argument(
        "-n", "--namespace", default="default", help="namespace when the resource names none"
    )
    p.add_argument(
        "--no-monitoring",
        action="store_true",
        help="leave out the ServiceMonitor and PrometheusRule (no Prometheus Operator)",
    )
    p.set_defaults(func=render)

    p = sub.add_parser("crd", help="print the AgentMemoryCluster CustomResourceDefinition")
    p.set_defaults(func=crd)

    p = sub.add_parser("operator", help="run the operator against the current kubeconfig")
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        help="watch this namespace (repeatable); all namespaces when not given",
    )
    p.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="liveness endpoint URL (default: %(default)s)",
    )
    p.add_argument(
        "--metrics-port", type=int, default=8081, help="Prometheus metrics port, 0 to disable"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every handler step")
    p.set_defaults(func=operator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
