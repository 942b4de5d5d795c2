"""The actions a regional pathway advises now, read from the CarePlan its `PlanDefinition/$apply`
returned (the RequestGroup and the requests it contains), in the plan's order: red flags first,
since the plans put them first and end there."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.referral import codes

__all__ = ["PlanAdvice", "ProposedAction", "proposed_actions"]


@dataclass(frozen=True)
class ProposedAction:
    title: str
    description: str
    priority: str
    due: str | None
    request: str | None  # the kind of request it proposes (ServiceRequest, Task, ...)
    code: str | None  # lbp-action code
    performer: str | None
    depth: int


@dataclass(frozen=True)
class PlanAdvice:
    actions: tuple[ProposedAction, ...]
    notes: tuple[str, ...]  # e.g. the facts that would decide a rule left undecided


def proposed_actions(care_plan: Mapping[str, Any]) -> PlanAdvice:
    contained = {str(r.get("id")): r for r in care_plan.get("contained") or [] if isinstance(r, Mapping)}
    found: list[ProposedAction] = []
    notes: list[str] = []
    for activity in care_plan.get("activity") or []:
        group = contained.get(str((activity.get("reference") or {}).get("reference") or "").removeprefix("#"))
        if group is not None:
            _walk_group(group, contained, found, notes, 0)
    return PlanAdvice(tuple(found), tuple(dict.fromkeys(notes)))


def _walk_group(group: Mapping[str, Any], contained: Mapping[str, Mapping[str, Any]], found: list[ProposedAction], notes: list[str], depth: int) -> None:
    notes.extend(str(note.get("text")) for note in group.get("note") or [] if note.get("text"))
    for action in group.get("action") or []:
        _walk_action(action, contained, found, notes, depth)


def _walk_action(action: Mapping[str, Any], contained: Mapping[str, Mapping[str, Any]], found: list[ProposedAction], notes: list[str], depth: int) -> None:
    target = contained.get(str((action.get("resource") or {}).get("reference") or "").removeprefix("#"))
    if target is not None and target.get("resourceType") == "RequestGroup":
        _walk_group(target, contained, found, notes, depth)
        return
    children = action.get("action") or []
    if target is not None or not children:
        found.append(
            ProposedAction(
                title=str(action.get("title") or action.get("id") or ""),
                description=str(action.get("description") or ""),
                priority=str(action.get("priority") or (target or {}).get("priority") or "routine"),
                due=_due(action, target),
                request=str(target["resourceType"]) if target else None,
                code=_action_code(action, target),
                performer=_performer(target),
                depth=depth,
            )
        )
    for child in children:
        _walk_action(child, contained, found, notes, depth + 1 if target is not None or not children else depth)


def _due(action: Mapping[str, Any], target: Mapping[str, Any] | None) -> str | None:
    if action.get("timingDateTime"):
        return str(action["timingDateTime"])[:10]
    period = action.get("timingPeriod") or (target or {}).get("occurrencePeriod") or ((target or {}).get("restriction") or {}).get("period")
    if isinstance(period, Mapping) and (period.get("start") or period.get("end")):
        return " to ".join(str(period[k])[:10] for k in ("start", "end") if period.get(k))
    if (target or {}).get("occurrenceDateTime"):
        return str(target["occurrenceDateTime"])[:10]  # type: ignore[index]
    return None


def _action_code(action: Mapping[str, Any], target: Mapping[str, Any] | None) -> str | None:
    concepts = [*(action.get("code") or []), (target or {}).get("code") or {}]
    for concept in concepts:
        for coding in (concept or {}).get("coding") or []:
            if coding.get("system") == codes.LBP_ACTION:
                return str(coding.get("code"))
    return None


def _performer(target: Mapping[str, Any] | None) -> str | None:
    for performer in (target or {}).get("performer") or []:
        if performer.get("display") or performer.get("reference"):
            return str(performer.get("display") or performer.get("reference"))
    owner = (target or {}).get("owner") or {}
    return str(owner.get("display")) if owner.get("display") else None
