"""The production event log: a Kafka topic, through confluent-kafka.

Writes use an idempotent producer with ``acks=all`` and name their partition
explicitly (the key hash decides it, not Kafka's partitioner). Readers are
assigned partitions explicitly; there is no consumer group and nothing is
committed to Kafka: a node's applied offsets live in its state store.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Sequence

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from agentmem.eventlog.kafka import KafkaSettings
from agentmem.node.ports import LogRecord, LogUnavailableError


class KafkaWriter:
    """Appends events; ``append`` resolves when the broker has the event (acks=all)."""

    def __init__(
        self, settings: KafkaSettings, topic: str, delivery_timeout_ms: int = 10_000
    ) -> None:
        self.topic = topic
        self._producer = Producer(
            {
                **settings.client_config(),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 1,
                "message.timeout.ms": delivery_timeout_ms,
                "socket.keepalive.enable": True,
            }
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="agentmem-producer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def append(self, partition: int, key: bytes, payload: bytes) -> int:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                exc = LogUnavailableError(f"the event log did not take the write: {err.str()}")
                loop.call_soon_threadsafe(_settle, done, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, done, msg.offset(), None)

        try:
            self._producer.produce(
                self.topic, payload, key, partition=partition, on_delivery=delivered
            )
        except BufferError as exc:
            raise LogUnavailableError("too many writes are waiting for the event log") from exc
        except KafkaException as exc:
            raise LogUnavailableError(f"the event log refused the write: {exc}") from exc
        return await done

    async def close(self) -> None:
        await asyncio.to_thread(self._producer.flush, 10)
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 5)


def _settle(future: asyncio.Future[int], value: int | None, exc: Exception | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value if value is not None else -1)


class KafkaReader:
    """Reads assigned partitions from given offsets."""

    def __init__(self, settings: KafkaSettings, topic: str, fetch_wait_ms: int = 5) -> None:
        self.topic = topic
        self._config = settings.client_config()
        self._consumer = Consumer(
            {
                **self._config,
                # librdkafka requires a group id; with assign() and no commits
                # the group is never joined.
                "group.id": f"agentmem-unused-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                "fetch.wait.max.ms": fetch_wait_ms,
                "fetch.min.bytes": 1,
                "socket.keepalive.enable": True,
            }
        )
        self._lock = threading.Lock()

    def assign(self, starts: dict[int, int]) -> None:
        self._consumer.assign(
            [
                TopicPartition(self.topic, p, o if o >= 0 else OFFSET_BEGINNING)
                for p, o in sorted(starts.items())
            ]
        )

    def poll(self, max_records: int, timeout: float) -> list[LogRecord]:
        """Wait up to ``timeout`` for the first record, then take what is already there.

        (``consume(n, timeout)`` alone waits for n records or the whole timeout,
        which would add the timeout to every write's latency.)
        """
        messages = self._consumer.consume(num_messages=1, timeout=timeout)
        if messages:
            messages += self._consumer.consume(num_messages=max_records - 1, timeout=0)
        out = []
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.fatal():
                    raise LogUnavailableError(f"the event log failed: {error.str()}")
                continue  # transient: librdkafka retries by itself
            _, ts = msg.timestamp()
            out.append(
                LogRecord(
                    msg.partition() or 0,
                    msg.offset() or 0,
                    ts,
                    msg.value() or b"",
                    msg.key() or b"",
                )
            )
        return out

    def high_watermarks(self, partitions: Sequence[int]) -> dict[int, int]:
        out = {}
        with self._lock:
            for p in partitions:
                try:
                    _, high = self._consumer.get_watermark_offsets(
                        TopicPartition(self.topic, p), timeout=5, cached=False
                    )
                except KafkaException as exc:
                    raise LogUnavailableError(f"cannot reach the event log: {exc}") from exc
                out[p] = high
        return out

    def partition_count(self) -> int:
        metadata = self._consumer.list_topics(self.topic, timeout=10)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            reason = topic.error.str() if topic is not None and topic.error else "missing"
            raise LogUnavailableError(f"topic {self.topic} is not usable: {reason}")
        return len(topic.partitions)

    def scan(
        self, partition: int, start: int, end: int, max_records: int, timeout: float = 5.0
    ) -> list[LogRecord]:
        """Records of one partition in [start, end), for history and watch catch-up."""
        consumer = Consumer(
            {
                **self._config,
                "group.id": f"agentmem-unused-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            consumer.assign([TopicPartition(self.topic, partition, max(start, 0))])
            out: list[LogRecord] = []
            idle = 0
            while len(out) < max_records and idle < 3:
                batch = consumer.consume(
                    num_messages=min(500, max_records - len(out)), timeout=timeout / 3
                )
                if not batch:
                    idle += 1
                for msg in batch:
                    offset = msg.offset()
                    if msg.error() is not None or offset is None:
                        continue
                    if offset >= end:
                        return out
                    _, ts = msg.timestamp()
                    out.append(LogRecord(partition, offset, ts, msg.value() or b""))
                if out and out[-1].offset >= end - 1:
                    break
            return out
        finally:
            consumer.close()

    def close(self) -> None:
        self._consumer.close()
