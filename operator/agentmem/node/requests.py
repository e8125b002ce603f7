"""A request as the node sees it: parsed and checked once, by the HTTP layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agentmem.directory.names import Address
from agentmem.eventlog.events import Expect
from agentmem.node.tokens import Version
from agentmem.semantic.filters import Condition, Scope

Consistency = Literal["eventual", "session", "strong"]
WriteOp = Literal["put", "merge", "delete"]


# Plain slotted dataclasses (not frozen): one is made per request, and a frozen
# dataclass costs four times as much to build.
@dataclass(slots=True)
class Embedding:
    """What a write asks to be found by: its own text and/or vector, or fields of
    the value whose text the node embeds."""

    text: str | None = None
    vector: list[float] | None = None
    fields: tuple[str, ...] = ()


@dataclass(slots=True)
class WriteRequest:
    """A put (``body`` is the value), merge (``body`` is the patch) or delete."""

    addr: Address
    op: WriteOp
    body: str | None
    expect: Expect = None
    ttl_ms: int | None = None
    rid: str = ""  # only a client-supplied request id is remembered
    actor: str = ""
    epoch: int | None = None
    embedding: Embedding | None = None


@dataclass(slots=True)
class ReadRequest:
    """Keys of one agent (``keys`` None: list the agent's keys)."""

    tenant: str
    agent: str
    keys: tuple[str, ...] | None
    consistency: Consistency = "eventual"
    min_version: Version | None = None
    epoch: int | None = None

    @property
    def agent_path(self) -> str:
        return f"{self.tenant}/{self.agent}"


@dataclass(slots=True)
class SearchRequest:
    """A search by meaning: a query text (embedded by the node) or a vector."""

    scope: Scope
    text: str | None
    vector: list[float] | None
    k: int = 10
    conditions: list[Condition] = field(default_factory=list)
    consistency: Consistency = "eventual"
    #: partition -> the offset the index must reflect first (version tokens)
    min_versions: dict[int, int] = field(default_factory=dict)
    #: The partitions to answer for (a router's fan-out names them); None: all served here.
    partitions: frozenset[int] | None = None
    epoch: int | None = None
