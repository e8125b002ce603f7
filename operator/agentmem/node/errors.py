"""The node's domain errors: what it answers instead of a result, and why.

Each kind carries a machine code and a message that says what to do; only
:mod:`agentmem.node.http` knows which HTTP status each kind becomes.
"""

from __future__ import annotations

from typing import Any


class NodeError(Exception):
    """Something the node answers instead of a result."""

    code = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after = retry_after
        self.extra = extra


class InvalidRequest(NodeError):
    """The request is malformed; the code names what (``invalid_json``, ...)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message, code=code, **extra)


class OverLimit(NodeError):
    """A quota or bound is reached; ``retry_after`` says when to try again."""


class UnsupportedMediaType(NodeError):
    code = "unsupported_media_type"


class TooLarge(NodeError):
    code = "too_large"


class NotFound(NodeError):
    code = "not_found"


class MethodNotAllowed(NodeError):
    code = "method_not_allowed"


class Contended(NodeError):
    """A merge patch kept losing to concurrent writers."""

    code = "contended"


class WrongShard(NodeError):
    """Another shard serves the partition (``owner``, ``epoch``, ``partition`` say which)."""

    code = "wrong_shard"

    def __init__(self, message: str, endpoint: str, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.endpoint = endpoint


class StaleNode(NodeError):
    """The request was routed with a newer directory than this node has."""

    code = "stale_node"


class StateFull(NodeError):
    """The shard's state is out of memory; writes are refused before reaching the log."""

    code = "store_full"


class Unavailable(NodeError):
    """The node cannot serve this now (its applier failed, ...); retry."""

    code = "unavailable"


class LogUnavailable(Unavailable):
    """The event log did not answer; nothing was acknowledged."""

    code = "log_unavailable"


class Rebuilding(Unavailable):
    """The partition's state is being rebuilt or loaded; reads would miss keys."""

    code = "rebuilding"


class NotCaughtUp(NodeError):
    """The partition did not reach the wanted offset in time; retry or ask another replica."""

    code = "not_caught_up"


class ApplyTimeout(NodeError):
    """The write is in the log but its outcome did not come in time."""

    code = "apply_timeout"
