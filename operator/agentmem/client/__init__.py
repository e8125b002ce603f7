"""The agentmem SDK: :class:`AsyncMemory` (asyncio) and :class:`Memory` (blocking).

::

    from agentmem.client import Memory

    with Memory("http://127.0.0.1:7070", tenant="acme") as mem:
        mem.put("bot-1", "plan", {"goal": "explore"})
        mem.update("bot-1", "visits", lambda n: (n or 0) + 1)
        print(mem.get("bot-1", "plan").value)

See docs/client.md.
"""

from agentmem.client.aio import AsyncMemory, Consistency, Routing
from agentmem.client.errors import (
    AgentmemError,
    ConflictError,
    ContendedError,
    ForbiddenError,
    IncompleteError,
    InvalidRequestError,
    NotFoundError,
    OverLimitError,
    StoreFullError,
    UnauthorizedError,
    UnavailableError,
)
from agentmem.client.sync import Memory
from agentmem.client.types import Change, Hit, Item, Written

__all__ = [
    "AgentmemError",
    "AsyncMemory",
    "Change",
    "ConflictError",
    "Consistency",
    "ContendedError",
    "ForbiddenError",
    "Hit",
    "IncompleteError",
    "InvalidRequestError",
    "Item",
    "Memory",
    "NotFoundError",
    "OverLimitError",
    "Routing",
    "StoreFullError",
    "UnauthorizedError",
    "UnavailableError",
    "Written",
]
