"""The memory node: event-sourced agent state, served over HTTP.

- :mod:`.node`: the facade that routes each request once and writes through
  the log or reads the state; :mod:`.requests`, :mod:`.tokens`, :mod:`.errors`;
- :mod:`.progress` (offsets and waiters), :mod:`.cache`, :mod:`.watch`,
  :mod:`.history`;
- :mod:`.applier` (the thread that follows the log into the state) and
  :mod:`.writebehind` (the durable store behind it, and truncation);
- :mod:`.apply`: the deterministic apply function (reference implementation);
  :mod:`.state`: Redis and process memory;
- :mod:`.http`, :mod:`.openapi`: the HTTP/JSON API; :mod:`.main`: ``agentmem node``.
"""

from agentmem.node.errors import NodeError
from agentmem.node.node import Node, WriteResult
from agentmem.node.requests import ReadRequest, WriteRequest
from agentmem.node.settings import NodeSettings
from agentmem.node.tokens import Version

__all__ = [
    "Node",
    "NodeError",
    "NodeSettings",
    "ReadRequest",
    "Version",
    "WriteRequest",
    "WriteResult",
]
