"""The clinician view's episode: time points with due dates and the contacts that met them, the
STarT Back series, and red flags (raised first, unknown ones shown too)."""

from __future__ import annotations

import json
from datetime import date, timedelta

from app.pages import episode_of
from tests.factories import assessment_response, non_specific_answers, scored_sbst_response
from tests.servers import ROOT

SUBJECT = "Patient/p1"
T0 = date(2026, 3, 2)
ASSESSMENT = json.loads((ROOT / "plandefinitions" / "Questionnaire-lbp-assessment.json").read_text())


def _assessed(day: date, **changes: object) -> dict[str, object]:
    return assessment_response(SUBJECT, day.isoformat(), **non_specific_answers(T0.isoformat(), **changes))


def test_time_points_are_due_from_t0_and_done_by_the_nearest_contact() -> None:
    responses = [_assessed(T0), _assessed(T0 + timedelta(days=15))]
    episode = episode_of(SUBJECT, None, responses, ASSESSMENT, "en", T0 + timedelta(weeks=4, days=1))
    points = {p.label: p for p in episode.time_points}
    assert points["T0"].due == T0 and points["T0"].state == "done"
    assert points["T2"].due == T0 + timedelta(weeks=2) and points["T2"].done == T0 + timedelta(days=15)
    assert points["T4"].state == "due"  # week 4 and nobody seen since week 2
    assert points["T8"].state == "upcoming" and points["T8"].due == T0 + timedelta(weeks=8)
    assert episode.weeks_since_t0 == 4


def test_a_missed_time_point_is_overdue_once_its_window_closes() -> None:
    episode = episode_of(SUBJECT, None, [_assessed(T0)], ASSESSMENT, "en", T0 + timedelta(weeks=6))
    assert [p.state for p in episode.time_points] == ["done", "overdue", "overdue", "due"]


def test_without_t0_every_time_point_is_unknown_and_every_red_flag_unassessed() -> None:
    episode = episode_of(SUBJECT, None, [], ASSESSMENT, "en", T0)
    assert {p.state for p in episode.time_points} == {"unknown"}
    assert [f.raised for f in episode.red_flags] == [False, False, False]
    assert episode.raised_red_flags == ()


def test_the_sbst_series_is_in_time_order_and_the_risk_is_the_latest() -> None:
    responses = [
        scored_sbst_response(SUBJECT, 6, 4, authored="2026-03-20"),
        scored_sbst_response(SUBJECT, 2, 1, authored="2026-03-02"),
    ]
    episode = episode_of(SUBJECT, None, responses, ASSESSMENT, "en", T0)
    assert [(p.when, p.total, p.distress, p.risk) for p in episode.sbst] == [("2026-03-02", 2, 1, "low"), ("2026-03-20", 6, 4, "high")]
    assert episode.risk == "high"


def test_raised_red_flags_come_first_in_the_language_of_the_page() -> None:
    episode = episode_of(SUBJECT, None, [_assessed(T0, red_flag_paresis="progressive", red_flag_serious_pathology=None)], ASSESSMENT, "nl", T0)
    assert [(f.link_id, f.raised) for f in episode.red_flags] == [("red-flag-paresis", True), ("red-flag-serious-pathology", False)]
    assert episode.raised_red_flags[0].text.startswith("Parese van graad 3 of minder")
