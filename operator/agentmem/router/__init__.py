"""The router: a stateless front door that sends each agent's requests to its shard."""

from agentmem.router.proxy import RouterConfig, create_app, serve

__all__ = ["RouterConfig", "create_app", "serve"]
