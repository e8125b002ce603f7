"""What the SDK returns: items, write results, changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Item:
    """A key's current value and the version that set it (``"<partition>:<offset>"``)."""

    tenant: str
    agent: str
    key: str
    value: Any
    version: str
    #: Milliseconds since the epoch (log time) when the key expires, or None.
    expires_at: int | None = None


@dataclass(frozen=True)
class Hit:
    """A search result: the key's current value, how close it is, and the text it
    was found by."""

    tenant: str
    agent: str
    key: str
    value: Any
    version: str
    #: Similarity (COSINE, IP: higher is closer) or distance (L2: lower is closer).
    score: float
    text: str
    expires_at: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hit:
        return cls(
            tenant=str(data["tenant"]),
            agent=str(data["agent"]),
            key=str(data["key"]),
            value=data.get("value"),
            version=str(data["version"]),
            score=float(data["score"]),
            text=str(data.get("text", "")),
            expires_at=data.get("expires_at"),
        )


@dataclass(frozen=True)
class Written:
    """The outcome of a write: the key's new version; ``duplicate`` when a retry
    with the same request id found the first outcome."""

    key: str
    version: str
    duplicate: bool = False


@dataclass(frozen=True)
class Change:
    """One change of an agent's key, from ``history`` or ``watch``."""

    version: str
    op: Literal["put", "merge", "delete"]
    key: str
    value: Any
    expires_at: int | None
    actor: str
    request_id: str
    #: Log time of the change, milliseconds since the epoch.
    time: int
    #: ``applied``, ``conflict``, ``duplicate`` or ``unknown`` (history only; watch
    #: shows applied changes).
    outcome: str = "applied"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Change:
        return cls(
            version=str(data["version"]),
            op=data["op"],
            key=str(data["key"]),
            value=data.get("value"),
            expires_at=data.get("expires_at"),
            actor=str(data.get("actor", "")),
            request_id=str(data.get("request_id", "")),
            time=int(data.get("time", 0)),
            outcome=str(data.get("outcome", "applied")),
        )
