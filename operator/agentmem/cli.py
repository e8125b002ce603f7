"""The ``agentmem`` command: one entry point, one subcommand per role."""

from __future__ import annotations

import argparse
import os
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


def node(args: argparse.Namespace) -> int:
    """Run a memory node until SIGTERM."""
    from agentmem.node.main import run
    from agentmem.node.settings import NodeSettings

    if args.partitions is None:
        print("agentmem node: set --partitions or AGENTMEM_PARTITIONS", file=sys.stderr)
        return 2
    options = {}
    for pair in args.store_option or []:
        name, sep, value = pair.partition("=")
        if not sep:
            print(f"agentmem node: --store-option {pair!r} is not NAME=VALUE", file=sys.stderr)
            return 2
        options[name] = value
    return run(
        NodeSettings(
            partitions=args.partitions,
            listen=args.listen,
            log=args.log,
            state=args.state,
            store=args.store,
            store_schema=args.store_schema,
            store_pool_size=args.store_pool_size,
            store_options=options,
            topic=args.topic,
            shard=args.shard,
            cluster=args.cluster,
            namespace=args.namespace,
            cluster_uid=args.cluster_uid,
            directory_file=args.directory_file,
            auth_file=args.auth_file,
            no_auth=args.no_auth,
            quotas=args.quotas,
            semantic=args.semantic,
            audit_key_file=args.audit_key_file,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_ca=args.tls_ca,
            audit_signer=args.audit_signer,
            audit_interval=args.audit_interval,
            max_value_bytes=args.max_value_bytes,
            consistency=args.consistency,
            dedup_window_seconds=args.dedup_window_seconds,
            max_request_ids=args.max_request_ids,
            audit_window_seconds=args.audit_window_seconds,
            truncate_interval=args.truncate_interval_seconds,
            tick_interval=args.tick_interval_seconds,
            wait_timeout=args.wait_timeout_seconds,
            handoff_seconds=args.handoff_seconds,
        )
    )


def router(args: argparse.Namespace) -> int:
    """Run a router until SIGTERM."""
    from agentmem.router.proxy import RouterConfig, run

    if not args.directory_file:
        print(
            "agentmem router: set --directory-file or AGENTMEM_DIRECTORY_FILE (the directory "
            "ConfigMap's directory.json)",
            file=sys.stderr,
        )
        return 2
    return run(
        RouterConfig(
            directory_file=args.directory_file,
            listen=args.listen,
            auth_file=args.auth_file,
            no_auth=args.no_auth,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_ca=args.tls_ca,
        )
    )


def up(args: argparse.Namespace) -> int:
    """Run a local cluster until Ctrl-C."""
    from agentmem.local import LocalCluster, run

    return run(
        LocalCluster(
            data=Path(args.data).resolve(),
            shards=args.shards,
            partitions=args.partitions,
            host=args.host,
            port=args.port,
            kafka=args.kafka,
            redis=args.redis,
            auth=not args.no_auth,
            tls=args.tls,
            semantic=args.semantic,
            dimensions=args.dimensions,
            milvus=args.milvus,
            embedder=args.embedder,
            embedder_model=args.embedder_model,
        )
    )


def token(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Mint a token that an ``agentmem up`` cluster accepts."""
    from agentmem.local import LocalCluster

    cluster = LocalCluster(data=Path(args.data).resolve())
    if not (cluster.data / "auth" / "signing.pem").exists():
        print(f"agentmem token: {cluster.data} holds no cluster; run agentmem up first",
              file=sys.stderr)  # fmt: skip
        return 2
    scopes = tuple(args.scopes.replace(",", " ").split())
    agents = tuple(args.agent) if args.agent else None
    out.write(cluster.mint(args.subject, tenant=args.tenant, scopes=scopes, agents=agents,
                           ttl=args.ttl) + "\n")  # fmt: skip
    return 0


def audit_verify(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Check the log against the signed audit chain."""
    from agentmem.node.auditcli import VerifyRequest, verify_log
    from agentmem.node.settings import NodeSettings

    if args.data:
        from agentmem.local import LocalCluster

        local = LocalCluster(data=Path(args.data).resolve())
        settings, keys = local.audit_settings(), [local.audit_key().public_pem()]
    else:
        if args.partitions is None or not args.store or not args.public_key:
            print("agentmem audit verify: give --data, or --partitions, --store and "
                  "--public-key (with --log and --topic)", file=sys.stderr)  # fmt: skip
            return 2
        settings = NodeSettings(
            partitions=args.partitions, log=args.log, topic=args.topic, store=args.store,
            store_schema=args.store_schema, cluster=args.cluster, namespace=args.namespace,
            cluster_uid=args.cluster_uid,
        )  # fmt: skip
        keys = [Path(k).read_bytes() for k in args.public_key]
    request = VerifyRequest(settings, keys, args.partition or [], args.start, args.end)
    try:
        return verify_log(request, out)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"agentmem audit verify: {exc}", file=sys.stderr)
        return 2


def mcp(args: argparse.Namespace) -> int:
    """Serve memory tools to MCP clients."""
    from agentmem.integrations.mcp import run

    return run(
        args.url, args.tenant, args.agent, args.transport, args.host, args.port, args.token_file
    )


def _security_args(p: argparse.ArgumentParser, ca_help: str) -> None:
    """The flags of a node's and a router's door: token issuers and TLS."""
    env = os.environ.get
    p.add_argument(
        "--auth-file",
        default=env("AGENTMEM_AUTH_FILE"),
        help="the trusted token issuers (JSON, see docs/security.md)",
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        default=env("AGENTMEM_NO_AUTH", "").lower() == "true",
        help="accept requests without a token (local experiments only)",
    )
    p.add_argument(
        "--tls-cert",
        default=env("AGENTMEM_TLS_CERT"),
        help="serve HTTPS with this certificate (PEM); reread when it changes",
    )
    p.add_argument("--tls-key", default=env("AGENTMEM_TLS_KEY"), help="its private key (PEM)")
    p.add_argument("--tls-ca", default=env("AGENTMEM_TLS_CA"), help=ca_help)  # fmt: skip


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    return int(raw) if raw and raw.isdigit() else None


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

    env = os.environ.get
    p = sub.add_parser(
        "node",
        help="run a memory node (settings default to the AGENTMEM_* variables the operator sets)",
    )
    p.add_argument("--listen", default=env("AGENTMEM_LISTEN", "0.0.0.0:7070"), help="host:port")
    p.add_argument(
        "--log",
        default=env("AGENTMEM_LOG", "kafka"),
        help="event log: kafka (AGENTMEM_KAFKA_* settings) or sqlite:PATH (embedded)",
    )
    p.add_argument(
        "--state",
        default=env("AGENTMEM_REDIS_URL", "memory"),
        help="state store: a redis:// URL or memory (embedded)",
    )
    p.add_argument("--topic", default=env("AGENTMEM_TOPIC", ""), help="the event topic")
    p.add_argument(
        "--partitions", type=int, default=_env_int("AGENTMEM_PARTITIONS"), help="the cluster's P"
    )
    p.add_argument(
        "--store",
        default=env("AGENTMEM_STORE_URL", ""),
        help="durable store: a postgresql:// URL or sqlite:PATH; none: the log is the state",
    )
    p.add_argument(
        "--store-schema",
        default=env("AGENTMEM_STORE_SCHEMA", ""),
        help="PostgreSQL schema of this cluster (default agentmem_<namespace>_<cluster>)",
    )
    p.add_argument("--store-pool-size", type=int, default=_env_int("AGENTMEM_STORE_POOL_SIZE") or 4)
    p.add_argument(
        "--store-option",
        action="append",
        default=[o for o in env("AGENTMEM_STORE_OPTIONS", "").split(",") if o],
        metavar="NAME=VALUE",
        help="a connection setting of the store, e.g. sslmode=verify-full (repeatable)",
    )
    p.add_argument("--shard", type=int, default=_env_int("AGENTMEM_SHARD") or 0)
    p.add_argument("--cluster", default=env("AGENTMEM_CLUSTER", "agentmem"))
    p.add_argument("--namespace", default=env("AGENTMEM_NAMESPACE", "default"))
    p.add_argument(
        "--cluster-uid",
        default=env("AGENTMEM_CLUSTER_UID", ""),
        help="the cluster's identity in the store (default <namespace>/<cluster>)",
    )
    p.add_argument(
        "--directory-file",
        default=env("AGENTMEM_DIRECTORY_FILE"),
        help="the directory JSON to follow; without it this node serves every partition",
    )
    _security_args(p, "the cluster CA: data requests need a client certificate it signed")
    p.add_argument(
        "--audit-key-file",
        default=env("AGENTMEM_AUDIT_KEY_FILE"),
        help="the audit signing key (Ed25519 PEM): chain and sign this node's partitions",
    )
    p.add_argument(
        "--audit-signer",
        choices=["auto", "true", "false"],
        default=env("AGENTMEM_AUDIT_SIGNER", "auto"),
        help="sign the audit chain: auto (replica 0 of the shard), true or false",
    )
    p.add_argument(
        "--audit-interval",
        type=float,
        default=float(env("AGENTMEM_AUDIT_INTERVAL_SECONDS", "5")),
        help="seconds between signed checkpoints of a partition",
    )
    p.add_argument(
        "--quotas",
        default=env("AGENTMEM_QUOTAS", ""),
        help='per-tenant quotas and per-client bounds, JSON: {"default": {"writesPerSecond": '
        '100, "burst": 200, "watchers": 50}, "tenants": {"acme": {...}}, "client": {...}}',
    )
    p.add_argument(
        "--semantic",
        default=env("AGENTMEM_SEMANTIC", ""),
        help='semantic memory, JSON: {"uri": "http://milvus:19530", "dimensions": 384, '
        '"metric": "COSINE", "embedder": {"kind": "openai", "url": ".../v1", "model": "..."}} '
        "(docs/semantic.md); empty: off",
    )
    p.add_argument(
        "--max-value-bytes",
        type=int,
        default=_env_int("AGENTMEM_MAX_VALUE_BYTES") or 1024 * 1024,
        help="largest request body accepted",
    )
    p.add_argument(
        "--consistency",
        choices=["eventual", "session", "strong"],
        default=env("AGENTMEM_CONSISTENCY", "session"),
        help="read consistency when a request names none",
    )
    p.add_argument(
        "--dedup-window-seconds",
        type=int,
        default=_env_int("AGENTMEM_DEDUP_WINDOW_SECONDS") or 600,
        help="how long a client's request id is remembered (by log time)",
    )
    p.add_argument(
        "--max-request-ids",
        type=int,
        default=_env_int("AGENTMEM_MAX_REQUEST_IDS") or 50_000,
        help="request ids remembered per partition before new ones are refused",
    )
    p.add_argument(
        "--audit-window-seconds",
        type=int,
        default=_env_int("AGENTMEM_AUDIT_WINDOW_SECONDS") or 7 * 24 * 3600,
        help="history the log keeps whatever the durable store reflects",
    )
    p.add_argument(
        "--truncate-interval-seconds",
        type=float,
        default=float(env("AGENTMEM_TRUNCATE_INTERVAL_SECONDS", "60")),
        help="how often the log is truncated behind the durable store",
    )
    p.add_argument(
        "--handoff-seconds",
        type=float,
        default=float(env("AGENTMEM_HANDOFF_SECONDS", "60")),
        help="how long a partition that moved to another shard is still served here",
    )
    p.add_argument(
        "--wait-timeout-seconds",
        type=float,
        default=float(env("AGENTMEM_WAIT_TIMEOUT_SECONDS", "10")),
        help="how long a request waits for a version or an outcome before 504",
    )
    p.add_argument(
        "--tick-interval-seconds",
        type=float,
        default=float(env("AGENTMEM_TICK_INTERVAL_SECONDS", "1")),
        help="how often idle partitions with expired keys get a tick event",
    )
    p.set_defaults(func=node)

    p = sub.add_parser(
        "up",
        help="run a whole local cluster (shards, a router, the embedded log) until Ctrl-C",
        description="Start a local agentmem cluster: memory-node processes (one per shard) "
        "and a router, with the event log and the durable store as SQLite files in --data "
        "(or a real Kafka and Redis). Data survives restarts.",
    )
    p.add_argument("--data", default="agentmem-data", help="data directory (default: %(default)s)")
    p.add_argument("--shards", type=int, default=3, help="memory nodes (default: %(default)s)")
    p.add_argument(
        "--partitions",
        type=int,
        default=16,
        help="partitions of the key space, fixed for the data directory (default: %(default)s)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    p.add_argument(
        "--port",
        type=int,
        default=7070,
        help="the router's port; shard i listens on port+1+i (default: %(default)s)",
    )
    p.add_argument("--kafka", metavar="BOOTSTRAP", help="use this Kafka for the log (host:port)")
    p.add_argument(
        "--redis",
        metavar="URL",
        help="keep state in this Redis (shard i uses database i), e.g. redis://127.0.0.1:6379",
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="accept requests without a token (local experiments only: every tenant is open)",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="HTTPS everywhere with a CA made in the data directory (mutual TLS to the nodes)",
    )
    p.add_argument(
        "--semantic",
        action="store_true",
        help="semantic memory: a vector index (Milvus Lite in the data directory, port+50) and "
        "an embedder, so agents can search by meaning",
    )
    p.add_argument(
        "--dimensions", type=int, default=384, help="of the vectors (default: %(default)s)"
    )
    p.add_argument("--milvus", metavar="URI", help="a Milvus server instead of Milvus Lite")
    p.add_argument(
        "--embedder",
        default="hashing",
        help="hashing (deterministic, no model; the default) or an OpenAI-compatible endpoint "
        "(http://host:port/v1)",
    )
    p.add_argument("--embedder-model", default="", help="the model the endpoint should use")
    p.set_defaults(func=up)

    p = sub.add_parser("audit", help="the signed audit chain of the event log")
    verbs = p.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser(
        "verify",
        help="check the log (or a copy of it) against the signed checkpoints; exit 1 and "
        "name the first altered, removed or reordered event",
    )
    p.add_argument("--data", help="the data directory of an agentmem up cluster")
    p.add_argument("--log", default=env("AGENTMEM_LOG", "kafka"), help="kafka or sqlite:PATH")
    p.add_argument("--topic", default=env("AGENTMEM_TOPIC", ""), help="the topic (or a copy)")
    p.add_argument("--partitions", type=int, default=_env_int("AGENTMEM_PARTITIONS"))
    p.add_argument("--store", default=env("AGENTMEM_STORE_URL", ""), help="the durable store")
    p.add_argument("--store-schema", default=env("AGENTMEM_STORE_SCHEMA", ""))
    p.add_argument("--cluster", default=env("AGENTMEM_CLUSTER", "agentmem"))
    p.add_argument("--namespace", default=env("AGENTMEM_NAMESPACE", "default"))
    p.add_argument("--cluster-uid", default=env("AGENTMEM_CLUSTER_UID", ""))
    p.add_argument("--public-key", action="append", help="audit public key (PEM); repeatable")
    p.add_argument("--partition", type=int, action="append", help="only this one; repeatable")
    p.add_argument("--from", dest="start", type=int, help="first offset to check")
    p.add_argument("--to", dest="end", type=int, help="last offset to check")
    p.set_defaults(func=audit_verify)

    p = sub.add_parser("token", help="mint a token for a cluster started with agentmem up")
    p.add_argument("--data", default="agentmem-data", help="the cluster's data directory")
    p.add_argument("--subject", default="developer", help="who the token names (the actor)")
    p.add_argument("--tenant", required=True, help="the tenant, or * for every tenant")
    p.add_argument(
        "--agent", action="append", help="only this agent (trailing *: a prefix); repeatable"
    )
    p.add_argument("--scopes", default="read write", help="read, write, admin, status, metrics")
    p.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    p.set_defaults(func=token)

    p = sub.add_parser(
        "mcp", help="serve one agent's memory as MCP tools (stdio or streamable HTTP)"
    )
    p.add_argument("--url", default=env("AGENTMEM_URL", "http://127.0.0.1:7070"),
                   help="the cluster (a router or node)")  # fmt: skip
    p.add_argument("--tenant", default=env("AGENTMEM_TENANT", "default"))
    p.add_argument("--agent", default=env("AGENTMEM_AGENT"), required=not env("AGENTMEM_AGENT"),
                   help="the agent whose memory the tools reach")  # fmt: skip
    p.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    p.add_argument("--host", default="127.0.0.1", help="streamable HTTP address")
    p.add_argument("--port", type=int, default=8765, help="streamable HTTP port (path /mcp)")
    p.add_argument("--token-file", default=env("AGENTMEM_TOKEN_FILE"),
                   help="the cluster's bearer token (default: AGENTMEM_TOKEN)")  # fmt: skip
    p.set_defaults(func=mcp)

    p = sub.add_parser("router", help="run a router that sends each agent's requests to its shard")
    p.add_argument("--listen", default=env("AGENTMEM_LISTEN", "0.0.0.0:7070"), help="host:port")
    p.add_argument(
        "--directory-file",
        default=env("AGENTMEM_DIRECTORY_FILE"),
        help="the directory JSON to follow",
    )
    _security_args(p, "the cluster CA: nodes are checked against it, see the router's cert")
    p.set_defaults(func=router)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
