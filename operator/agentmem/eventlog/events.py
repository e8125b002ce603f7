"""Events: one per write, appended to the partition of the agent's routing key.

An event carries everything its apply needs, so every replica reaches the same
state: the operation, the whole new value (a merge patch is resolved by the
accepting node into the full value, checked with compare-and-set), the
expected version, the absolute expiry, the request id, actor, time and schema
version.

The value travels as JSON text and is stored verbatim, so numbers keep their
exact form and reads return the bytes that were written.

Encoding (JSON object, ``v`` = 1)::

    {"v": 1, "op": "put" | "merge" | "delete" | "tick",
     "tenant": "acme", "agent": "a-1", "key": "plan",
     "value": "<JSON text>" | null,
     "expect": null | "absent" | <offset of the key's current version>,
     "expires_at": <unix ms> | null, "rid": "<request id>" | "", "actor": "...", "ts": <unix ms>,
     "text": "<text>", "vector": "<base64 of little-endian float32s>"}

``text`` and ``vector`` are present only on a write to be found by meaning
(semantic memory): the vector was computed once, by the node that accepted the
write, so replays and new replicas never embed again. Events without them
decode as before.

A ``tick`` event changes no key: it only moves the partition's log time
forward, so records and request ids that expired on a partition nobody writes
are cleaned up by log time like everywhere else. Its tenant, agent and key are
empty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

SCHEMA_VERSION: Final = 1

Op = Literal["put", "merge", "delete", "tick"]
OPS: Final = ("put", "merge", "delete", "tick")
Expect = None | Literal["absent"] | int


class EventDecodeError(ValueError):
    """An event that cannot be decoded (it is skipped and counted, never applied)."""


@dataclass(frozen=True)
class Event:
    op: Op
    tenant: str
    agent: str
    key: str
    value: str | None
    expect: Expect
    expires_at: int | None
    rid: str
    actor: str
    ts: int
    #: What the vector was computed from (kept for grounded answers), if anything.
    text: str | None = None
    #: The embedding, packed (see agentmem.semantic.vectors), if the write carries one.
    vector: str | None = None

    @classmethod
    def tick(cls, ts: int, actor: str = "") -> Event:
        return cls("tick", "", "", "", None, None, None, "", actor, ts)

    @property
    def path(self) -> str:
        return f"{self.tenant}/{self.agent}/{self.key}"

    @property
    def rid_key(self) -> str:
        """The request id's name within its partition (a tenant contains no '/')."""
        return f"{self.tenant}/{self.rid}"

    def encode(self) -> bytes:
        data: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "op": self.op,
            "tenant": self.tenant,
            "agent": self.agent,
            "key": self.key,
            "value": self.value,
            "expect": self.expect,
            "expires_at": self.expires_at,
            "rid": self.rid,
            "actor": self.actor,
            "ts": self.ts,
        }
        if self.text is not None:
            data["text"] = self.text
        if self.vector is not None:
            data["vector"] = self.vector
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes) -> Event:
        try:
            data: dict[str, Any] = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EventDecodeError(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("v") != SCHEMA_VERSION:
            version = data.get("v") if isinstance(data, dict) else None
            raise EventDecodeError(f"unknown event schema version {version!r}")
        try:
            texts = ("tenant", "agent", "key", "rid", "actor")
            if data["op"] not in OPS or not all(isinstance(data[name], str) for name in texts):
                raise EventDecodeError("an event field has the wrong type")
            text, vector = data.get("text"), data.get("vector")
            if not isinstance(text, str | None) or not isinstance(vector, str | None):
                raise EventDecodeError("an event's text or vector has the wrong type")
            return cls(
                op=data["op"],
                tenant=data["tenant"],
                agent=data["agent"],
                key=data["key"],
                value=data["value"],
                expect=data["expect"],
                expires_at=data["expires_at"],
                rid=data["rid"],
                actor=data["actor"],
                ts=data["ts"],
                text=text,
                vector=vector,
            )
        except KeyError as exc:
            raise EventDecodeError(f"missing field {exc}") from None
