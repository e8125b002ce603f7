"""The production event log: a Kafka topic, through confluent-kafka.

Writes use an idempotent producer with ``acks=all`` and name their partition
explicitly (the key hash decides it, not Kafka's partitioner). Readers are
assigned partitions explicitly; there is no consumer group and nothing is
committed to Kafka: a node's applied offsets live in its state and its durable
store. A reader never resets to another offset by itself
(``auto.offset.reset=error``): asking for an offset the log no longer holds is
a :class:`~agentmem.eventlog.ports.LogGapError`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from agentmem.eventlog.kafka import KafkaSettings
from agentmem.eventlog.ports import LogGapError, LogRecord, LogUnavailableError

log = logging.getLogger(__name__)

ProducerFactory = Callable[[dict[str, Any]], Any]


class KafkaWriter:
    """Appends events; ``append`` resolves when the broker has the event (acks=all).

    A fatal producer error (the idempotent producer's sequence state is
    broken, say) fails the writes in flight with LogUnavailableError, and the
    next append replaces the producer with a new one, so the node never stays
    up answering 503 forever. Writes that failed are not acknowledged; their
    clients retry with the same request id.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        delivery_timeout_ms: int = 10_000,
        producer_factory: ProducerFactory = Producer,
    ) -> None:
        self.topic = topic
        self._config = {
            **settings.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 1,
            "message.timeout.ms": delivery_timeout_ms,
            "socket.keepalive.enable": True,
            "error_cb": self._on_error,
        }
        self._factory = producer_factory
        self._fatal: str | None = None
        self._swap = threading.Lock()
        self.replacements = 0
        self._producer = self._factory(self._config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="agentmem-producer", daemon=True)
        self._thread.start()

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("the Kafka producer failed fatally: %s; it will be replaced", err.str())
            self._fatal = err.str()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def _replace(self) -> None:
        """Swap in a new producer; the old one's writes in flight fail and are retried."""
        with self._swap:
            if self._fatal is None:
                return
            old, self._producer = self._producer, self._factory(self._config)
            self._fatal = None
            self.replacements += 1
        try:
            old.purge()
            old.flush(1)
            old.close()
        except Exception as exc:  # a fatally failed producer may refuse even that
            log.warning("closing the failed producer: %s", exc)

    async def append(self, partition: int, key: bytes, payload: bytes) -> int:
        if self._fatal is not None:
            await asyncio.to_thread(self._replace)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                if err.fatal():
                    self._fatal = err.str()
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
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.fatal():
                self._fatal = error.str()
            raise LogUnavailableError(f"the event log refused the write: {exc}") from exc
        return await done

    async def close(self) -> None:
        """Deliver what is in flight (up to 10 s), then release the producer's threads
        and connections (what could not be delivered by then fails its append)."""
        await asyncio.to_thread(self._producer.flush, 10)
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 5)
        await asyncio.to_thread(self._shut)

    def _shut(self) -> None:
        self._producer.purge()
        self._producer.poll(0)  # the purged writes' callbacks: they fail
        self._producer.close()


def _settle(future: asyncio.Future[int], value: int | None, exc: Exception | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value if value is not None else -1)


def _consumer(settings: KafkaSettings, **extra: Any) -> Consumer:
    return Consumer(
        {
            **settings.client_config(),
            # librdkafka requires a group id; with assign() and no commits the
            # group is never joined.
            "group.id": f"agentmem-unused-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
            "enable.partition.eof": False,
            "socket.keepalive.enable": True,
            **extra,
        }
    )


class KafkaReader:
    """Reads assigned partitions from given offsets, in order."""

    def __init__(self, settings: KafkaSettings, topic: str, fetch_wait_ms: int = 5) -> None:
        self.topic = topic
        self._settings = settings
        self._consumer = _consumer(settings, **{"fetch.wait.max.ms": fetch_wait_ms})
        self._next: dict[int, int] = {}

    def assign(self, starts: dict[int, int]) -> None:
        self._next = {p: max(o, 0) for p, o in starts.items()}
        self._consumer.assign(
            [TopicPartition(self.topic, p, o) for p, o in sorted(self._next.items())]
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
                self._raise_for(msg, error)
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

    def _raise_for(self, msg: Message, error: KafkaError) -> None:
        if error.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
            partition = msg.partition()
            if partition is None or partition not in self._next:
                raise LogUnavailableError(f"the event log: {error.str()}")
            try:
                low, _ = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=5, cached=False
                )
                (position,) = self._consumer.position([TopicPartition(self.topic, partition)])
            except KafkaException as exc:
                raise LogUnavailableError(f"cannot reach the event log: {exc}") from exc
            wanted = position.offset if position.offset >= 0 else self._next[partition]
            raise LogGapError(partition, wanted, low)
        if error.fatal():
            raise LogUnavailableError(f"the event log failed: {error.str()}")

    def close(self) -> None:
        self._consumer.close()


class KafkaAdmin:
    """Watermarks, times, identity and truncation of the event topic (thread-safe)."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self.topic = topic
        self._admin = AdminClient(settings.client_config())
        self._consumer = _consumer(settings)

    def topic_id(self) -> str:
        futures = self._admin.describe_topics(TopicCollection([self.topic]))
        try:
            description = futures[self.topic].result(10)
        except KafkaException as exc:
            raise LogUnavailableError(f"cannot describe topic {self.topic}: {exc}") from exc
        return str(description.topic_id)

    def partition_count(self) -> int:
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=10)
        except KafkaException as exc:
            raise LogUnavailableError(f"cannot reach the event log: {exc}") from exc
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            reason = topic.error.str() if topic is not None and topic.error else "missing"
            raise LogUnavailableError(f"topic {self.topic} is not usable: {reason}")
        return len(topic.partitions)

    def watermarks(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        out = {}
        for p in partitions:
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=5, cached=False
                )
            except KafkaException as exc:
                raise LogUnavailableError(f"cannot reach the event log: {exc}") from exc
            out[p] = (low, high)
        return out

    def high_watermarks(self, partitions: Sequence[int]) -> dict[int, int]:
        return {p: high for p, (_, high) in self.watermarks(partitions).items()}

    def offset_for_time(self, partition: int, timestamp_ms: int) -> int:
        try:
            found = self._consumer.offsets_for_times(
                [TopicPartition(self.topic, partition, timestamp_ms)], timeout=10
            )
        except KafkaException as exc:
            raise LogUnavailableError(f"cannot reach the event log: {exc}") from exc
        offset = found[0].offset
        if offset < 0:  # no event at or after that time
            return self.high_watermarks([partition])[partition]
        return int(offset)

    def truncate(self, partition: int, before: int) -> None:
        futures = self._admin.delete_records([TopicPartition(self.topic, partition, before)])
        try:
            for future in futures.values():
                future.result(30)
        except KafkaException as exc:
            raise LogUnavailableError(
                f"cannot truncate partition {partition} of {self.topic}: {exc}"
            ) from exc

    def close(self) -> None:
        self._consumer.close()
