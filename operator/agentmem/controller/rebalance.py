"""The rebalance plan as a value: planning and step bookkeeping, no I/O.

A plan moves the directory from ``from_shards`` to ``target_shards`` shards in
steps. Step ``i`` commits epoch ``start_epoch + i + 1``. Every transition here
returns a new :class:`RebalanceStatus`; the reconciler stores it in the
cluster's status before acting on it, so a restarted operator resumes from it.
"""

from __future__ import annotations

from agentmem.directory import Directory, assign, moves_between, steps
from agentmem.directory import Move as DirectoryMove
from agentmem.model import AgentMemoryCluster, Move, RebalanceStatus
from agentmem.model.status import MoveState
from agentmem.resources import shard_slots


def ring_shards(directory: Directory) -> set[int]:
    """Shards listed in the directory (those that exist and may own partitions)."""
    return {s.id for s in directory.shards}


def needs_rebalance(cluster: AgentMemoryCluster, directory: Directory) -> bool:
    return ring_shards(directory) != set(range(cluster.spec.shards))


def plan(cluster: AgentMemoryCluster, directory: Directory, now: str) -> RebalanceStatus:
    """The plan from the directory's table to ``spec.shards`` shards."""
    from_shards = len(ring_shards(directory))
    target = cluster.spec.shards
    new_table = assign(
        cluster.spec.partitions, shard_slots(cluster, range(target)), directory.table
    )
    cut = steps(
        moves_between(directory.table, new_table), cluster.spec.rebalance.max_concurrent_moves
    )
    moves = [
        Move(partition=m.partition, source=m.source, target=m.target, step=i, state="Pending")
        for i, step_moves in enumerate(cut)
        for m in step_moves
    ]
    return RebalanceStatus(
        phase="Warming" if cluster.spec.rebalance.auto_approve else "AwaitingApproval",
        from_shards=from_shards,
        target_shards=target,
        start_epoch=directory.epoch,
        steps=len(cut),
        current_step=0,
        step_started_at=now,
        moves=moves,
    )


def step_moves(rebalance: RebalanceStatus, step: int) -> list[DirectoryMove]:
    return [
        DirectoryMove(m.partition, m.source, m.target) for m in rebalance.moves if m.step == step
    ]


def step_epoch(rebalance: RebalanceStatus, step: int) -> int:
    return rebalance.start_epoch + step + 1


def mark(rebalance: RebalanceStatus, step: int, state: MoveState) -> RebalanceStatus:
    moves = [
        m.model_copy(update={"state": state}) if m.step == step else m for m in rebalance.moves
    ]
    return rebalance.model_copy(update={"moves": moves})


def committed(rebalance: RebalanceStatus, step: int, now: str) -> RebalanceStatus:
    """The step's moves committed; the next step starts."""
    return mark(rebalance, step, "Committed").model_copy(
        update={"current_step": step + 1, "step_started_at": now}
    )


def shards_during(rebalance: RebalanceStatus) -> set[int]:
    """Every shard that exists while the plan runs: old and new."""
    return set(range(max(rebalance.from_shards, rebalance.target_shards)))


def retiring(rebalance: RebalanceStatus) -> list[int]:
    return list(range(rebalance.target_shards, rebalance.from_shards))


def summary(rebalance: RebalanceStatus, now: str) -> str:
    return (
        f"{rebalance.from_shards} -> {rebalance.target_shards} shards: "
        f"{len(rebalance.moves)} partitions moved in {rebalance.steps} steps, "
        f"epoch {rebalance.start_epoch} -> {rebalance.target_epoch}, completed {now}"
    )
