"""Cards from real pathway results (the content of plandefinitions/, the pure engine): the mapping
of standards.md §4, the hooks' triggers, the imaging advice, and the invariants of every card."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.cds.cards import CardSettings, cds_cards
from app.pathway.apply import apply_plan_definition
from app.pathway.facts import pathway_input
from tests.cds_support import assert_valid_answer, load_invariants, mr_order
from tests.factories import assessment_response, non_specific_answers, scored_sbst_response
from tests.pathway_helpers import ARTIFACTS, REGIONS, region_plan

TODAY = date.today()
PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"}
HOOK_INSTANCE = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
REASONS = ({"system": "http://backpath.dev/fhir/CodeSystem/cds-override-reason", "code": "clinical-judgement", "display": "Clinical judgement"},)


def cards(
    region: str, event: str, weeks: int = 2, orders: tuple[dict[str, Any], ...] = (), language: str | None = None, sbst: bool = True, **changes: Any
) -> list[dict[str, Any]]:
    t0 = (TODAY - timedelta(weeks=weeks)).isoformat()
    resources = [assessment_response("Patient/p1", TODAY.isoformat(), **non_specific_answers(t0, **changes))]
    if sbst:
        resources.append(scored_sbst_response("Patient/p1", 6, 4, authored=t0))
    request = pathway_input(
        "Patient/p1", {"Patient/p1": PATIENT}, resources, datetime.combine(TODAY, time(9), UTC), ARTIFACTS,
        {"draft-orders": list(orders)}, event=event, language=language,
    )  # fmt: skip
    result = apply_plan_definition(region_plan(region), request)
    settings = CardSettings(HOOK_INSTANCE, language, "https://cds.example", REASONS, status_card=event == "patient-view", facts_line=event != "patient-view")
    return cds_cards(result, settings)


def topics(found: list[dict[str, Any]]) -> list[str]:
    return [str((c["source"].get("topic") or {}).get("code", "status")) for c in found]


@pytest.fixture(scope="module")
def invariants(shared_dir: Path) -> list[dict[str, Any]]:
    return load_invariants(shared_dir)


@pytest.mark.parametrize("region", REGIONS)
def test_an_early_mr_order_without_red_flags_is_a_warning_with_a_suggestion_to_remove_it(region: str, invariants: list[dict[str, Any]]) -> None:
    found = cards(region, "order-sign", weeks=2, orders=(mr_order("p1"),))
    assert topics(found) == ["imaging-not-indicated"]
    card = found[0]
    assert card["indicator"] == "warning"
    assert "not indicated" in card["summary"]
    assert f"`{region}-imaging-order-not-indicated`" in card["detail"] and "before week 4" in card["detail"]
    assert card["selectionBehavior"] == "at-most-one"
    assert card["suggestions"][0]["actions"] == [
        {"type": "delete", "description": "Remove the draft order for MR of the lumbar spine.", "resourceId": "ServiceRequest/mr-1"}
    ]
    assert card["suggestions"][0]["isRecommended"] is True
    assert card["overrideReasons"] == list(REASONS)
    assert card["links"][0]["type"] == "absolute" and card["links"][0]["url"].startswith("https://")
    assert_valid_answer({"cards": found}, invariants)


@pytest.mark.parametrize(("system", "code"), [("http://snomed.info/sct", "41333006"), ("http://loinc.org", "24968-0"), ("http://loinc.org", "30679-5")])
def test_every_lumbar_mr_code_is_recognised(system: str, code: str) -> None:
    assert topics(cards("dk-sjaelland", "order-select", orders=(mr_order("p1", code, system),))) == ["imaging-not-indicated"]


@pytest.mark.parametrize(
    ("weeks", "changes"),
    [(4, {}), (6, {"course": "no-significant-progress"}), (2, {"nerve_root": "severe"})],
    ids=["at the time point", "after it", "severe nerve-root involvement"],
)
def test_no_imaging_warning_once_the_pathway_allows_imaging(weeks: int, changes: dict[str, Any]) -> None:
    assert cards("dk-sjaelland", "order-sign", weeks=weeks, orders=(mr_order("p1"),), **changes) == []


def test_an_order_that_is_not_a_lumbar_mr_gets_no_card() -> None:
    other = {"resourceType": "MedicationRequest", "id": "m1", "status": "draft", "intent": "order", "subject": {"reference": "Patient/p1"}}
    assert cards("nl-zel", "order-select", orders=(other, mr_order("p1", "71651007"))) == []


@pytest.mark.parametrize("region", REGIONS)
def test_suspected_cauda_equina_with_an_mr_order_is_a_critical_acute_referral_and_no_warning(region: str) -> None:
    found = cards(region, "order-sign", orders=(mr_order("p1"),), red_flag_cauda_equina=True)
    assert topics(found) == ["acute-referral"]
    card = found[0]
    assert card["indicator"] == "critical"
    created = card["suggestions"][0]["actions"][0]
    assert created["type"] == "create" and created["resource"]["resourceType"] == "ServiceRequest"
    assert created["resource"]["priority"] == "stat" and created["resource"]["intent"] == "proposal"
    assert "basedOn" not in created["resource"]
    assert card["suggestions"][0]["isRecommended"] is True  # requiredBehavior must


def test_a_red_flag_comes_before_the_status_card_in_patient_view() -> None:
    found = cards("dk-syddanmark", "patient-view", red_flag_paresis="progressive")
    assert topics(found) == ["acute-referral", "status"]


def test_patient_view_shows_where_the_patient_is_and_the_due_actions_with_what_they_would_create() -> None:
    found = cards("dk-sjaelland", "patient-view", weeks=1)
    assert topics(found)[0] == "status"
    assert "(T0 " in found[0]["summary"] and "week 1" in found[0]["summary"]
    assert "**STarT Back:** high risk" in found[0]["detail"]
    assert {"reassess-t2", "reassess-t4", "reassess-t8", "self-management-advice", "imaging-not-indicated"} <= set(topics(found))
    t4 = next(c for c in found if topics([c]) == ["reassess-t4"])
    t0 = TODAY - timedelta(weeks=1)
    assert f"**Due:** {(t0 + timedelta(weeks=4)).isoformat()}" in t4["detail"]
    task = t4["suggestions"][0]["actions"][0]["resource"]
    assert task["resourceType"] == "Task" and task["restriction"]["period"]["end"] == (t0 + timedelta(weeks=4)).isoformat()
    assert t4["source"] == {
        "label": "Forløbsprogram for patienter med rygproblemer (Region Sjælland)",
        "url": "https://cds.example/PlanDefinition/dk-sjaelland",
        "topic": {"system": "http://backpath.dev/fhir/CodeSystem/lbp-action", "code": "reassess-t4", "display": "Reassessment at T4"},
    }
    info = next(c for c in found if topics([c]) == ["imaging-not-indicated"])
    assert info["indicator"] == "info" and "suggestions" not in info and "overrideReasons" not in info


def test_order_hooks_show_no_routine_actions_and_patient_view_no_order_warning() -> None:
    assert cards("nl-zel", "order-select", sbst=False) == []
    assert "imaging-not-indicated" in topics(cards("nl-zel", "patient-view", orders=(mr_order("p1"),)))
    assert all(c["indicator"] == "info" for c in cards("nl-zel", "patient-view", orders=(mr_order("p1"),)))


def test_unknown_facts_are_named_in_the_status_card() -> None:
    found = cards("nl-zel", "patient-view", sbst=False, red_flag_paresis=None)
    assert topics(found) == ["status"]
    assert "red-flag-paresis" in found[0]["detail"]


def test_texts_follow_the_language_where_translations_exist() -> None:
    danish = cards("dk-midtjylland", "order-sign", orders=(mr_order("p1"),), language="da-DK")
    assert danish[0]["summary"] == "MR af lænderyggen er ikke indiceret nu"
    assert "**Forløbsprogrammets regel:**" in danish[0]["detail"]
    assert danish[0]["suggestions"][0]["label"] == "Fjern bestillingen af MR"
    dutch = cards("nl-zel", "patient-view", language="nl")
    assert dutch[0]["summary"].startswith("Zorgpad Lage rugklachten: week 2")
    assert cards("nl-zel", "order-sign", orders=(mr_order("p1"),), language="fr")[0]["summary"] == "MR of the lumbar spine is not indicated now"


def test_uuids_are_unique_within_a_response_and_stable_for_the_same_hook_instance() -> None:
    found = cards("dk-sjaelland", "patient-view", weeks=1)
    ids = [c["uuid"] for c in found] + [s["uuid"] for c in found for s in c.get("suggestions") or []]
    assert len(ids) == len(set(ids))
    assert [c["uuid"] for c in cards("dk-sjaelland", "patient-view", weeks=1)] == [c["uuid"] for c in found]


def test_an_open_request_for_the_same_definition_replaces_the_create_suggestion() -> None:
    t0 = (TODAY - timedelta(weeks=1)).isoformat()
    request = pathway_input(
        "Patient/p1", {"Patient/p1": PATIENT}, [assessment_response("Patient/p1", TODAY.isoformat(), **non_specific_answers(t0))],
        datetime.combine(TODAY, time(9), UTC), ARTIFACTS, event="patient-view",
    )  # fmt: skip
    result = apply_plan_definition(region_plan("dk-sjaelland"), request)
    existing = {"resourceType": "Task", "id": "t4-task", "status": "requested", "intent": "order",
                "instantiatesCanonical": "http://backpath.dev/fhir/ActivityDefinition/reassess-t4",
                "code": {"coding": [{"system": "http://backpath.dev/fhir/CodeSystem/lbp-action", "code": "reassess-t4", "display": "Reassessment at T4"}]}}  # fmt: skip
    found = cds_cards(result, CardSettings(HOOK_INSTANCE, open_requests=(existing,), status_card=True))
    t4 = next(c for c in found if topics([c]) == ["reassess-t4"])
    assert "suggestions" not in t4 and "**Already requested:** Task/t4-task (requested)" in t4["detail"]
    assert "Reassessment at T4: Task/t4-task (requested)" in found[0]["detail"]
    t8 = next(c for c in found if topics([c]) == ["reassess-t8"])
    assert t8["suggestions"]


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("event", ["patient-view", "order-select", "order-sign"])
def test_every_card_of_every_region_keeps_the_spec_rules(region: str, event: str, invariants: list[dict[str, Any]]) -> None:
    for weeks, changes in ((0, {}), (5, {"course": "worse", "nerve_root": "mild", "sick_leave": "expected-over-8-weeks"}), (9, {"course": "worse"})):
        found = cards(region, event, weeks=weeks, orders=(mr_order("p1"),), **changes)
        assert_valid_answer({"cards": found}, invariants)
        assert [c["indicator"] for c in found] == sorted((c["indicator"] for c in found), key=["critical", "warning", "info"].index)
