"""Action timing made concrete. Spec: https://hl7.org/fhir/R4/plandefinition-definitions.html#PlanDefinition.action.timing_x_

A `timingDuration` is an offset from the plan's anchor date and becomes a `timingDateTime`; a
`timingRange` (e.g. "4-8 weeks") becomes a `timingPeriod`. The anchor is the episode start (T0) when
it is known, otherwise the day of the `$apply`. The generated request then carries that date in the
element its type has for it (ServiceRequest.occurrence[x], Task.restriction.period, ...).
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

__all__ = ["TIMING_KEYS", "add_duration", "concrete_timing", "due_elements", "shift"]

TIMING_KEYS = ("timingDateTime", "timingAge", "timingPeriod", "timingDuration", "timingRange", "timingTiming")

_UNITS = {
    "d": "days", "day": "days", "days": "days",
    "wk": "weeks", "week": "weeks", "weeks": "weeks",
    "mo": "months", "month": "months", "months": "months",
    "a": "years", "year": "years", "years": "years",
}  # fmt: skip


def add_duration(start: date, duration: Mapping[str, Any], sign: int = 1) -> date | None:
    """`start` moved by a Duration/Quantity in days, weeks, months or years (None if unusable)."""
    value = duration.get("value")
    unit = _UNITS.get(str(duration.get("code") or duration.get("unit") or ""))
    if not isinstance(value, int | float) or isinstance(value, bool) or unit is None:
        return None
    amount = value * sign
    if unit == "days":
        return start + timedelta(days=amount)
    if unit == "weeks":
        return start + timedelta(weeks=amount)
    months = round(amount * (12 if unit == "years" else 1))
    year, month = divmod(start.month - 1 + months, 12)
    year += start.year
    return date(year, month + 1, min(start.day, calendar.monthrange(year, month + 1)[1]))


def concrete_timing(element: Mapping[str, Any], anchor: date) -> dict[str, Any]:
    """The timing[x] of an action or definition, with offsets turned into dates from `anchor`."""
    for key in TIMING_KEYS:
        if key not in element:
            continue
        value = element[key]
        if key == "timingDuration":
            due = add_duration(anchor, value)
            return {"timingDateTime": due.isoformat()} if due else {key: value}
        if key == "timingRange":
            low = add_duration(anchor, value.get("low") or {})
            high = add_duration(anchor, value.get("high") or {})
            period = {k: d.isoformat() for k, d in (("start", low), ("end", high)) if d}
            return {"timingPeriod": period} if period else {key: value}
        return {key: value}
    return {}


def shift(moment: str, offset: Mapping[str, Any], sign: int) -> str | None:
    """A date moved by a relatedAction offset (Duration or Range: its low end)."""
    try:
        start = date.fromisoformat(moment[:10])
    except ValueError:
        return None
    quantity = offset.get("low") if "low" in offset or "high" in offset else offset
    moved = add_duration(start, quantity or {}, sign)
    return moved.isoformat() if moved else None


def due_elements(resource_type: str, timing: Mapping[str, Any]) -> dict[str, Any]:
    """The elements of a request of `resource_type` that carry this concrete timing."""
    if resource_type == "Task":
        if "timingDateTime" in timing:
            return {"restriction": {"period": {"end": timing["timingDateTime"]}}}
        if "timingPeriod" in timing:
            return {"restriction": {"period": timing["timingPeriod"]}}
        return {}
    if resource_type in _OCCURRENCE:
        for key in ("timingDateTime", "timingPeriod", "timingTiming"):
            if key in timing:
                return {"occurrence" + key.removeprefix("timing"): timing[key]}
    return {}


_OCCURRENCE = frozenset({"ServiceRequest", "CommunicationRequest", "DeviceRequest"})
