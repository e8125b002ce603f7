"""A fatal producer error replaces the producer instead of leaving a node that
answers 503 forever.

Fault injection, not a real broker: librdkafka raises fatal errors of the
idempotent producer (broken sequence state, fencing) only on broker-side
conditions that cannot be produced on demand here; the fake producer below
stands in for a producer after such an error. Everything else about the writer
is tested on the real broker in the kafka tier.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError, KafkaException

from agentmem.eventlog.kafka import KafkaSettings
from agentmem.eventlog.kafka_log import KafkaWriter
from agentmem.eventlog.ports import LogUnavailableError


class _Message:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def offset(self) -> int:
        return self._offset


class FakeProducer:
    """A producer that is fatally broken (``broken``) or appends in memory."""

    made: ClassVar[list[FakeProducer]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.error_cb = config["error_cb"]
        self.broken = not FakeProducer.made  # the first one fails fatally
        self.pending: list[Any] = []
        self.purged = False
        self.closed = False
        self.offset = 0
        FakeProducer.made.append(self)

    def produce(
        self, topic: str, payload: bytes, key: bytes, partition: int, on_delivery: Any
    ) -> None:
        if self.broken:
            error = KafkaError(KafkaError._FATAL, "sequence desynchronized", fatal=True)
            self.error_cb(error)
            raise KafkaException(error)
        self.pending.append(on_delivery)

    def poll(self, timeout: float) -> int:
        pending, self.pending = self.pending, []
        for callback in pending:
            callback(None, _Message(self.offset))
            self.offset += 1
        return len(pending)

    def flush(self, timeout: float = 0) -> int:
        self.poll(0)
        return 0

    def purge(self) -> None:
        self.purged = True

    def close(self) -> bool:
        self.closed = True
        return True


def test_a_fatal_producer_error_replaces_the_producer() -> None:
    FakeProducer.made = []

    async def scenario() -> None:
        writer = KafkaWriter(KafkaSettings("unused:9092"), "t", producer_factory=FakeProducer)
        try:
            with pytest.raises(LogUnavailableError, match="refused the write"):
                await writer.append(0, b"k", b"v")
            # the next write gets a new producer and is acknowledged
            assert await asyncio.wait_for(writer.append(0, b"k", b"v"), 5) == 0
            assert await asyncio.wait_for(writer.append(0, b"k", b"v"), 5) == 1
            assert writer.replacements == 1
            assert len(FakeProducer.made) == 2 and FakeProducer.made[0].purged
            assert FakeProducer.made[0].closed and not FakeProducer.made[1].closed
        finally:
            await writer.close()
        assert FakeProducer.made[1].closed  # its threads and connections released

    asyncio.run(scenario())
