"""``agentmem node``: build the adapters from settings, serve until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from dataclasses import dataclass

from aiohttp import web

from agentmem.node.http import create_app
from agentmem.node.ports import LogReader, LogWriter, StateStore
from agentmem.node.service import Node, NodeConfig

log = logging.getLogger("agentmem.node")


@dataclass(frozen=True)
class NodeOptions:
    listen: str
    log: str  # "kafka" or "sqlite:<path>"
    state: str  # a redis:// URL or "memory"
    topic: str
    partitions: int
    shard: int
    cluster: str
    directory_file: str | None
    max_value_bytes: int
    consistency: str


def _adapters(options: NodeOptions) -> tuple[LogWriter, LogReader, LogReader, StateStore]:
    if options.log.startswith("sqlite:"):
        from agentmem.node.adapters.sqlite_log import SqliteReader, SqliteWriter

        path = options.log.removeprefix("sqlite:")
        writer: LogWriter = SqliteWriter(path, options.partitions)
        reader: LogReader = SqliteReader(path, options.partitions)
        meta: LogReader = SqliteReader(path, options.partitions)
    elif options.log == "kafka":
        from agentmem.eventlog.kafka import KafkaSettings
        from agentmem.node.adapters.kafka_log import KafkaReader, KafkaWriter

        if not options.topic:
            raise SystemExit("agentmem node: set the event topic (--topic or AGENTMEM_TOPIC)")
        settings = KafkaSettings.from_env()
        writer = KafkaWriter(settings, options.topic)
        reader = KafkaReader(settings, options.topic)
        meta = KafkaReader(settings, options.topic)
    else:
        raise SystemExit(f"agentmem node: --log {options.log!r} is neither kafka nor sqlite:PATH")
    if options.state == "memory":
        from agentmem.node.adapters.memory_store import MemoryStore

        store: StateStore = MemoryStore()
    elif options.state.startswith(("redis://", "rediss://", "unix://")):
        from agentmem.node.adapters.redis_store import RedisStore

        store = RedisStore(options.state)
    else:
        raise SystemExit(
            f"agentmem node: --state {options.state!r} is neither a redis:// URL nor memory"
        )
    return writer, reader, meta, store


async def serve(options: NodeOptions) -> None:
    # The applier and sampler threads share the GIL with the event loop: hand it
    # over more often than the 5 ms default, so no request waits that long for it.
    sys.setswitchinterval(0.0005)
    host, _, port = options.listen.rpartition(":")
    writer, reader, meta, store = _adapters(options)
    node = Node(
        NodeConfig(
            partitions=options.partitions,
            cluster=options.cluster,
            shard=options.shard,
            topic=options.topic,
            directory_file=options.directory_file,
            max_value_bytes=options.max_value_bytes,
        ),
        writer,
        reader,
        meta,
        store,
    )
    await node.start()
    # Start-up objects live as long as the process: keep them out of the
    # collector's way, and collect the young generation less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    runner = web.AppRunner(
        create_app(node, options.consistency), access_log=None, shutdown_timeout=10
    )
    await runner.setup()
    site = web.TCPSite(runner, host or "0.0.0.0", int(port))
    await site.start()
    log.info(
        "memory node of shard %s listening on %s (%s partitions, epoch %s)",
        options.shard, options.listen, len(node.view.owned), node.view.epoch,
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: finishing requests, flushing the producer")
    node.close_watchers()
    await runner.cleanup()
    await node.stop()


def run(options: NodeOptions) -> int:
    logging.basicConfig(
        level=os.environ.get("AGENTMEM_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(options))
    except (RuntimeError, ValueError, OSError) as exc:
        log.error("%s", exc)
        return 1
    with contextlib.suppress(Exception):
        logging.shutdown()
    return 0
