"""The pathway viewer's flowchart, generated from PlanDefinition JSON: every action in order, the
nested plan drawn in place, conditions in words, timings, targets and sources."""

from __future__ import annotations

import json
from typing import Any

from app.pages import FlowStep, plan_flowchart, readable_condition
from tests.servers import ROOT


def _content(name: str) -> dict[str, Any]:
    return dict(json.loads((ROOT / "plandefinitions" / name).read_text()))


def _definitions() -> dict[str, dict[str, Any]]:
    found = {}
    for path in (ROOT / "plandefinitions").glob("*Definition-*.json"):
        resource = json.loads(path.read_text())
        found[resource["url"]] = resource
    return found


def _walk(steps: tuple[FlowStep, ...]) -> list[FlowStep]:
    return [s for step in steps for s in (step, *_walk(step.children))]


def test_conditions_read_as_words() -> None:
    assert readable_condition("%`sbst-risk`.empty() and %age >= 18") == "sbst-risk is unknown and age ≥ 18"
    assert readable_condition("%`in-population`.not()") == "in-population is not true"


def test_every_action_of_the_plan_and_its_sub_plan_is_a_step_in_order() -> None:
    steps = _walk(plan_flowchart(_content("PlanDefinition-nl-zel.json"), _definitions(), "en"))
    ids = [s.id for s in steps]
    assert ids[:3] == ["pre-consult-sbst", "red-flags-and-triage", "acute-referral"]  # the triage sub-plan drawn in place
    assert "meekijkconsult-report" in ids and len(ids) == len(set(ids))


def test_a_step_names_what_it_proposes_where_it_goes_when_and_after_what() -> None:
    steps = {s.id: s for s in _walk(plan_flowchart(_content("PlanDefinition-nl-zel.json"), _definitions(), "nl"))}
    report = steps["meekijkconsult-report"]
    request = steps["meekijkconsult-request"]
    assert report.after == (f"after {request.title}",) and request.title == "Meekijkconsult Fysiotherapie aanvragen via ZorgDomein"
    assert request.target == "Fysiotherapeut van een aangesloten praktijk (via ZorgDomein)"
    assert request.asks_for is not None and request.asks_for.endswith("(ServiceRequest)")
    assert any("ZEL" in source for source in request.sources)


def test_timings_and_referral_targets_come_from_the_json() -> None:
    steps = _walk(plan_flowchart(_content("PlanDefinition-dk-sjaelland.json"), _definitions(), "en"))
    assert any(s.timing == "4 weeks after T0" for s in steps)
    assert any(s.timing == "2 weeks to 4 weeks after T0" for s in steps)
    assert any((s.target or "").startswith("Rygheden, Ortopædkirurgisk afdeling") for s in steps)
