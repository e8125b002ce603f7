"""The typed AgentMemoryCluster resource, its names and labels, and its CRD."""

from agentmem.model.crd import custom_resource_definition
from agentmem.model.resource import AgentMemoryCluster, InvalidClusterError, ObjectMeta
from agentmem.model.spec import AgentMemoryClusterSpec
from agentmem.model.status import AgentMemoryClusterStatus, Condition, Move, RebalanceStatus

__all__ = [
    "AgentMemoryCluster",
    "AgentMemoryClusterSpec",
    "AgentMemoryClusterStatus",
    "Condition",
    "InvalidClusterError",
    "Move",
    "ObjectMeta",
    "RebalanceStatus",
    "custom_resource_definition",
]
