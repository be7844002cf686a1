"""Kubernetes-style conditions whose lastTransitionTime moves only on a real change."""

from __future__ import annotations

from datetime import datetime

from batchpredict.api.v1alpha1.status import Condition, ConditionStatus, ConditionType


def set_condition(
    conditions: list[Condition],
    type_: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """`conditions` with `type_` set; keeps lastTransitionTime when the status is unchanged
    (the Job controller's ensureJobConditionStatus)."""
    previous = next((c for c in conditions if c.type == type_.value), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=type_.value,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    others = [c for c in conditions if c.type != type_.value]
    return sorted([*others, updated], key=lambda c: _ORDER.get(c.type, len(_ORDER)))


def condition_is_true(conditions: list[Condition], type_: ConditionType) -> bool:
    return any(c.type == type_.value and c.status is ConditionStatus.TRUE for c in conditions)


_ORDER = {t.value: i for i, t in enumerate(ConditionType)}
