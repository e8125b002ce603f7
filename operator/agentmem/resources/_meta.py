"""Metadata shared by every builder."""

from __future__ import annotations

from typing import Any

from agentmem import __version__
from agentmem.model import AgentMemoryCluster, naming


def labels(cluster: AgentMemoryCluster, component: str, **extra: str) -> dict[str, str]:
    return {**naming.common_labels(cluster.name, component, __version__), **extra}


def metadata(
    cluster: AgentMemoryCluster, name: str, component: str, **extra_labels: str
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": cluster.namespace,
        "labels": labels(cluster, component, **extra_labels),
    }


def container_security() -> dict[str, Any]:
    """The restricted Pod Security Standard, per container."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


#: The non-root user of the agentmem image; Redis runs as it too.
RUN_AS_USER = 10001


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(spec_resources: Any) -> dict[str, Any]:
    """A container's resources from a spec Resources model, without empty maps."""
    data: dict[str, Any] = spec_resources.to_api()
    return {k: v for k, v in data.items() if v}
