"""``agentmem up``: a whole local cluster (shards, a router, the embedded log) in one command."""

from agentmem.local.cluster import LocalCluster, run

__all__ = ["LocalCluster", "run"]
