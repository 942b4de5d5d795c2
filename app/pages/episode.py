"""The patient's episode as the clinician view shows it: T0 and the reassessment points T2, T4, T8
with their due dates and the contacts that met them, the STarT Back results over time, the latest
risk group, and the red flags of the latest assessment (each also when it is still unknown)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from app.pages.labels import translated
from app.pathway.facts import ASSESSMENT_QUESTIONNAIRE, SBST_QUESTIONNAIRE, pathway_inputs

__all__ = ["Episode", "RedFlag", "SbstPoint", "TimePoint", "episode_of"]

# Week of each time point after T0, and the week its window opens (half-way from the one before).
_TIME_POINTS = (("T0", 0, 0), ("T2", 2, 1), ("T4", 4, 3), ("T8", 8, 6))
_LAST_WINDOW_CLOSES = 10  # weeks: a contact after T8 + 2 weeks belongs to no time point
_RISK = {"LA9194-7": "low", "LA8982-6": "medium", "LA9193-9": "high"}
_FINAL = frozenset({"completed", "amended"})
# The red-flag facts of the assessment and the answers that raise them (pathway contract).
_RED_FLAGS: dict[str, Callable[[Any], bool]] = {
    "red-flag-cauda-equina": lambda value: value is True,
    "red-flag-serious-pathology": lambda value: value is True,
    "red-flag-paresis": lambda value: value in ("acute-severe", "progressive"),
}


@dataclass(frozen=True)
class TimePoint:
    label: str
    due: date | None
    done: date | None
    state: str  # done, due, overdue, upcoming, unknown (no T0 yet)


@dataclass(frozen=True)
class SbstPoint:
    when: str
    total: int | None
    distress: int | None
    risk: str | None


@dataclass(frozen=True)
class RedFlag:
    link_id: str
    text: str
    raised: bool  # False: not assessed yet (unknown), which the view shows as well


@dataclass(frozen=True)
class Episode:
    t0: date | None
    weeks_since_t0: int | None
    time_points: tuple[TimePoint, ...]
    sbst: tuple[SbstPoint, ...]
    risk: str | None
    red_flags: tuple[RedFlag, ...]  # raised ones first
    assessment_date: str | None

    @property
    def raised_red_flags(self) -> tuple[RedFlag, ...]:
        return tuple(flag for flag in self.red_flags if flag.raised)


def episode_of(
    subject: str,
    patient: Mapping[str, Any] | None,
    responses: Sequence[Mapping[str, Any]],
    assessment_questionnaire: Mapping[str, Any] | None,
    language: str,
    today: date,
) -> Episode:
    """The episode of `subject` ("Patient/1") from its QuestionnaireResponses, on `today`."""
    facts = pathway_inputs(subject, patient, responses, today)
    t0 = date.fromisoformat(facts["t0"]) if isinstance(facts.get("t0"), str) else None
    final = [r for r in responses if r.get("status") in _FINAL]
    days = (_day(r) for r in final if _canonical(r) in (SBST_QUESTIONNAIRE, ASSESSMENT_QUESTIONNAIRE))
    contacts = sorted(d for d in days if d is not None)
    sbst = tuple(_sbst_point(r) for r in sorted(final, key=lambda r: str(r.get("authored") or "")) if _canonical(r) == SBST_QUESTIONNAIRE)
    risk = facts.get("sbst-risk")
    return Episode(
        t0=t0,
        weeks_since_t0=(today - t0).days // 7 if t0 else None,
        time_points=_time_points(t0, contacts, today),
        sbst=tuple(p for p in sbst if p.total is not None or p.risk is not None),
        risk=risk if isinstance(risk, str) else None,
        red_flags=_red_flags(facts, assessment_questionnaire, language) if facts.get("lbp-assessment") != [] else _unassessed(assessment_questionnaire, language),
        assessment_date=facts["assessment-date"] if isinstance(facts.get("assessment-date"), str) else None,
    )


def _time_points(t0: date | None, contacts: Sequence[date], today: date) -> tuple[TimePoint, ...]:
    if t0 is None:
        return tuple(TimePoint(label, None, None, "unknown") for label, _, _ in _TIME_POINTS)
    points = []
    for index, (label, week, opens) in enumerate(_TIME_POINTS):
        closes = _TIME_POINTS[index + 1][2] if index + 1 < len(_TIME_POINTS) else _LAST_WINDOW_CLOSES
        start, end = t0 + timedelta(weeks=opens), t0 + timedelta(weeks=closes)
        done = next((d for d in contacts if start <= d < end), None)
        if done is not None:
            state = "done"
        elif today < start:
            state = "upcoming"
        elif today < end:
            state = "due"
        else:
            state = "overdue"
        points.append(TimePoint(label, t0 + timedelta(weeks=week), done, state))
    return tuple(points)


def _red_flags(facts: Mapping[str, Any], questionnaire: Mapping[str, Any] | None, language: str) -> tuple[RedFlag, ...]:
    flags = [
        RedFlag(link_id, _item_text(questionnaire, link_id, language), raised(facts.get(link_id)))
        for link_id, raised in _RED_FLAGS.items()
        if raised(facts.get(link_id)) or facts.get(link_id) in ([], None)
    ]
    return tuple(sorted(flags, key=lambda flag: not flag.raised))


def _unassessed(questionnaire: Mapping[str, Any] | None, language: str) -> tuple[RedFlag, ...]:
    return tuple(RedFlag(link_id, _item_text(questionnaire, link_id, language), False) for link_id in _RED_FLAGS)


def _item_text(questionnaire: Mapping[str, Any] | None, link_id: str, language: str) -> str:
    stack = list((questionnaire or {}).get("item") or [])
    while stack:
        item = stack.pop()
        if item.get("linkId") == link_id:
            return translated(item, "text", language)
        stack.extend(item.get("item") or [])
    return link_id


def _sbst_point(response: Mapping[str, Any]) -> SbstPoint:
    values: dict[str, Any] = {}
    for item in response.get("item") or []:
        answer = (item.get("answer") or [{}])[0]
        values[item.get("linkId")] = answer.get("valueInteger", (answer.get("valueCoding") or {}).get("code"))
    total, distress, risk = values.get("total-score"), values.get("distress-subscale"), values.get("risk-level")
    return SbstPoint(
        when=str(response.get("authored") or "")[:10],
        total=total if isinstance(total, int) else None,
        distress=distress if isinstance(distress, int) else None,
        risk=_RISK.get(risk) if isinstance(risk, str) else None,
    )


def _canonical(response: Mapping[str, Any]) -> str:
    return str(response.get("questionnaire") or "").split("|")[0]


def _day(response: Mapping[str, Any]) -> date | None:
    try:
        return date.fromisoformat(str(response.get("authored") or "")[:10])
    except ValueError:
        return None
