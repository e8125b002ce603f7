"""The audit chain: each partition's events, hashed in the log's order, signed.

Every event of a partition has a digest (SHA-256 of its key and payload, cut
to 16 bytes); the chain's head after an event is SHA-256 of the head before it
and the event's digest, starting from 32 zero bytes. The log decides the
order, so every replica that reads a partition derives the same chain.

One replica per partition (the signer) keeps the chain as it consumes and, every
few seconds, stores a :class:`~agentmem.store.ports.AuditCheckpoint` in the
durable store: the events' digests and the heads before and after them, signed
with the cluster's audit key (Ed25519). The checkpoints link: each starts where
the previous one ended, from the previous head.

:func:`verify` checks a range of the log against them: the signatures, the
links, and then every event's digest, reporting the first event that was
altered, removed, inserted or reordered.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agentmem.eventlog.ports import LogRecord
from agentmem.runtime.tls import private_pem
from agentmem.store.ports import AuditCheckpoint

GENESIS = "00" * 32
DIGEST_BYTES = 16


def digest(record: LogRecord) -> bytes:
    """The digest of one event: its key (length-prefixed) and payload."""
    raw = len(record.key).to_bytes(4, "big") + record.key + record.payload
    return hashlib.sha256(raw).digest()[:DIGEST_BYTES]


def extend(head: bytes, event_digest: bytes) -> bytes:
    return hashlib.sha256(head + event_digest).digest()


def chain(prev_head: str, digests: Iterable[bytes]) -> str:
    head = bytes.fromhex(prev_head)
    for d in digests:
        head = extend(head, d)
    return head.hex()


def split(digests: str) -> list[bytes]:
    raw = bytes.fromhex(digests)
    return [raw[i : i + DIGEST_BYTES] for i in range(0, len(raw), DIGEST_BYTES)]


def _signed_bytes(cluster_uid: str, c: AuditCheckpoint) -> bytes:
    return json.dumps(
        ["agentmem-audit/1", cluster_uid, c.partition, c.first, c.last, c.prev_head, c.head,
         hashlib.sha256(bytes.fromhex(c.digests)).hexdigest(), c.signed_at],
        separators=(",", ":"),
    ).encode()  # fmt: skip


class AuditKey:
    """The cluster's audit signing key (Ed25519)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.kid = key_id(private.public_key())

    @classmethod
    def generate(cls) -> AuditKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes) -> AuditKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the audit key is not an Ed25519 private key")
        return cls(key)

    def pem(self) -> bytes:
        return private_pem(self.private)

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(
        self,
        cluster_uid: str,
        partition: int,
        first: int,
        prev_head: str,
        digests: Sequence[bytes],
        signed_at: int,
    ) -> AuditCheckpoint:
        unsigned = AuditCheckpoint(
            partition, first, first + len(digests) - 1, prev_head, chain(prev_head, digests),
            b"".join(digests).hex(), self.kid, "", signed_at,
        )  # fmt: skip
        signature = self.private.sign(_signed_bytes(cluster_uid, unsigned))
        return dataclasses.replace(unsigned, signature=base64.b64encode(signature).decode())


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_keys(pems: Iterable[bytes]) -> dict[str, Ed25519PublicKey]:
    keys = {}
    for pem in pems:
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("an audit public key is not Ed25519")
        keys[key_id(key)] = key
    return keys


@dataclass
class Report:
    """What :func:`verify` found; ``problem`` None means the range is intact."""

    partition: int
    start: int
    end: int
    checked: int = 0
    checkpoints: int = 0
    problem: str | None = None
    offset: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(
    cluster_uid: str,
    partition: int,
    records: Sequence[LogRecord],
    checkpoints: Sequence[AuditCheckpoint],
    keys: dict[str, Ed25519PublicKey],
) -> Report:
    """Check ``records`` (one partition, in log order) against signed ``checkpoints``.

    Only events covered by checkpoints are checked; the report's notes say
    which part of the range no checkpoint covers yet.
    """
    start = records[0].offset if records else 0
    end = records[-1].offset if records else -1
    report = Report(partition, start, end)
    # The checkpoints: signed by a known key, each one's head its digests' chain, linked.
    expected: list[tuple[int, bytes]] = []  # (offset the signer saw, digest), in order
    previous: AuditCheckpoint | None = None
    for c in checkpoints:
        key = keys.get(c.kid)
        if key is None:
            report.problem = f"checkpoint {c.first}..{c.last} is signed by unknown key {c.kid}"
            return report
        try:
            key.verify(base64.b64decode(c.signature), _signed_bytes(cluster_uid, c))
        except (InvalidSignature, ValueError):
            report.problem = f"checkpoint {c.first}..{c.last} has an invalid signature"
            return report
        digests = split(c.digests)
        if chain(c.prev_head, digests) != c.head or len(digests) != c.last - c.first + 1:
            report.problem = f"checkpoint {c.first}..{c.last} does not hash to its head"
            return report
        first = c.first
        if previous is not None:
            # Two signers may overlap while a partition changes hands: the overlap
            # must hash alike, and only what is new counts.
            overlap = previous.last - c.first + 1
            if overlap > len(digests):
                continue  # wholly inside what is checked already
            linked = (
                chain(c.prev_head, digests[:overlap]) == previous.head
                if overlap > 0
                else c.first == previous.last + 1 and c.prev_head == previous.head
            )
            if not linked:
                report.problem = (
                    f"checkpoints {previous.first}..{previous.last} and {c.first}..{c.last} do "
                    "not link: a checkpoint between them is missing or was replaced"
                )
                return report
            digests, first = digests[max(0, overlap) :], c.first + max(0, overlap)
        previous = c
        expected.extend(zip(range(first, c.last + 1), digests, strict=True))
    report.checkpoints = len(checkpoints)
    if not expected:
        report.notes.append("no signed checkpoint covers this range yet")
        return report
    # The log, against what was signed: by position from the first signed offset.
    signed_from = expected[0][0]
    actual = [(r.offset, digest(r)) for r in records if r.offset >= signed_from]
    if records and records[0].offset > signed_from:
        report.problem = "removed"
        report.offset = signed_from
        report.notes.append(f"the log starts at {records[0].offset}, after signed {signed_from}")
        return report
    theirs = [d for _, d in expected]
    ours = [d for _, d in actual]
    for i, want in enumerate(theirs):
        if i >= len(ours):
            report.problem = "removed"
            report.offset = expected[i][0]
            report.notes.append(f"signed events from offset {expected[i][0]} are not in the log")
            return report
        if ours[i] == want:
            report.checked += 1
            continue
        report.offset = actual[i][0]
        report.problem = _classify(ours, theirs, i)
        return report
    if len(ours) > len(theirs):
        report.notes.append(
            f"offsets {actual[len(theirs)][0]}..{actual[-1][0]} are not covered by a checkpoint yet"
        )
    return report


def _classify(ours: list[bytes], theirs: list[bytes], i: int) -> str:
    """What happened at the first position where the log and the signed chain differ."""
    later_here = ours[i] in theirs[i + 1 :]  # the log's event here was signed later
    signed_here_later = theirs[i] in ours[i + 1 :]  # the signed event appears later
    if later_here and signed_here_later:
        return "reordered"
    if later_here:
        return "removed"  # events signed here are missing, the log goes on after them
    if signed_here_later:
        return "inserted"
    return "altered"
