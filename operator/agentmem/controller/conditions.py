"""Conditions in the metav1.Condition shape, and the phase that sums them up."""

from __future__ import annotations

from collections.abc import Sequence

from agentmem.model.status import CONDITION_TYPES, Condition, ConditionType, Phase


def set_condition(
    conditions: Sequence[Condition],
    type_: ConditionType,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[Condition]:
    """Conditions with one of them set; lastTransitionTime moves only when status changes."""
    value = "True" if status else "False"
    old = next((c for c in conditions if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == value else now
    new = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    rest = [c for c in conditions if c.type != type_]
    return sorted([*rest, new], key=lambda c: CONDITION_TYPES.index(c.type))


def get_condition(conditions: Sequence[Condition], type_: ConditionType) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: ConditionType, generation: int) -> bool:
    """True only for the given generation: a Ready of an old generation is not Ready."""
    condition = get_condition(conditions, type_)
    return (
        condition is not None
        and condition.status == "True"
        and condition.observed_generation == generation
    )


def phase(conditions: Sequence[Condition], generation: int, paused: bool) -> Phase:
    if paused:
        return "Paused"
    if is_true(conditions, "Degraded", generation):
        return "Degraded"
    if is_true(conditions, "Rebalancing", generation):
        return "Rebalancing"
    if is_true(conditions, "Ready", generation):
        return "Ready"
    return "Provisioning"
