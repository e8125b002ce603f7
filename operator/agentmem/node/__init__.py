"""The memory node: event-sourced agent state, served over HTTP.

- :mod:`.service`: the write and read paths and the applier thread;
- :mod:`.apply`: the deterministic apply function (reference implementation);
- :mod:`.ports` and :mod:`.adapters`: the event log and state store, Kafka and
  Redis in production, SQLite and process memory embedded;
- :mod:`.http`, :mod:`.openapi`: the HTTP/JSON API; :mod:`.main`: ``agentmem node``.
"""

from agentmem.node.service import Node, NodeConfig, NodeError, Version

__all__ = ["Node", "NodeConfig", "NodeError", "Version"]
