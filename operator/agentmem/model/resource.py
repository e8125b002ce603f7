"""The whole custom resource: metadata, spec and status."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentmem.model import naming
from agentmem.model.spec import AgentMemoryClusterSpec
from agentmem.model.status import AgentMemoryClusterStatus


class ObjectMeta(BaseModel):
    """The part of metadata the operator and the builders use."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class InvalidClusterError(ValueError):
    """A resource that is not a valid AgentMemoryCluster; the message names the fields."""


class AgentMemoryCluster(BaseModel):
    """A parsed AgentMemoryCluster."""

    model_config = ConfigDict(frozen=True)

    metadata: ObjectMeta
    spec: AgentMemoryClusterSpec
    status: AgentMemoryClusterStatus = Field(default_factory=AgentMemoryClusterStatus)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def topic(self) -> str:
        kafka = self.spec.event_log.kafka
        return kafka.topic_name or naming.default_topic_name(self.name, self.namespace)

    @classmethod
    def from_api(cls, obj: dict[str, Any], namespace: str | None = None) -> AgentMemoryCluster:
        """Parse an object as the API returns it (or as a user wrote it).

        Raises :class:`InvalidClusterError` with every problem, each naming its field.
        """
        if obj.get("apiVersion") != naming.API_VERSION or obj.get("kind") != naming.KIND:
            raise InvalidClusterError(
                f"expected apiVersion {naming.API_VERSION} and kind {naming.KIND}, "
                f"got apiVersion {obj.get('apiVersion')!r} and kind {obj.get('kind')!r}"
            )
        metadata = dict(obj.get("metadata") or {})
        if namespace and not metadata.get("namespace"):
            metadata["namespace"] = namespace
        try:
            cluster = cls.model_validate(
                {
                    "metadata": metadata,
                    "spec": obj.get("spec") or {},
                    "status": obj.get("status") or {},
                }
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise InvalidClusterError(f"invalid {naming.KIND}: {problems}") from None
        cluster.check_name()
        return cluster

    def check_name(self) -> None:
        if len(self.name) > naming.MAX_CLUSTER_NAME_LENGTH:
            raise InvalidClusterError(
                f"metadata.name must be at most {naming.MAX_CLUSTER_NAME_LENGTH} characters "
                f"(got {len(self.name)}) to leave room for the longest child name"
            )
