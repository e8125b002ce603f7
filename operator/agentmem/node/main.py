"""``agentmem node``: build the adapters from the settings, serve until SIGTERM."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable

from agentmem.eventlog.ports import LogAdmin, LogReader, LogWriter
from agentmem.node.http import create_app
from agentmem.node.limits import Quotas
from agentmem.node.node import Node
from agentmem.node.settings import NodeSettings
from agentmem.node.state.ports import StateStore
from agentmem.runtime import tracing
from agentmem.runtime.auth import load_verifier
from agentmem.runtime.serve import run_service, serve_until_stopped
from agentmem.runtime.tls import serve_tls
from agentmem.store.ports import DurableStore

log = logging.getLogger("agentmem.node")


def log_adapters(
    settings: NodeSettings,
) -> tuple[LogWriter, Callable[[], LogReader], LogAdmin]:
    """The event log's writer, a factory of readers, and its admin."""
    if settings.log.startswith("sqlite:"):
        from agentmem.eventlog.sqlite_log import SqliteAdmin, SqliteReader, SqliteWriter

        path, n = settings.log.removeprefix("sqlite:"), settings.partitions
        return SqliteWriter(path, n), lambda: SqliteReader(path, n), SqliteAdmin(path, n)
    if settings.log == "kafka":
        from agentmem.eventlog.kafka import KafkaSettings
        from agentmem.eventlog.kafka_log import KafkaAdmin, KafkaReader, KafkaWriter

        if not settings.topic:
            raise ValueError("agentmem node: set the event topic (--topic or AGENTMEM_TOPIC)")
        kafka, topic = KafkaSettings.from_env(), settings.topic
        return (
            KafkaWriter(kafka, topic),
            lambda: KafkaReader(kafka, topic),
            KafkaAdmin(kafka, topic),
        )
    raise ValueError(f"agentmem node: --log {settings.log!r} is neither kafka nor sqlite:PATH")


def state_adapter(settings: NodeSettings) -> StateStore:
    if settings.state == "memory":
        from agentmem.node.state.memory import MemoryStateStore

        return MemoryStateStore(settings.window_ms)
    if settings.state.startswith(("redis://", "rediss://", "unix://")):
        from agentmem.node.state.redis import RedisState

        return RedisState(settings.state, settings.window_ms)
    raise ValueError(
        f"agentmem node: --state {settings.state!r} is neither a redis:// URL nor memory"
    )


def store_adapter(settings: NodeSettings) -> DurableStore | None:
    url = settings.store
    if not url:
        return None
    if url.startswith("sqlite:"):
        from agentmem.store.sqlite import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:"))
    if url.startswith(("postgresql://", "postgres://")):
        from agentmem.store.postgres import PostgresStore, schema_name

        schema = settings.store_schema or schema_name(settings.namespace, settings.cluster)
        return PostgresStore(
            url, schema, settings.store_pool_size, connect_kwargs=dict(settings.store_options)
        )
    raise ValueError(
        f"agentmem node: --store {url.split('://')[0]!r}... is neither a postgresql:// URL "
        "nor sqlite:PATH"
    )


def build(settings: NodeSettings) -> Node:
    writer, reader, admin = log_adapters(settings)
    return Node(settings, writer, reader, admin, state_adapter(settings), store_adapter(settings))


async def serve(settings: NodeSettings) -> None:
    # The applier and sampler threads share the GIL with the event loop: hand it
    # over more often than the 5 ms default, so no request waits that long for it.
    sys.setswitchinterval(0.0005)
    verifier = load_verifier(settings.auth_file, "agentmem node", settings.no_auth)
    if tracing.configure(f"agentmem-node-{settings.cluster}"):
        log.info("tracing: spans are exported over OTLP to %s", tracing.endpoint_from_env())
    quotas = Quotas.from_json(settings.quotas)
    node = build(settings)
    await node.start()
    # Start-up objects live as long as the process: keep them out of the
    # collector's way, and collect the young generation less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)

    def started() -> None:
        log.info(
            "memory node of shard %s listening on %s (%s partitions, epoch %s, %s)",
            settings.shard, settings.listen, len(node.view.owned), node.view.epoch,
            "durable store" if settings.store else "no durable store: the log is the state",
        )  # fmt: skip

    def stopping() -> None:
        log.info("stopping: finishing requests, flushing the producer")
        node.watchers.close()

    try:
        app = create_app(node, verifier, quotas)
        context = serve_tls(app, settings.tls, mutual=bool(settings.tls_ca))
        await serve_until_stopped(app, settings.listen, stopping, started, context)
    finally:
        await node.stop()
        tracing.shutdown()


def run(settings: NodeSettings) -> int:
    return run_service(lambda: serve(settings), "node")
