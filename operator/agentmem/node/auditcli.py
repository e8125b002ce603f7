"""``agentmem audit verify``: check a range of the log against the signed chain.

It reads each partition's events from the log (the cluster's topic, or a copy
of it) and the signed checkpoints from the durable store, and reports per
partition either how many events it checked against how many checkpoints, or
the first event that was altered, removed, inserted or reordered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from agentmem.eventlog.ports import LogRecord, read_range
from agentmem.node.main import log_adapters, store_adapter
from agentmem.node.settings import NodeSettings
from agentmem.runtime.audit import Report, load_public_keys, verify

#: Events read from the log at a time.
CHUNK = 100_000


@dataclass(frozen=True)
class VerifyRequest:
    settings: NodeSettings  # the log, the topic and the store to read
    public_keys: Sequence[bytes]  # PEM
    partitions: Sequence[int]  # empty: every partition
    start: int | None = None
    end: int | None = None


def verify_log(request: VerifyRequest, out: TextIO) -> int:
    """Verify, print a line per partition; 0 if every partition is intact, 1 if not."""
    settings = request.settings
    keys = load_public_keys(request.public_keys)
    _, make_reader, admin = log_adapters(settings)
    store = store_adapter(settings)
    if store is None:
        raise ValueError("agentmem audit verify: give the durable store (--store)")
    store.open_audit(settings.uid)
    partitions = list(request.partitions) or list(range(settings.partitions))
    marks = admin.watermarks(partitions)
    failed = 0
    try:
        for p in partitions:
            low, high = marks[p]
            start = max(low, request.start or 0)
            end = high - 1 if request.end is None else min(request.end, high - 1)
            reader = make_reader()
            records: list[LogRecord] = []
            try:
                at = start
                while at <= end:
                    reader.assign({p: at})
                    chunk = read_range(reader, p, at, end + 1, CHUNK)
                    if not chunk:
                        break
                    records += chunk
                    at = chunk[-1].offset + 1
            finally:
                reader.close()
            report = verify(settings.uid, p, records, store.checkpoints(p, start, end), keys)
            out.write(describe(report) + "\n")
            failed += not report.ok
    finally:
        admin.close()
        store.close()
    return 1 if failed else 0


def describe(report: Report) -> str:
    where = f"partition {report.partition}"
    if report.ok and report.end < report.start:
        return f"{where}: ok, no events"
    if report.ok:
        notes = f" ({'; '.join(report.notes)})" if report.notes else ""
        return (
            f"{where}: ok, {report.checked} events of {report.start}..{report.end} match "
            f"{report.checkpoints} signed checkpoints{notes}"
        )
    if report.offset is None:
        return f"{where}: FAILED: {report.problem}"
    notes = f" ({'; '.join(report.notes)})" if report.notes else ""
    return (
        f"{where}: FAILED: the event at offset {report.offset} was {report.problem}; "
        f"{report.checked} events before it match{notes}"
    )
