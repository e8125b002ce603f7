"""The status the operator writes on an ``AgentMemoryCluster``.

Conditions follow the ``metav1.Condition`` shape. A rebalance keeps its whole
plan here, so a restarted operator resumes where it stopped.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentmem.model.spec import Model

ConditionType = Literal["Ready", "Progressing", "Degraded", "Rebalancing"]
CONDITION_TYPES: tuple[ConditionType, ...] = ("Ready", "Progressing", "Degraded", "Rebalancing")

Phase = Literal["Pending", "Provisioning", "Ready", "Rebalancing", "Degraded", "Paused"]
MoveState = Literal["Pending", "Warming", "Committed"]
RebalancePhase = Literal["AwaitingApproval", "Warming", "Retiring"]


class Condition(Model):
    """One observation of the cluster's state (the metav1.Condition shape)."""

    type: str = Field(max_length=316, description="Ready, Progressing, Degraded or Rebalancing.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Machine-readable reason in CamelCase.",
    )
    message: str = Field("", max_length=32768, description="Human-readable details.")
    last_transition_time: str = Field(
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int = Field(
        0, ge=0, description="The metadata.generation this condition was computed for."
    )


class Move(Model):
    """One partition changing owner."""

    partition: int = Field(ge=0, description="The partition that moves.")
    source: int = Field(ge=0, description="Shard that owns it before the move.")
    target: int = Field(ge=0, description="Shard that owns it after the move.")
    step: int = Field(ge=0, description="Step of the plan that commits this move.")
    state: MoveState = Field(
        "Pending", description="Pending, Warming (target is replaying) or Committed."
    )


class RebalanceStatus(Model):
    """A rebalance in progress: its full plan and how far it got."""

    phase: RebalancePhase = Field(
        description="AwaitingApproval, Warming (a step's targets catch up) or Retiring."
    )
    from_shards: int = Field(ge=0, description="Shards before the rebalance.")
    target_shards: int = Field(ge=1, description="Shards after the rebalance.")
    start_epoch: int = Field(ge=1, description="Directory epoch the plan starts from.")
    steps: int = Field(ge=0, description="Number of steps; step i commits epoch startEpoch+i+1.")
    current_step: int = Field(0, ge=0, description="The step being worked on.")
    step_started_at: str | None = Field(
        None,
        description="When the current step started warming (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    moves: list[Move] = Field(default_factory=list, description="Every move of the plan.")

    @property
    def target_epoch(self) -> int:
        return self.start_epoch + self.steps


class AgentMemoryClusterStatus(Model):
    """Observed state of an agentmem cluster."""

    observed_generation: int = Field(0, ge=0, description="The generation last reconciled.")
    phase: Phase = Field("Pending", description="Summary of the conditions.")
    shards: int = Field(0, ge=0, description="Shards that hold or are gaining partitions.")
    ready_shards: int = Field(0, ge=0, description="Shards whose replicas are all ready.")
    selector: str = Field("", description="Label selector of the memory-node pods.")
    directory_epoch: int = Field(0, ge=0, description="Committed epoch of the directory.")
    directory_table: list[int] = Field(
        default_factory=list,
        max_length=4096,
        description=(
            "The committed epoch's table (partition -> shard), written before the directory "
            "ConfigMap: a deleted or damaged ConfigMap is restored from it, never recomputed."
        ),
    )
    topic: str = Field("", description="Name of the event topic.")
    durability: Literal["", "Store", "LogOnly"] = Field(
        "",
        description=(
            "Where acknowledged writes are kept. Store: in the event log, and written behind "
            "into the durable store (spec.store), behind which the log is truncated. LogOnly: "
            "no spec.store, the event log is the state and is never truncated."
        ),
    )
    event_lag: str = Field(
        "",
        max_length=16,
        description=(
            "How far the memory nodes are behind the event log, in steps: <1s, >1s, >10s, "
            ">1m, >10m, >1h (the largest lag of a partition a node owns: the age of its "
            "oldest event not applied yet), or Unknown when a running node does not answer. "
            "Checked every AGENTMEM_LAG_SECONDS of the operator; Prometheus has it per "
            "partition."
        ),
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing, Degraded and Rebalancing.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    rebalance: RebalanceStatus | None = Field(
        None, description="The rebalance in progress, if any."
    )
    last_rebalance: str = Field("", description="Summary of the last completed rebalance.")
