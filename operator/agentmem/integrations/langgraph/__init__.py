"""LangGraph on agentmem: a long-term memory store and a checkpointer.

Needs ``pip install 'agentmem[langgraph]'``. See docs/client.md.
"""

from agentmem.integrations.langgraph.checkpoint import AgentmemSaver
from agentmem.integrations.langgraph.store import AgentmemStore

__all__ = ["AgentmemSaver", "AgentmemStore"]
