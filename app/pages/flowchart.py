"""A PlanDefinition as a flowchart a clinician can check against the source document: every
action with its conditions in words, its timing, what it asks for (the ActivityDefinition, or the
nested plan drawn in place) and where a referral goes, generated from the JSON alone."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.pages.labels import translated

__all__ = ["FlowStep", "plan_flowchart", "readable_condition"]

_PRIORITY_WORDS = {"routine": "routine", "urgent": "urgent", "asap": "as soon as possible", "stat": "immediately (stat)"}
_RELATIONSHIP_WORDS = {"after-end": "after", "after-start": "after the start of", "before-start": "before", "concurrent": "together with", "after": "after"}
# FHIRPath written by the content authors, made readable: the named inputs lose their `%` marks,
# functions become words. The raw expression stays next to it on the page.
_WORDINGS = (
    (re.compile(r"%`([^`]+)`|%([A-Za-z][\w-]*)"), lambda m: m.group(1) or m.group(2)),
    (re.compile(r"\.empty\(\)"), " is unknown"),
    (re.compile(r"\.exists\(\)"), " is known"),
    (re.compile(r"\.not\(\)"), " is not true"),
    (re.compile(r"\s*!=\s*"), " ≠ "),
    (re.compile(r"\s*>=\s*"), " ≥ "),
    (re.compile(r"\s*<=\s*"), " ≤ "),
    (re.compile(r"\s*~\s*"), " ≈ "),
    (re.compile(r"\bimplies\b"), "then"),
)


@dataclass(frozen=True)
class FlowStep:
    id: str
    title: str
    description: str
    conditions: tuple[tuple[str, str], ...]  # (readable, raw FHIRPath)
    timing: str | None
    priority: str | None
    asks_for: str | None  # the ActivityDefinition's title and kind, or the nested plan's title
    target: str | None  # where the request goes (performer or participant)
    after: tuple[str, ...]  # titles of the actions this one follows
    sources: tuple[str, ...]
    selection: str | None
    children: tuple[FlowStep, ...]


def readable_condition(expression: str) -> str:
    text = expression
    for pattern, replacement in _WORDINGS:
        text = pattern.sub(replacement, text)
    return re.sub(r"\s+", " ", text).strip()


def plan_flowchart(plan: Mapping[str, Any], definitions: Mapping[str, Mapping[str, Any]], language: str, _depth: int = 0) -> tuple[FlowStep, ...]:
    """The plan's actions as steps; `definitions` holds ActivityDefinitions and PlanDefinitions by canonical URL."""
    actions = [a for a in plan.get("action") or [] if isinstance(a, Mapping)]
    titles = {str(a.get("id")): translated(a, "title", language) for a in actions}
    return tuple(_step(action, definitions, language, titles, _depth) for action in actions)


def _step(action: Mapping[str, Any], definitions: Mapping[str, Mapping[str, Any]], language: str, titles: Mapping[str, str], depth: int) -> FlowStep:
    canonical = str(action.get("definitionCanonical") or "").split("|")[0]
    definition = definitions.get(canonical)
    children = plan_flowchart(action, definitions, language, depth)
    asks_for = None
    if definition is not None and definition.get("resourceType") == "PlanDefinition" and depth < 3:
        children = (*children, *plan_flowchart(definition, definitions, language, depth + 1))
        asks_for = f"Sub-plan: {translated(definition, 'title', language)}"
    elif definition is not None:
        asks_for = f"{translated(definition, 'title', language)} ({definition.get('kind', 'request')})"
    elif canonical:
        asks_for = canonical
    conditions = tuple(
        (str(expression.get("description") or readable_condition(str(expression.get("expression") or ""))), str(expression.get("expression") or ""))
        for condition in action.get("condition") or []
        if condition.get("kind") == "applicability" and isinstance(expression := condition.get("expression"), Mapping)
    )
    return FlowStep(
        id=str(action.get("id") or ""),
        title=translated(action, "title", language) or str(action.get("id") or ""),
        description=translated(action, "description", language),
        conditions=conditions,
        timing=_timing(action) or (_timing(definition) if definition else None),
        priority=_PRIORITY_WORDS.get(str(action.get("priority") or (definition or {}).get("priority") or "")),
        asks_for=asks_for,
        target=_target(action, definition, language),
        after=tuple(
            f"{_RELATIONSHIP_WORDS.get(str(r.get('relationship')), str(r.get('relationship')))} {titles.get(str(r.get('actionId')), r.get('actionId'))}"
            for r in action.get("relatedAction") or []
        ),
        sources=tuple(str(d.get("display") or d.get("citation") or d.get("url") or "") for d in action.get("documentation") or []),
        selection=str(action["selectionBehavior"]) if action.get("selectionBehavior") else None,
        children=children,
    )


def _timing(element: Mapping[str, Any] | None) -> str | None:
    if not element:
        return None
    if isinstance(duration := element.get("timingDuration"), Mapping):
        return f"{_quantity(duration)} after T0"
    if isinstance(span := element.get("timingRange"), Mapping):
        return f"{_quantity(span.get('low') or {})} to {_quantity(span.get('high') or {})} after T0"
    if element.get("timingDateTime"):
        return str(element["timingDateTime"])
    return None


def _quantity(quantity: Mapping[str, Any]) -> str:
    value = quantity.get("value")
    shown = int(value) if isinstance(value, float) and value.is_integer() else value
    return f"{shown} {quantity.get('unit') or quantity.get('code') or ''}".strip()


def _target(action: Mapping[str, Any], definition: Mapping[str, Any] | None, language: str) -> str | None:
    for source in (action, definition or {}):
        for dynamic in source.get("dynamicValue") or []:
            if dynamic.get("path") == "performer[0].display":
                literal = str((dynamic.get("expression") or {}).get("expression") or "")
                if literal.startswith("'") and literal.endswith("'"):
                    return literal[1:-1]
    for participant in (definition or {}).get("participant") or []:
        role = participant.get("role")
        if isinstance(role, Mapping) and role.get("text"):
            return translated(role, "text", language)
    return None
