"""agentmem: shared, event-sourced memory for fleets of AI agents.

The distribution ships one console script, ``agentmem``, whose subcommands run
the operator (``agentmem operator``) and render a cluster's manifests offline
(``agentmem render``). See the subpackages for the pieces:

- :mod:`agentmem.model`: the typed ``AgentMemoryCluster`` spec, names and labels;
- :mod:`agentmem.directory`: the key hash, partition assignment and directory;
- :mod:`agentmem.resources`: pure builders for every child manifest;
- :mod:`agentmem.controller`: the kopf handlers that apply them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("agentmem")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
