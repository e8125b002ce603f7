"""The audit chain's checkpoints on their own: signatures, links, overlaps."""

from __future__ import annotations

import dataclasses

from agentmem.eventlog.ports import LogRecord
from agentmem.runtime.audit import GENESIS, AuditKey, digest, load_public_keys, verify
from agentmem.store.ports import AuditCheckpoint

UID = "ns/demo"
KEY = AuditKey.generate()
KEYS = load_public_keys([KEY.public_pem()])
RECORDS = [LogRecord(3, o, 1000 + o, f'{{"n":{o}}}'.encode(), b"t/a/k") for o in range(30)]


def signed(first: int, last: int, prev_head: str, key: AuditKey = KEY) -> AuditCheckpoint:
    digests = [digest(r) for r in RECORDS[first : last + 1]]
    return key.sign(UID, 3, first, prev_head, digests, 1)


def test_linked_checkpoints_verify_and_say_what_is_not_covered() -> None:
    a = signed(0, 9, GENESIS)
    b = signed(10, 19, a.head)
    report = verify(UID, 3, RECORDS, [a, b], KEYS)
    assert report.ok and report.checked == 20 and report.checkpoints == 2
    assert any("20..29" in note for note in report.notes)


def test_a_missing_or_forged_checkpoint_is_caught() -> None:
    a = signed(0, 9, GENESIS)
    b = signed(10, 19, a.head)
    c = signed(20, 29, b.head)
    assert "do not link" in (verify(UID, 3, RECORDS, [a, c], KEYS).problem or "")
    tampered = dataclasses.replace(b, head=a.head)
    assert "invalid signature" in (verify(UID, 3, RECORDS, [a, tampered], KEYS).problem or "")
    stranger = signed(10, 19, a.head, AuditKey.generate())
    assert "unknown key" in (verify(UID, 3, RECORDS, [a, stranger], KEYS).problem or "")
    # Signed for another cluster: the signature covers the cluster's uid.
    assert not verify("other/cluster", 3, RECORDS, [a], KEYS).ok


def test_two_signers_overlapping_during_a_handoff_still_verify() -> None:
    a = signed(0, 14, GENESIS)
    b = signed(10, 24, signed(0, 9, GENESIS).head)  # the new owner started after 0..9
    report = verify(UID, 3, RECORDS, [a, b], KEYS)
    assert report.ok and report.checked == 25, report
