"""The plan between two tables: the moves, cut into steps.

A step moves at most ``max_per_step`` partitions; the operator warms up and
commits one step at a time, each as the next directory epoch. Moves are spread
over the steps round-robin by target shard, so every gaining shard warms up a
few partitions per step instead of one shard taking a whole step.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentmem.directory.document import Move


def moves_between(old: Sequence[int], new: Sequence[int]) -> list[Move]:
    """Every partition whose owner changes, in partition order."""
    if len(old) != len(new):
        raise ValueError(f"tables differ in size: {len(old)} and {len(new)}")
    return [Move(p, a, b) for p, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]


def steps(moves: Sequence[Move], max_per_step: int) -> list[list[Move]]:
    """Cut moves into steps of at most ``max_per_step``, interleaving targets."""
    if max_per_step < 1:
        raise ValueError("max_per_step must be at least 1")
    by_target: dict[int, list[Move]] = {}
    for move in sorted(moves, key=lambda m: (m.target, m.partition)):
        by_target.setdefault(move.target, []).append(move)
    interleaved: list[Move] = []
    queues = [by_target[t] for t in sorted(by_target)]
    while any(queues):
        for queue in queues:
            if queue:
                interleaved.append(queue.pop(0))
    return [
        sorted(interleaved[i : i + max_per_step], key=lambda m: m.partition)
        for i in range(0, len(interleaved), max_per_step)
    ]
