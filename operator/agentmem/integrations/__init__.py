"""Adapters of agent frameworks onto the SDK: LangGraph (store, checkpointer) and MCP."""
