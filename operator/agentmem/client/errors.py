"""Typed errors of the SDK, each carrying the API's error code.

Every error the API answers is JSON ``{"error": code, "message": ...}``; the SDK
raises the class that matches the status, with ``code`` and ``message`` as the
node or router sent them::

    try:
        await mem.put("bot-1", "plan", {"goal": "explore"}, if_version="3:41")
    except ConflictError as exc:
        print("someone else wrote", exc.current_version)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class AgentmemError(Exception):
    """Any error from agentmem: ``code`` is the API's error code."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details: Mapping[str, Any] = details or {}


class UnauthorizedError(AgentmemError):
    """401: no token, or one the cluster does not accept (the message says why)."""


class ForbiddenError(AgentmemError):
    """403: the token does not cover this tenant, agent or scope."""


class InvalidRequestError(AgentmemError):
    """The request is wrong (400, 405, 413, 415): fix it, retrying will not help."""


class NotFoundError(AgentmemError):
    """An endpoint or resource that does not exist (a missing key reads as ``None``)."""


class ConflictError(AgentmemError):
    """A condition failed (409 ``conflict``): the key is at ``current_version``."""

    @property
    def current_version(self) -> str | None:
        value = self.details.get("current_version")
        return None if value is None else str(value)


class ContendedError(AgentmemError):
    """The key kept changing while the SDK retried (``update`` gave up, or 409 ``contended``)."""


class StoreFullError(AgentmemError):
    """The shard's state store is full (507): writes are refused until there is room."""


class OverLimitError(AgentmemError):
    """429: a quota of the tenant, or a bound of this client, is reached.

    Nothing was applied. ``retry_after`` says when to try again; the SDK does
    not retry it for you (retrying at once would only keep the limit hit).
    """

    @property
    def retry_after(self) -> float | None:
        value = self.details.get("retry_after")
        return None if value is None else float(value)


class UnavailableError(AgentmemError):
    """The cluster could not answer within the deadline (503/504, or no connection).

    The SDK already retried with the same request id; a write that ends here may
    or may not have been applied: retry it with the same ``request_id``.
    """

    @property
    def retry_after(self) -> float | None:
        value = self.details.get("retry_after")
        return None if value is None else float(value)


class IncompleteError(AgentmemError):
    """A query that spans shards got answers for only part of the ring.

    ``partial`` holds what the answering shards returned; ``missing`` the
    partitions no shard answered for.
    """

    def __init__(self, message: str, partial: Any, missing: Sequence[int]) -> None:
        super().__init__("incomplete", message, None, {"missing": list(missing)})
        self.partial = partial
        self.missing = list(missing)


def error_for(status: int, body: Mapping[str, Any] | None) -> AgentmemError:
    """The typed error of an HTTP answer's status and JSON body."""
    body = body or {}
    code = str(body.get("error") or f"http_{status}")
    message = str(body.get("message") or f"the server answered HTTP {status}")
    details = {k: v for k, v in body.items() if k not in ("error", "message")}
    kind: type[AgentmemError]
    if status == 409:
        kind = ConflictError if code == "conflict" else ContendedError
    elif status == 404:
        kind = NotFoundError
    elif status == 401:
        kind = UnauthorizedError
    elif status == 403:
        kind = ForbiddenError
    elif status == 429:
        kind = OverLimitError
    elif status == 507:
        kind = StoreFullError
    elif status in (503, 504) or status >= 500:
        kind = UnavailableError
    elif 400 <= status < 500:
        kind = InvalidRequestError
    else:
        kind = AgentmemError
    return kind(code, message, status, details)
